package portalv1

// String values of the API, as Kubernetes writes them. Hand-written: the
// fields are strings (not enums) so that JSON matches Kubernetes manifests.
const (
	ServiceTypeClusterIP    = "ClusterIP"
	ServiceTypeNodePort     = "NodePort"
	ServiceTypeLoadBalancer = "LoadBalancer"
	ServiceTypeExternalName = "ExternalName"

	ClusterIPNone = "None"

	ProtocolTCP  = "TCP"
	ProtocolUDP  = "UDP"
	ProtocolSCTP = "SCTP"

	SessionAffinityNone     = "None"
	SessionAffinityClientIP = "ClientIP"

	// DefaultClientIPTimeoutSeconds is Kubernetes' default affinity timeout.
	DefaultClientIPTimeoutSeconds = 10800
	// MaxClientIPTimeoutSeconds is Kubernetes' maximum affinity timeout.
	MaxClientIPTimeoutSeconds = 86400

	TrafficPolicyCluster = "Cluster"
	TrafficPolicyLocal   = "Local"

	DefaultNamespace = "default"

	EventAdded    = "ADDED"
	EventModified = "MODIFIED"
	EventDeleted  = "DELETED"
	EventBookmark = "BOOKMARK"

	ResultCreated    = "created"
	ResultConfigured = "configured"
	ResultUnchanged  = "unchanged"
)

// Schedulers are the balancing algorithms spec.scheduler accepts (IPVS's
// names; the userspace proxy implements rr and lc).
var Schedulers = []string{"rr", "wrr", "lc", "wlc", "sh", "dh", "mh", "sed", "nq"}

// NeedsNodePorts reports whether a service type allocates node ports.
func NeedsNodePorts(t string) bool { return t == ServiceTypeNodePort || t == ServiceTypeLoadBalancer }
