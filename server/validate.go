package server

import (
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"

	portalv1 "github.com/portal-lb/portal/proto/portal/v1"
)

// Violation names one bad field and why, as google.rpc.BadRequest does.
type Violation struct {
	Field  string
	Reason string
}

type violations []Violation

func (v *violations) add(field, format string, args ...any) {
	*v = append(*v, Violation{Field: field, Reason: fmt.Sprintf(format, args...)})
}

var (
	dns1035Label = regexp.MustCompile(`^[a-z]([-a-z0-9]*[a-z0-9])?$`)
	dns1123Label = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	// ianaSvcName: lowercase alphanumerics and '-', at least one letter,
	// no leading, trailing or doubled '-' (Kubernetes' IsValidPortName).
	ianaSvcName    = regexp.MustCompile(`^[a-z0-9]([a-z0-9]|-[a-z0-9])*$`)
	labelNameRe    = regexp.MustCompile(`^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$`)
	labelValueRe   = regexp.MustCompile(`^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$`)
	dns1123SubRe   = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	protocols      = []string{portalv1.ProtocolTCP, portalv1.ProtocolUDP, portalv1.ProtocolSCTP}
	serviceTypes   = []string{portalv1.ServiceTypeClusterIP, portalv1.ServiceTypeNodePort, portalv1.ServiceTypeLoadBalancer, portalv1.ServiceTypeExternalName}
	affinities     = []string{portalv1.SessionAffinityNone, portalv1.SessionAffinityClientIP}
	trafficPolices = []string{portalv1.TrafficPolicyCluster, portalv1.TrafficPolicyLocal}
)

func quoted(vals []string) string {
	q := make([]string, len(vals))
	for i, v := range vals {
		q[i] = strconv.Quote(v)
	}
	return strings.Join(q, ", ")
}

func checkDNS1035(v *violations, field, s string) {
	switch {
	case s == "":
		v.add(field, "required")
	case len(s) > 63:
		v.add(field, "must be no more than 63 characters")
	case !dns1035Label.MatchString(s):
		v.add(field, "%q is not a DNS-1035 label: lower case letters, digits and '-', starting with a letter and ending with a letter or digit", s)
	}
}

func checkDNS1123Label(v *violations, field, s string) {
	switch {
	case len(s) > 63:
		v.add(field, "must be no more than 63 characters")
	case !dns1123Label.MatchString(s):
		v.add(field, "%q is not a DNS-1123 label: lower case letters, digits and '-', starting and ending with a letter or digit", s)
	}
}

func checkDNS1123Subdomain(v *violations, field, s string) {
	switch {
	case len(s) > 253:
		v.add(field, "must be no more than 253 characters")
	case !dns1123SubRe.MatchString(s):
		v.add(field, "%q is not an RFC 1123 hostname: dot-separated labels of lower case letters, digits and '-'", s)
	}
}

// checkLabels validates Kubernetes label keys (optional DNS prefix + name)
// and values.
func checkLabels(v *violations, field string, m map[string]string) {
	for _, k := range sortedMapKeys(m) {
		f := field + "[" + k + "]"
		name := k
		if i := strings.LastIndex(k, "/"); i >= 0 {
			prefix := k[:i]
			name = k[i+1:]
			if prefix == "" || len(prefix) > 253 || !dns1123SubRe.MatchString(prefix) {
				v.add(f, "key prefix %q must be a DNS subdomain", prefix)
			}
		}
		if name == "" || len(name) > 63 || !labelNameRe.MatchString(name) {
			v.add(f, "key name %q must be 1-63 alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric", name)
		}
		if val := m[k]; len(val) > 63 || !labelValueRe.MatchString(val) {
			v.add(f, "value %q must be at most 63 alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric", val)
		}
	}
}

func sortedMapKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func checkMeta(v *violations, m *portalv1.ObjectMeta) {
	if m == nil {
		v.add("metadata", "required")
		return
	}
	checkDNS1035(v, "metadata.name", m.GetName())
	checkDNS1123Label(v, "metadata.namespace", m.GetNamespace())
	checkLabels(v, "metadata.labels", m.GetLabels())
}

