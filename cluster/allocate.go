package cluster

import (
	"fmt"
	"net/netip"

	"google.golang.org/grpc/codes"

	portalv1 "github.com/portal-lb/portal/proto/portal/v1"
)

// allocation is the outcome of allocate: the values it took and the cursors
// to store. Nothing in the state changes until commit.
type allocation struct {
	key     string
	old     holdings
	cursors struct{ clusterIP, lbIP, nodePort uint64 }
}

// allocate fills in svc's ClusterIP, node ports, health check node port and
// LoadBalancer ingress, honouring requested values and keeping old's
// allocations where svc leaves them empty. svc is modified in place (it is
// the FSM's private copy); the state is not.
func (s *state) allocate(key string, svc, old *portalv1.Service) (*allocation, error) {
	name := svc.GetMetadata().GetName()
	invalid := func(code codes.Code, field, reason string) error {
		return fieldError(code, "Service", name, field, reason)
	}
	if s.config.GetServiceCidr() == "" {
		return nil, invalid(codes.FailedPrecondition, "spec", "the cluster has no allocation configuration yet")
	}
	a := &allocation{key: key, old: holdingsOf(old)}
	a.cursors.clusterIP, a.cursors.lbIP, a.cursors.nodePort = s.cursors.ClusterIp, s.cursors.LbIp, s.cursors.NodePort
	spec := svc.GetSpec()
	oldSpec := old.GetSpec()
	// other reports whether a value's owner is another service.
	other := func(owner string, ok bool) bool { return ok && owner != key }

	// ClusterIP.
	oldHasIP := old != nil && oldSpec.GetType() != portalv1.ServiceTypeExternalName
	switch {
	case spec.GetType() == portalv1.ServiceTypeExternalName:
		if spec.GetClusterIp() != "" {
			return nil, invalid(codes.InvalidArgument, "spec.clusterIP", "must be empty for type ExternalName")
		}
	case oldHasIP:
		if spec.GetClusterIp() == "" {
			spec.ClusterIp = oldSpec.GetClusterIp()
		} else if spec.GetClusterIp() != oldSpec.GetClusterIp() {
			return nil, invalid(codes.InvalidArgument, "spec.clusterIP",
				fmt.Sprintf("field is immutable (is %q)", oldSpec.GetClusterIp()))
		}
	case spec.GetClusterIp() == portalv1.ClusterIPNone:
	case spec.GetClusterIp() == "":
		off, ok := scan(s.svcPool.lo, s.svcPool.hi, a.cursors.clusterIP, func(off uint64) bool {
			_, held := s.clusterIPs[s.svcPool.addr(off)]
			return !held
		})
		if !ok {
			return nil, invalid(codes.ResourceExhausted, "spec.clusterIP",
				fmt.Sprintf("no free address in the service CIDR %s (%d of %d used)", s.svcPool, counted(s.svcPool, s.clusterIPs), s.svcPool.size()))
		}
		a.cursors.clusterIP = off
		spec.ClusterIp = s.svcPool.addr(off).String()
	default:
		ip, err := netip.ParseAddr(spec.GetClusterIp())
		if err != nil {
			return nil, invalid(codes.InvalidArgument, "spec.clusterIP", "must be a valid IP address or \"None\"")
		}
		if _, ok := s.svcPool.offset(ip); !ok {
			return nil, invalid(codes.InvalidArgument, "spec.clusterIP",
				fmt.Sprintf("%s is not in the valid range (service CIDR %s)", ip, s.svcPool))
		}
		if owner, ok := s.clusterIPs[ip]; other(owner, ok) {
			return nil, invalid(codes.AlreadyExists, "spec.clusterIP",
				fmt.Sprintf("provided IP %s is already allocated to service %s", ip, owner))
		}
		spec.ClusterIp = ip.String()
	}

	// Node ports: requested ones are checked, missing ones are kept from the
	// old version of the same port (by port and protocol, then by name) or
	// allocated.
	min, max := s.config.GetNodePortMin(), s.config.GetNodePortMax()
	pending := map[int32]bool{}
	checkPort := func(field string, p int32) error {
		if p < min || p > max {
			return invalid(codes.InvalidArgument, field,
				fmt.Sprintf("provided port %d is not in the valid range %s", p, rangeText(min, max)))
		}
		if owner, ok := s.nodePorts[p]; other(owner, ok) {
			return invalid(codes.AlreadyExists, field,
				fmt.Sprintf("provided port %d is already allocated to service %s", p, owner))
		}
		return nil
	}
	newPort := func(field string) (int32, error) {
		off, ok := scan(uint64(min), uint64(max), a.cursors.nodePort, func(off uint64) bool {
			_, held := s.nodePorts[int32(off)]
			return !held && !pending[int32(off)]
		})
		if !ok {
			return 0, invalid(codes.ResourceExhausted, field,
				fmt.Sprintf("no free port in the node port range %s", rangeText(min, max)))
		}
		a.cursors.nodePort = off
		return int32(off), nil
	}
	keptPort := func(p *portalv1.ServicePort) int32 {
		if old == nil || !portalv1.NeedsNodePorts(oldSpec.GetType()) {
			return 0
		}
		for _, op := range oldSpec.GetPorts() {
			if op.GetPort() == p.GetPort() && op.GetProtocol() == p.GetProtocol() {
				return op.GetNodePort()
			}
		}
		for _, op := range oldSpec.GetPorts() {
			if op.GetName() != "" && op.GetName() == p.GetName() {
				return op.GetNodePort()
			}
		}
		return 0
	}
	wantsNodePorts := portalv1.NeedsNodePorts(spec.GetType())
	// Requested ports first, so that an allocated one never collides with a
	// port requested later in the same spec.
	for i, p := range spec.GetPorts() {
		field := fmt.Sprintf("spec.ports[%d].nodePort", i)
		if p.GetNodePort() == 0 {
			continue
		}
		if !wantsNodePorts {
			return nil, invalid(codes.InvalidArgument, field, "may not be set when type is "+spec.GetType())
		}
		if err := checkPort(field, p.GetNodePort()); err != nil {
			return nil, err
		}
		pending[p.GetNodePort()] = true
	}
	if wantsNodePorts {
		for _, p := range spec.GetPorts() {
			if p.GetNodePort() == 0 {
				if kept := keptPort(p); kept != 0 && !pending[kept] {
					p.NodePort = kept
					pending[kept] = true
				}
			}
		}
		for i, p := range spec.GetPorts() {
			if p.GetNodePort() == 0 {
				np, err := newPort(fmt.Sprintf("spec.ports[%d].nodePort", i))
				if err != nil {
					return nil, err
				}
				p.NodePort = np
				pending[np] = true
			}
		}
	}

	// Health check node port: LoadBalancer with externalTrafficPolicy Local.
	const hcField = "spec.healthCheckNodePort"
	needsHC := spec.GetType() == portalv1.ServiceTypeLoadBalancer && spec.GetExternalTrafficPolicy() == portalv1.TrafficPolicyLocal
	switch {
	case !needsHC && spec.GetHealthCheckNodePort() != 0:
		return nil, invalid(codes.InvalidArgument, hcField, "may only be set when type is LoadBalancer and externalTrafficPolicy is Local")
	case needsHC && spec.GetHealthCheckNodePort() != 0:
		if pending[spec.GetHealthCheckNodePort()] {
			return nil, invalid(codes.InvalidArgument, hcField, "must differ from every spec.ports[].nodePort")
		}
		if err := checkPort(hcField, spec.GetHealthCheckNodePort()); err != nil {
			return nil, err
		}
	case needsHC:
		if kept := oldSpec.GetHealthCheckNodePort(); kept != 0 && !pending[kept] {
			spec.HealthCheckNodePort = kept
		} else {
			np, err := newPort(hcField)
			if err != nil {
				return nil, err
			}
			spec.HealthCheckNodePort = np
		}
	}

	// LoadBalancer ingress address.
	if spec.GetType() != portalv1.ServiceTypeLoadBalancer {
		if spec.GetLoadBalancerIp() != "" {
			return nil, invalid(codes.InvalidArgument, "spec.loadBalancerIP", "may only be set when type is LoadBalancer")
		}
		if svc.Status != nil {
			svc.Status.LoadBalancer = nil
		}
		return a, nil
	}
	var lbIP netip.Addr
	if req := spec.GetLoadBalancerIp(); req != "" {
		ip, err := netip.ParseAddr(req)
		if err != nil {
			return nil, invalid(codes.InvalidArgument, "spec.loadBalancerIP", "must be a valid IP address")
		}
		if _, ok := s.lbPool.offset(ip); !ok {
			return nil, invalid(codes.InvalidArgument, "spec.loadBalancerIP",
				fmt.Sprintf("%s is not in the valid range (LoadBalancer pool %s)", ip, s.lbPool))
		}
		if owner, ok := s.lbIPs[ip]; other(owner, ok) {
			return nil, invalid(codes.AlreadyExists, "spec.loadBalancerIP",
				fmt.Sprintf("provided IP %s is already allocated to service %s", ip, owner))
		}
		lbIP = ip
	} else if len(a.old.lbIPs) > 0 && oldSpec.GetLoadBalancerIp() == "" {
		lbIP = a.old.lbIPs[0]
	} else {
		off, ok := scan(s.lbPool.lo, s.lbPool.hi, a.cursors.lbIP, func(off uint64) bool {
			_, held := s.lbIPs[s.lbPool.addr(off)]
			return !held
		})
		if !ok {
			return nil, invalid(codes.ResourceExhausted, "spec.loadBalancerIP",
				fmt.Sprintf("no free address in the LoadBalancer pool %s (%d of %d used)", s.lbPool, counted(s.lbPool, s.lbIPs), s.lbPool.size()))
		}
		a.cursors.lbIP = off
		lbIP = s.lbPool.addr(off)
	}
	if svc.Status == nil {
		svc.Status = &portalv1.ServiceStatus{}
	}
	svc.Status.LoadBalancer = &portalv1.LoadBalancerStatus{Ingress: []*portalv1.LoadBalancerIngress{{Ip: lbIP.String()}}}
	return a, nil
}

// commit records svc's holdings (replacing old's) and the new cursors.
func (s *state) commit(a *allocation, svc *portalv1.Service) {
	s.release(a.key, a.old)
	s.hold(a.key, holdingsOf(svc))
	s.cursors.ClusterIp, s.cursors.LbIp, s.cursors.NodePort = a.cursors.clusterIP, a.cursors.lbIP, a.cursors.nodePort
}
