package dataplane

import (
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/portal-lb/portal/dataplane/healthcheck"
	portalv1 "github.com/portal-lb/portal/proto/portal/v1"
)

// Node describes the node a Desired state is built for.
type Node struct {
	// Name matches endpoints' nodeName (externalTrafficPolicy Local).
	Name string
	// Addresses serve NodePorts.
	Addresses []netip.Addr
}

// Health tells an endpoint's state under a check (healthcheck.Prober).
type Health interface {
	State(addr netip.AddrPort, check healthcheck.Check) string
}

// Build computes the virtual servers this node must serve: for every port of
// every service with a virtual IP, one per ClusterIP, external IP,
// LoadBalancer ingress IP and node address (NodePort), each with the ready
// backends its port resolves to. When two services claim one frontend, the
// first by namespace/name keeps it.
func Build(services []*portalv1.Service, endpoints map[string]*portalv1.Endpoints, node Node, revision uint64) *Desired {
	return BuildWithHealth(services, endpoints, node, revision, nil)
}

// BuildWithHealth is Build leaving out endpoints that health reports
// Unhealthy under their service's check. When every endpoint of a port is
// unhealthy, allUnhealthy FailOpen keeps them all and Refuse none.
func BuildWithHealth(services []*portalv1.Service, endpoints map[string]*portalv1.Endpoints, node Node, revision uint64, health Health) *Desired {
	svcs := slices.Clone(services)
	slices.SortFunc(svcs, func(a, b *portalv1.Service) int { return strings.Compare(key(a.GetMetadata()), key(b.GetMetadata())) })
	d := &Desired{Revision: revision}
	seen := map[string]bool{}
	add := func(v *VirtualServer) {
		if !v.Frontend.Addr().IsValid() || seen[v.Key()] {
			return
		}
		seen[v.Key()] = true
		d.Servers = append(d.Servers, v)
	}
	for _, svc := range svcs {
		spec := svc.GetSpec()
		if spec.GetType() == portalv1.ServiceTypeExternalName {
			continue
		}
		k := key(svc.GetMetadata())
		ep := endpoints[k]
		var affinity time.Duration
		if spec.GetSessionAffinity() == portalv1.SessionAffinityClientIP {
			affinity = time.Duration(spec.GetSessionAffinityConfig().GetClientIp().GetTimeoutSeconds()) * time.Second
			if affinity <= 0 {
				affinity = portalv1.DefaultClientIPTimeoutSeconds * time.Second
			}
		}
		local := spec.GetExternalTrafficPolicy() == portalv1.TrafficPolicyLocal
		var ranges []netip.Prefix
		for _, r := range spec.GetLoadBalancerSourceRanges() {
			if p, err := netip.ParsePrefix(strings.TrimSpace(r)); err == nil {
				ranges = append(ranges, p.Masked())
			}
		}
		check, checked := healthcheck.CheckOf(spec.GetHealthCheck())
		for _, sp := range spec.GetPorts() {
			all := resolve(ep, sp, len(spec.GetPorts()) == 1, spec.GetPublishNotReadyAddresses())
			if checked && health != nil {
				all = healthy(all, check, spec.GetHealthCheck(), health)
			}
			external := all
			if local {
				external = localBackends(all, node.Name)
			}
			vs := func(kind string, ip netip.Addr, port int32) *VirtualServer {
				v := &VirtualServer{
					Service: k, Port: sp.GetName(), Kind: kind, Protocol: sp.GetProtocol(),
					Frontend: netip.AddrPortFrom(ip.Unmap(), uint16(port)), Scheduler: spec.GetScheduler(),
					Affinity: affinity, Backends: all,
				}
				if kind != KindClusterIP {
					v.Local, v.Backends = local, external
					if local {
						v.HealthCheckNodePort = uint16(spec.GetHealthCheckNodePort())
					}
				}
				if kind == KindLoadBalancer {
					v.SourceRanges = ranges
				}
				return v
			}
			if ip, err := netip.ParseAddr(spec.GetClusterIp()); err == nil {
				add(vs(KindClusterIP, ip, sp.GetPort()))
			}
			for _, s := range spec.GetExternalIps() {
				if ip, err := netip.ParseAddr(s); err == nil {
					add(vs(KindExternalIP, ip, sp.GetPort()))
				}
			}
			if spec.GetType() == portalv1.ServiceTypeLoadBalancer {
				for _, in := range svc.GetStatus().GetLoadBalancer().GetIngress() {
					if ip, err := netip.ParseAddr(in.GetIp()); err == nil {
						add(vs(KindLoadBalancer, ip, sp.GetPort()))
					}
				}
			}
			if sp.GetNodePort() != 0 && portalv1.NeedsNodePorts(spec.GetType()) {
				for _, ip := range node.Addresses {
					add(vs(KindNodePort, ip, sp.GetNodePort()))
				}
			}
		}
	}
	slices.SortFunc(d.Servers, func(a, b *VirtualServer) int { return strings.Compare(a.Key(), b.Key()) })
	return d
}