// checkIP parses a unicast address that may carry traffic.
func checkIP(v *violations, field, s string) (netip.Addr, bool) {
	ip, err := netip.ParseAddr(s)
	switch {
	case err != nil:
		v.add(field, "%q must be a valid IP address", s)
	case ip.Zone() != "":
		v.add(field, "%q may not carry a zone", s)
	case ip.IsUnspecified():
		v.add(field, "%q may not be unspecified (0.0.0.0 or ::)", s)
	case ip.Unmap().IsLinkLocalUnicast():
		v.add(field, "%q may not be in the link-local range (169.254.0.0/16, fe80::/10)", s)
	case ip.Unmap().IsLinkLocalMulticast():
		v.add(field, "%q may not be in the link-local multicast range (224.0.0.0/24, ff02::/16)", s)
	case ip.IsMulticast():
		v.add(field, "%q may not be a multicast address", s)
	default:
		return ip, true
	}
	return netip.Addr{}, false
}

// DefaultService fills in Kubernetes' defaults. It never fails; Validate
// reports what is wrong afterwards.
func DefaultService(svc *portalv1.Service) {
	if svc.Metadata == nil {
		svc.Metadata = &portalv1.ObjectMeta{}
	}
	if svc.Metadata.Namespace == "" {
		svc.Metadata.Namespace = portalv1.DefaultNamespace
	}
	if svc.Spec == nil {
		svc.Spec = &portalv1.ServiceSpec{}
	}
	s := svc.Spec
	if s.Type == "" {
		s.Type = portalv1.ServiceTypeClusterIP
	}
	for _, p := range s.Ports {
		if p == nil {
			continue
		}
		if p.Protocol == "" {
			p.Protocol = portalv1.ProtocolTCP
		}
		if p.TargetPort == "" || p.TargetPort == "0" {
			p.TargetPort = strconv.Itoa(int(p.Port))
		}
	}
	if s.SessionAffinity == "" {
		s.SessionAffinity = portalv1.SessionAffinityNone
	}
	if s.SessionAffinity == portalv1.SessionAffinityClientIP {
		if s.SessionAffinityConfig == nil {
			s.SessionAffinityConfig = &portalv1.SessionAffinityConfig{}
		}
		if s.SessionAffinityConfig.ClientIp == nil {
			s.SessionAffinityConfig.ClientIp = &portalv1.ClientIPConfig{}
		}
		if s.SessionAffinityConfig.ClientIp.TimeoutSeconds == 0 {
			s.SessionAffinityConfig.ClientIp.TimeoutSeconds = portalv1.DefaultClientIPTimeoutSeconds
		}
	}
	if s.ExternalTrafficPolicy == "" && portalv1.NeedsNodePorts(s.Type) {
		s.ExternalTrafficPolicy = portalv1.TrafficPolicyCluster
	}
	if hc := s.HealthCheck; hc != nil {
		if hc.Type == "" {
			hc.Type = portalv1.HealthCheckTCP
		}
		if hc.IntervalMillis == 0 {
			hc.IntervalMillis = portalv1.DefaultHealthIntervalMillis
		}
		if hc.TimeoutMillis == 0 {
			hc.TimeoutMillis = portalv1.DefaultHealthTimeoutMillis
		}
		if hc.HealthyThreshold == 0 {
			hc.HealthyThreshold = portalv1.DefaultHealthyThreshold
		}
		if hc.UnhealthyThreshold == 0 {
			hc.UnhealthyThreshold = portalv1.DefaultUnhealthyThreshold
		}
		if hc.AllUnhealthy == "" {
			hc.AllUnhealthy = portalv1.AllUnhealthyFailOpen
		}
		if hc.Type == portalv1.HealthCheckHTTP || hc.Type == portalv1.HealthCheckHTTPS {
			if hc.Path == "" {
				hc.Path = "/"
			}
			if hc.ExpectedCodes == "" {
				hc.ExpectedCodes = portalv1.DefaultExpectedCodes
			}
		}
	}
	// The server owns status.
	svc.Status = nil
}

var healthCheckTypes = []string{portalv1.HealthCheckTCP, portalv1.HealthCheckHTTP, portalv1.HealthCheckHTTPS,
	portalv1.HealthCheckGRPC, portalv1.HealthCheckUDP, portalv1.HealthCheckNone}

