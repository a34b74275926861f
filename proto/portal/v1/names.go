package portalv1

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

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

// spec.healthCheck values and defaults.
const (
	HealthCheckTCP   = "TCP"
	HealthCheckHTTP  = "HTTP"
	HealthCheckHTTPS = "HTTPS"
	HealthCheckGRPC  = "GRPC"
	HealthCheckUDP   = "UDP"
	HealthCheckNone  = "NONE"

	AllUnhealthyFailOpen = "FailOpen"
	AllUnhealthyRefuse   = "Refuse"

	DefaultHealthIntervalMillis = 2000
	DefaultHealthTimeoutMillis  = 1000
	DefaultHealthyThreshold     = 2
	DefaultUnhealthyThreshold   = 3
	DefaultExpectedCodes        = "200-399"
)

// ParseExpectedCodes checks an HTTP expected-codes list such as "200-399"
// or "200,204,301-302".
func ParseExpectedCodes(s string) error {
	if strings.TrimSpace(s) == "" {
		return errors.New("must list status codes, such as 200-399")
	}
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(part), "-")
		a, err := strconv.Atoi(lo)
		if err != nil || a < 100 || a > 599 {
			return fmt.Errorf("%q is not a status code (100-599)", part)
		}
		if isRange {
			if b, err := strconv.Atoi(hi); err != nil || b < a || b > 599 {
				return fmt.Errorf("%q is not a range of status codes", part)
			}
		}
	}
	return nil
}

// CodeAccepted reports whether code is in an expected-codes list.
func CodeAccepted(list string, code int) bool {
	for _, part := range strings.Split(list, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(part), "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			continue
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil {
				continue
			}
		}
		if code >= a && code <= b {
			return true
		}
	}
	return false
}

// Schedulers are the balancing algorithms spec.scheduler accepts (IPVS's
// names; the userspace proxy implements rr and lc).
var Schedulers = []string{"rr", "wrr", "lc", "wlc", "sh", "dh", "mh", "sed", "nq"}

// NeedsNodePorts reports whether a service type allocates node ports.
func NeedsNodePorts(t string) bool { return t == ServiceTypeNodePort || t == ServiceTypeLoadBalancer }