func key(m *portalv1.ObjectMeta) string { return m.GetNamespace() + "/" + m.GetName() }

// probeAddr is where a backend is probed: the check's port, or its own.
func probeAddr(b Backend, hc *portalv1.HealthCheck) netip.AddrPort {
	if p := hc.GetPort(); p > 0 {
		return netip.AddrPortFrom(b.Addr.Addr(), uint16(p))
	}
	return b.Addr
}

func healthy(all []Backend, check healthcheck.Check, hc *portalv1.HealthCheck, health Health) []Backend {
	var out []Backend
	for _, b := range all {
		if health.State(probeAddr(b, hc), check) != healthcheck.Unhealthy {
			out = append(out, b)
		}
	}
	if len(out) == 0 && len(all) > 0 && hc.GetAllUnhealthy() != healthcheck.Refuse {
		return all // FailOpen
	}
	return out
}

// ProbeTargets lists what this node must probe: every ready endpoint of
// every service with a health check, at its probe address.
func ProbeTargets(services []*portalv1.Service, endpoints map[string]*portalv1.Endpoints) []healthcheck.Target {
	var out []healthcheck.Target
	for _, svc := range services {
		check, ok := healthcheck.CheckOf(svc.GetSpec().GetHealthCheck())
		if !ok || svc.GetSpec().GetType() == portalv1.ServiceTypeExternalName {
			continue
		}
		k := key(svc.GetMetadata())
		for _, sp := range svc.GetSpec().GetPorts() {
			for _, b := range resolve(endpoints[k], sp, len(svc.GetSpec().GetPorts()) == 1, svc.GetSpec().GetPublishNotReadyAddresses()) {
				out = append(out, healthcheck.Target{Addr: probeAddr(b, svc.GetSpec().GetHealthCheck()), Check: check, Service: k})
			}
		}
	}
	return out
}

// resolve returns the backends of service port sp: in each subset, the
// endpoint port of the same protocol named like the service port (or like
// its named targetPort); for a single-port service, a subset's only port of
// that protocol also matches.
func resolve(ep *portalv1.Endpoints, sp *portalv1.ServicePort, singlePort, notReady bool) []Backend {
	var out []Backend
	for _, ss := range ep.GetSubsets() {
		port := int32(0)
		var candidates []*portalv1.EndpointPort
		for _, p := range ss.GetPorts() {
			if p.GetProtocol() == sp.GetProtocol() {
				candidates = append(candidates, p)
			}
		}
		for _, p := range candidates {
			if p.GetName() == sp.GetName() || p.GetName() == sp.GetTargetPort() {
				port = p.GetPort()
				break
			}
		}
		if port == 0 && singlePort && len(candidates) == 1 {
			port = candidates[0].GetPort()
		}
		if port == 0 {
			continue
		}
		addrs := ss.GetAddresses()
		if notReady {
			addrs = append(slices.Clone(addrs), ss.GetNotReadyAddresses()...)
		}
		for _, a := range addrs {
			ip, err := netip.ParseAddr(a.GetIp())
			if err != nil {
				continue
			}
			out = append(out, Backend{Addr: netip.AddrPortFrom(ip.Unmap(), uint16(port)), NodeName: a.GetNodeName()})
		}
	}
	slices.SortFunc(out, func(a, b Backend) int { return a.Addr.Compare(b.Addr) })
	return slices.CompactFunc(out, func(a, b Backend) bool { return a.Addr == b.Addr })
}

// localBackends applies externalTrafficPolicy Local: when some backends name
// a node, only those on this node serve external traffic.
func localBackends(all []Backend, node string) []Backend {
	named := false
	for _, b := range all {
		if b.NodeName != "" {
			named = true
			break
		}
	}
	if !named {
		return all
	}
	var out []Backend
	for _, b := range all {
		if b.NodeName == node {
			out = append(out, b)
		}
	}
	return out
}