// checkHealthCheck validates a defaulted spec.healthCheck.
func checkHealthCheck(v *violations, typ string, hc *portalv1.HealthCheck) {
	const f = "spec.healthCheck"
	if hc == nil {
		return
	}
	if typ == portalv1.ServiceTypeExternalName {
		v.add(f, "may not be set when type is ExternalName")
		return
	}
	t := hc.GetType()
	if !slices.Contains(healthCheckTypes, t) {
		v.add(f+".type", "unsupported value %q: supported values: %s", t, quoted(healthCheckTypes))
	}
	http := t == portalv1.HealthCheckHTTP || t == portalv1.HealthCheckHTTPS
	if p := hc.GetPort(); p < 0 || p > 65535 {
		v.add(f+".port", "%d must be between 1 and 65535, or 0 for the endpoint's target port", p)
	}
	switch {
	case !http && (hc.GetPath() != "" || hc.GetHost() != "" || hc.GetExpectedCodes() != ""):
		v.add(f, "path, host and expectedCodes apply to HTTP and HTTPS checks only")
	case http:
		if !strings.HasPrefix(hc.GetPath(), "/") {
			v.add(f+".path", "%q must start with /", hc.GetPath())
		}
		if h := hc.GetHost(); h != "" {
			if _, err := netip.ParseAddr(h); err != nil {
				checkDNS1123Subdomain(v, f+".host", strings.ToLower(h))
			}
		}
		if err := portalv1.ParseExpectedCodes(hc.GetExpectedCodes()); err != nil {
			v.add(f+".expectedCodes", "%v", err)
		}
	}
	if hc.GetService() != "" && t != portalv1.HealthCheckGRPC {
		v.add(f+".service", "applies to GRPC checks only")
	}
	if (hc.GetSend() != "" || hc.GetExpect() != "") && t != portalv1.HealthCheckUDP {
		v.add(f, "send and expect apply to UDP checks only")
	}
	if i := hc.GetIntervalMillis(); i < 100 || i > 3600000 {
		v.add(f+".intervalMillis", "%d must be between 100 and 3600000", i)
	}
	if to := hc.GetTimeoutMillis(); to < 10 || to > hc.GetIntervalMillis() {
		v.add(f+".timeoutMillis", "%d must be at least 10 and at most intervalMillis (%d)", to, hc.GetIntervalMillis())
	}
	if n := hc.GetHealthyThreshold(); n < 1 || n > 100 {
		v.add(f+".healthyThreshold", "%d must be between 1 and 100", n)
	}
	if n := hc.GetUnhealthyThreshold(); n < 1 || n > 100 {
		v.add(f+".unhealthyThreshold", "%d must be between 1 and 100", n)
	}
	if a := hc.GetAllUnhealthy(); a != portalv1.AllUnhealthyFailOpen && a != portalv1.AllUnhealthyRefuse {
		v.add(f+".allUnhealthy", "unsupported value %q: supported values: \"FailOpen\", \"Refuse\"", a)
	}
}

