package cluster

import (
	"fmt"
	"net/netip"
	"sort"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	raftv1 "github.com/portal-lb/portal/proto/portal/raft/v1"
	portalv1 "github.com/portal-lb/portal/proto/portal/v1"
)

// state is the in-memory replicated state. Stored objects are immutable:
// a write replaces the pointer, so readers and watch events may share them.
type state struct {
	revision  uint64
	config    *portalv1.ClusterConfig
	services  map[string]*portalv1.Service
	endpoints map[string]*portalv1.Endpoints
	nodes     map[string]*portalv1.Node // node records by id
	cursors   raftv1.Cursors

	// Derived from services (rebuilt on restore): who holds what.
	svcPool, lbPool ipPool
	clusterIPs      map[netip.Addr]string
	lbIPs           map[netip.Addr]string
	nodePorts       map[int32]string
}

func newState() *state {
	return &state{
		config:     &portalv1.ClusterConfig{},
		services:   map[string]*portalv1.Service{},
		endpoints:  map[string]*portalv1.Endpoints{},
		nodes:      map[string]*portalv1.Node{},
		clusterIPs: map[netip.Addr]string{},
		lbIPs:      map[netip.Addr]string{},
		nodePorts:  map[int32]string{},
	}
}

func objKey(ns, name string) string { return ns + "/" + name }

func metaKey(m *portalv1.ObjectMeta) string { return objKey(m.GetNamespace(), m.GetName()) }

// setConfig validates and installs the allocation configuration.
func (s *state) setConfig(c *portalv1.ClusterConfig) error {
	svcPool, err := newIPPool(c.GetServiceCidr())
	if err != nil {
		return fieldError(codes.InvalidArgument, "ClusterConfig", "", "serviceCIDR", err.Error())
	}
	lbPool, err := newIPPool(c.GetLbPool())
	if err != nil {
		return fieldError(codes.InvalidArgument, "ClusterConfig", "", "lbPool", err.Error())
	}
	if c.GetNodePortMin() < 1 || c.GetNodePortMax() > 65535 || c.GetNodePortMin() > c.GetNodePortMax() {
		return fieldError(codes.InvalidArgument, "ClusterConfig", "", "nodePortRange",
			fmt.Sprintf("invalid range %d-%d", c.GetNodePortMin(), c.GetNodePortMax()))
	}
	s.config = proto.Clone(c).(*portalv1.ClusterConfig)
	s.svcPool, s.lbPool = svcPool, lbPool
	return nil
}

// holdings lists what a service holds in the allocators.
type holdings struct {
	clusterIP netip.Addr
	lbIPs     []netip.Addr
	nodePorts []int32
}

func holdingsOf(svc *portalv1.Service) holdings {
	var h holdings
	if svc == nil {
		return h
	}
	if a, err := netip.ParseAddr(svc.GetSpec().GetClusterIp()); err == nil {
		h.clusterIP = a
	}
	if svc.GetSpec().GetType() == portalv1.ServiceTypeLoadBalancer {
		for _, in := range svc.GetStatus().GetLoadBalancer().GetIngress() {
			if a, err := netip.ParseAddr(in.GetIp()); err == nil {
				h.lbIPs = append(h.lbIPs, a)
			}
		}
	}
	for _, p := range svc.GetSpec().GetPorts() {
		if p.GetNodePort() != 0 {
			h.nodePorts = append(h.nodePorts, p.GetNodePort())
		}
	}
	if hc := svc.GetSpec().GetHealthCheckNodePort(); hc != 0 {
		h.nodePorts = append(h.nodePorts, hc)
	}
	return h
}

func (s *state) hold(key string, h holdings) {
	if h.clusterIP.IsValid() {
		s.clusterIPs[h.clusterIP] = key
	}
	for _, a := range h.lbIPs {
		s.lbIPs[a] = key
	}
	for _, p := range h.nodePorts {
		s.nodePorts[p] = key
	}
}

func (s *state) release(key string, h holdings) {
	if h.clusterIP.IsValid() && s.clusterIPs[h.clusterIP] == key {
		delete(s.clusterIPs, h.clusterIP)
	}
	for _, a := range h.lbIPs {
		if s.lbIPs[a] == key {
			delete(s.lbIPs, a)
		}
	}
	for _, p := range h.nodePorts {
		if s.nodePorts[p] == key {
			delete(s.nodePorts, p)
		}
	}
}

// rebuild recomputes the derived holdings from the services.
func (s *state) rebuild() {
	s.clusterIPs = map[netip.Addr]string{}
	s.lbIPs = map[netip.Addr]string{}
	s.nodePorts = map[int32]string{}
	for k, svc := range s.services {
		s.hold(k, holdingsOf(svc))
	}
}

// counted returns how many addresses of pool are held in m.
func counted(pool ipPool, m map[netip.Addr]string) uint64 {
	var n uint64
	for a := range m {
		if _, ok := pool.offset(a); ok {
			n++
		}
	}
	return n
}

// toProto serialises the state (the snapshot format), sorted for stable bytes.
func (s *state) toProto() *raftv1.State {
	out := &raftv1.State{
		Revision: s.revision,
		Config:   s.config,
		Cursors:  &raftv1.Cursors{ClusterIp: s.cursors.ClusterIp, LbIp: s.cursors.LbIp, NodePort: s.cursors.NodePort},
	}
	for _, k := range sortedKeys(s.services) {
		out.Services = append(out.Services, s.services[k])
	}
	for _, k := range sortedKeys(s.endpoints) {
		out.Endpoints = append(out.Endpoints, s.endpoints[k])
	}
	for _, k := range sortedKeys(s.nodes) {
		out.Nodes = append(out.Nodes, s.nodes[k])
	}
	return out
}

func stateFromProto(p *raftv1.State) (*state, error) {
	s := newState()
	s.revision = p.GetRevision()
	if p.GetConfig().GetServiceCidr() != "" {
		if err := s.setConfig(p.GetConfig()); err != nil {
			return nil, err
		}
	}
	s.cursors.ClusterIp = p.GetCursors().GetClusterIp()
	s.cursors.LbIp = p.GetCursors().GetLbIp()
	s.cursors.NodePort = p.GetCursors().GetNodePort()
	for _, svc := range p.GetServices() {
		s.services[metaKey(svc.GetMetadata())] = svc
	}
	for _, ep := range p.GetEndpoints() {
		s.endpoints[metaKey(ep.GetMetadata())] = ep
	}
	for _, n := range p.GetNodes() {
		s.nodes[n.GetId()] = n
	}
	s.rebuild()
	return s, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