// ValidateService checks a defaulted service; it never panics.
func ValidateService(svc *portalv1.Service) []Violation {
	var v violations
	checkMeta(&v, svc.GetMetadata())
	s := svc.GetSpec()
	typ := s.GetType()
	if !slices.Contains(serviceTypes, typ) {
		v.add("spec.type", "unsupported value %q: supported values: %s", typ, quoted(serviceTypes))
	}
	external := typ == portalv1.ServiceTypeExternalName
	headless := s.GetClusterIp() == portalv1.ClusterIPNone

	// Ports.
	if len(s.GetPorts()) == 0 && !external && !headless {
		v.add("spec.ports", "required (at least one port)")
	}
	names := map[string]int{}
	portProto := map[string]int{}
	nodePortProto := map[string]int{}
	for i, p := range s.GetPorts() {
		f := fmt.Sprintf("spec.ports[%d]", i)
		if p == nil {
			v.add(f, "required")
			continue
		}
		if len(s.GetPorts()) > 1 && p.GetName() == "" {
			v.add(f+".name", "required when the service has more than one port")
		}
		if p.GetName() != "" {
			checkDNS1123Label(&v, f+".name", p.GetName())
			if j, dup := names[p.GetName()]; dup {
				v.add(f+".name", "duplicate value %q (also spec.ports[%d].name)", p.GetName(), j)
			}
			names[p.GetName()] = i
		}
		if !slices.Contains(protocols, p.GetProtocol()) {
			v.add(f+".protocol", "unsupported value %q: supported values: %s", p.GetProtocol(), quoted(protocols))
		}
		if p.GetPort() < 1 || p.GetPort() > 65535 {
			v.add(f+".port", "%d must be between 1 and 65535, inclusive", p.GetPort())
		} else {
			k := fmt.Sprintf("%d/%s", p.GetPort(), p.GetProtocol())
			if j, dup := portProto[k]; dup {
				v.add(f, "duplicate port and protocol %s (also spec.ports[%d])", k, j)
			}
			portProto[k] = i
		}
		checkTargetPort(&v, f+".targetPort", p.GetTargetPort())
		switch np := p.GetNodePort(); {
		case np == 0:
		case !portalv1.NeedsNodePorts(typ):
			v.add(f+".nodePort", "may not be used when type is %q", typ)
		case np < 1 || np > 65535:
			v.add(f+".nodePort", "%d must be between 1 and 65535, inclusive", np)
		default:
			k := fmt.Sprintf("%d/%s", np, p.GetProtocol())
			if j, dup := nodePortProto[k]; dup {
				v.add(f+".nodePort", "duplicate node port and protocol %s (also spec.ports[%d])", k, j)
			}
			nodePortProto[k] = i
		}
	}

	checkLabels(&v, "spec.selector", s.GetSelector())

	// ClusterIP.
	switch ip := s.GetClusterIp(); {
	case external && ip != "":
		v.add("spec.clusterIP", "must be empty for type ExternalName")
	case ip == "", headless && typ == portalv1.ServiceTypeClusterIP:
	case headless:
		v.add("spec.clusterIP", "may be \"None\" only when type is ClusterIP")
	default:
		checkIP(&v, "spec.clusterIP", ip)
	}

	for i, ip := range s.GetExternalIps() {
		checkIP(&v, fmt.Sprintf("spec.externalIPs[%d]", i), ip)
	}

	// Session affinity.
	if !slices.Contains(affinities, s.GetSessionAffinity()) {
		v.add("spec.sessionAffinity", "unsupported value %q: supported values: %s", s.GetSessionAffinity(), quoted(affinities))
	}
	if s.GetSessionAffinity() == portalv1.SessionAffinityClientIP {
		if t := s.GetSessionAffinityConfig().GetClientIp().GetTimeoutSeconds(); t < 1 || t > portalv1.MaxClientIPTimeoutSeconds {
			v.add("spec.sessionAffinityConfig.clientIP.timeoutSeconds", "%d must be between 1 and %d, inclusive", t, portalv1.MaxClientIPTimeoutSeconds)
		}
	} else if s.GetSessionAffinityConfig() != nil {
		v.add("spec.sessionAffinityConfig", "may only be set when sessionAffinity is ClientIP")
	}

	// LoadBalancer fields.
	lb := typ == portalv1.ServiceTypeLoadBalancer
	if s.GetLoadBalancerIp() != "" {
		if !lb {
			v.add("spec.loadBalancerIP", "may only be set when type is LoadBalancer")
		} else {
			checkIP(&v, "spec.loadBalancerIP", s.GetLoadBalancerIp())
		}
	}
	for i, r := range s.GetLoadBalancerSourceRanges() {
		f := fmt.Sprintf("spec.loadBalancerSourceRanges[%d]", i)
		if !lb {
			v.add(f, "may only be set when type is LoadBalancer")
			continue
		}
		if _, err := netip.ParsePrefix(strings.TrimSpace(r)); err != nil {
			v.add(f, "%q must be a CIDR such as 203.0.113.0/24 or 2001:db8::/32", r)
		}
	}

	// ExternalName.
	switch {
	case external && s.GetExternalName() == "":
		v.add("spec.externalName", "required for type ExternalName")
	case external:
		checkDNS1123Subdomain(&v, "spec.externalName", strings.TrimSuffix(s.GetExternalName(), "."))
	case s.GetExternalName() != "":
		v.add("spec.externalName", "may only be set when type is ExternalName")
	}

	// External traffic policy and its health check port.
	switch etp := s.GetExternalTrafficPolicy(); {
	case etp == "":
	case !portalv1.NeedsNodePorts(typ):
		v.add("spec.externalTrafficPolicy", "may only be set when type is NodePort or LoadBalancer")
	case !slices.Contains(trafficPolices, etp):
		v.add("spec.externalTrafficPolicy", "unsupported value %q: supported values: %s", etp, quoted(trafficPolices))
	}
	if hc := s.GetHealthCheckNodePort(); hc != 0 {
		if !lb || s.GetExternalTrafficPolicy() != portalv1.TrafficPolicyLocal {
			v.add("spec.healthCheckNodePort", "may only be set when type is LoadBalancer and externalTrafficPolicy is Local")
		} else if hc < 1 || hc > 65535 {
			v.add("spec.healthCheckNodePort", "%d must be between 1 and 65535, inclusive", hc)
		}
	}

	checkHealthCheck(&v, typ, s.GetHealthCheck())

	if sch := s.GetScheduler(); sch != "" && !slices.Contains(portalv1.Schedulers, sch) {
		v.add("spec.scheduler", "unsupported value %q: supported values: %s", sch, quoted(portalv1.Schedulers))
	}
	return v
}

// checkTargetPort accepts a port number (1-65535) or an IANA service name.
func checkTargetPort(v *violations, field, tp string) {
	if n, err := strconv.Atoi(tp); err == nil {
		if n < 1 || n > 65535 {
			v.add(field, "%d must be between 1 and 65535, inclusive", n)
		}
		return
	}
	if tp == "" || len(tp) > 15 || !ianaSvcName.MatchString(tp) || !strings.ContainsAny(tp, "abcdefghijklmnopqrstuvwxyz") {
		v.add(field, "%q must be a port number or a port name (at most 15 lower case letters, digits and '-', with at least one letter)", tp)
	}
}

// DefaultEndpoints fills in Kubernetes' defaults.
func DefaultEndpoints(ep *portalv1.Endpoints) {
	if ep.Metadata == nil {
		ep.Metadata = &portalv1.ObjectMeta{}
	}
	if ep.Metadata.Namespace == "" {
		ep.Metadata.Namespace = portalv1.DefaultNamespace
	}
	for _, ss := range ep.Subsets {
		for _, p := range ss.GetPorts() {
			if p != nil && p.Protocol == "" {
				p.Protocol = portalv1.ProtocolTCP
			}
		}
	}
}

// ValidateEndpoints checks defaulted endpoints. Loopback addresses and port
// names against the service are checked by the store, which knows both.
func ValidateEndpoints(ep *portalv1.Endpoints) []Violation {
	var v violations
	checkMeta(&v, ep.GetMetadata())
	for i, ss := range ep.GetSubsets() {
		f := fmt.Sprintf("subsets[%d]", i)
		if ss == nil {
			v.add(f, "required")
			continue
		}
		if len(ss.GetAddresses())+len(ss.GetNotReadyAddresses()) == 0 {
			v.add(f+".addresses", "required (at least one address or notReadyAddress)")
		}
		for _, l := range []struct {
			name string
			list []*portalv1.EndpointAddress
		}{{"addresses", ss.GetAddresses()}, {"notReadyAddresses", ss.GetNotReadyAddresses()}} {
			for j, a := range l.list {
				af := fmt.Sprintf("%s.%s[%d]", f, l.name, j)
				if a == nil {
					v.add(af, "required")
					continue
				}
				checkIP(&v, af+".ip", a.GetIp())
				if a.GetHostname() != "" {
					checkDNS1123Label(&v, af+".hostname", a.GetHostname())
				}
				if a.GetNodeName() != "" {
					checkDNS1123Subdomain(&v, af+".nodeName", a.GetNodeName())
				}
			}
		}
		if len(ss.GetPorts()) == 0 {
			v.add(f+".ports", "required (at least one port)")
		}
		names := map[string]int{}
		for j, p := range ss.GetPorts() {
			pf := fmt.Sprintf("%s.ports[%d]", f, j)
			if p == nil {
				v.add(pf, "required")
				continue
			}
			if len(ss.GetPorts()) > 1 && p.GetName() == "" {
				v.add(pf+".name", "required when the subset has more than one port")
			}
			if p.GetName() != "" {
				checkDNS1123Label(&v, pf+".name", p.GetName())
				if k, dup := names[p.GetName()]; dup {
					v.add(pf+".name", "duplicate value %q (also %s.ports[%d].name)", p.GetName(), f, k)
				}
				names[p.GetName()] = j
			}
			if p.GetPort() < 1 || p.GetPort() > 65535 {
				v.add(pf+".port", "%d must be between 1 and 65535, inclusive", p.GetPort())
			}
			if !slices.Contains(protocols, p.GetProtocol()) {
				v.add(pf+".protocol", "unsupported value %q: supported values: %s", p.GetProtocol(), quoted(protocols))
			}
		}
	}
	return v
}

// validateRef checks a namespace/name pair of a Get or Delete request.
func validateRef(ns, name string) []Violation {
	var v violations
	checkDNS1035(&v, "name", name)
	if ns != "" {
		checkDNS1123Label(&v, "namespace", ns)
	}
	return v
}
