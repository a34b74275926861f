package test

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	portalv1 "github.com/portal-lb/portal/proto/portal/v1"
	"github.com/portal-lb/portal/test/harness"
)

// Env is a running portal node with a dataplane, its API, and the addresses
// a behaviour case may use. Every dataplane suite provides one.
type Env interface {
	// API is the node's gRPC API.
	API() portalv1.LoadBalancerServiceClient
	// Programmed waits until the dataplane serves revision rv.
	Programmed(t *testing.T, rv uint64)
	// Backend starts a backend reachable from the dataplane.
	Backend(t *testing.T, name string) *harness.Backend
	// Client returns the i-th client source address (0, 1, ... distinct).
	Client(i int) netip.Addr
	// NodeAddr is where NodePorts are served.
	NodeAddr() netip.Addr
	// ExternalIP is an address usable as a service's externalIPs entry.
	ExternalIP() netip.Addr
	// Ask and AskUDP send traffic from client i.
	Ask(t *testing.T, client int, addr netip.AddrPort) (harness.Reply, error)
	AskUDP(t *testing.T, client int, addr netip.AddrPort) (harness.Reply, error)
}

// behaviourCase is one row of the table every dataplane runs. Skip, when
// set, names why the case does not apply to a dataplane.
type behaviourCase struct {
	name string
	run  func(t *testing.T, e Env)
	skip map[string]string // dataplane -> reason
}

// applyService writes svc and waits until it is programmed.
func applyService(t *testing.T, e Env, svc *portalv1.Service) *portalv1.Service {
	t.Helper()
	r, err := e.API().ApplyService(context.Background(), &portalv1.ApplyServiceRequest{Service: svc})
	if err != nil {
		t.Fatal(err)
	}
	e.Programmed(t, r.GetService().GetMetadata().GetResourceVersion())
	return r.GetService()
}

func putEndpoints(t *testing.T, e Env, name string, subsets ...*portalv1.EndpointSubset) uint64 {
	t.Helper()
	r, err := e.API().PutEndpoints(context.Background(), &portalv1.PutEndpointsRequest{Endpoints: &portalv1.Endpoints{
		Metadata: &portalv1.ObjectMeta{Name: name}, Subsets: subsets,
	}})
	if err != nil {
		t.Fatal(err)
	}
	rv := r.GetEndpoints().GetMetadata().GetResourceVersion()
	e.Programmed(t, rv)
	return rv
}

func subset(port int32, portName string, bs ...*harness.Backend) *portalv1.EndpointSubset {
	ss := &portalv1.EndpointSubset{Ports: []*portalv1.EndpointPort{{Name: portName, Port: port}}}
	for _, b := range bs {
		ss.Addresses = append(ss.Addresses, &portalv1.EndpointAddress{Ip: b.Addr.Addr().String()})
	}
	return ss
}

// backendsSubsets gives each backend (with its own port) its own subset.
func backendsSubsets(portName string, bs ...*harness.Backend) []*portalv1.EndpointSubset {
	var out []*portalv1.EndpointSubset
	for _, b := range bs {
		out = append(out, subset(int32(b.Addr.Port()), portName, b))
	}
	return out
}

func service(name, typ string, ports ...*portalv1.ServicePort) *portalv1.Service {
	return &portalv1.Service{Metadata: &portalv1.ObjectMeta{Name: name}, Spec: &portalv1.ServiceSpec{Type: typ, Ports: ports}}
}

func tcpPort(name string, port int32) *portalv1.ServicePort {
	return &portalv1.ServicePort{Name: name, Port: port, Protocol: "TCP"}
}

func clusterAddr(s *portalv1.Service, i int) netip.AddrPort {
	return netip.AddrPortFrom(netip.MustParseAddr(s.GetSpec().GetClusterIp()), uint16(s.GetSpec().GetPorts()[i].GetPort()))
}

func lbAddr(s *portalv1.Service, i int) netip.AddrPort {
	return netip.AddrPortFrom(netip.MustParseAddr(s.GetStatus().GetLoadBalancer().GetIngress()[0].GetIp()), uint16(s.GetSpec().GetPorts()[i].GetPort()))
}

// spread asks n times from client 0 and counts the answering backends.
func spread(t *testing.T, e Env, addr netip.AddrPort, n int) map[string]int {
	t.Helper()
	out := map[string]int{}
	for i := 0; i < n; i++ {
		r, err := e.Ask(t, 0, addr)
		if err != nil {
			t.Fatalf("ask %s: %v", addr, err)
		}
		out[r.Backend]++
	}
	return out
}

func wantAll(t *testing.T, got map[string]int, names ...string) {
	t.Helper()
	for _, n := range names {
		if got[n] == 0 {
			t.Fatalf("backend %s never answered: %v", n, got)
		}
	}
	if len(got) != len(names) {
		t.Fatalf("unexpected backends answered: %v, want %v", got, names)
	}
}

// refusedFast asserts a connection fails quickly (a refusal or reset, not
// a hang until timeout).
func refusedFast(t *testing.T, e Env, client int, addr netip.AddrPort) {
	t.Helper()
	start := time.Now()
	r, err := e.Ask(t, client, addr)
	if err == nil {
		t.Fatalf("%s answered (%v); want a refusal", addr, r)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("%s: failure took %v (%v); want an immediate refusal", addr, d, err)
	}
}

var behaviourCases = []behaviourCase{
	{name: "ClusterIP reaches every endpoint", run: func(t *testing.T, e Env) {
		a, b, c := e.Backend(t, "a"), e.Backend(t, "b"), e.Backend(t, "c")
		s := applyService(t, e, service("cip", "ClusterIP", tcpPort("http", 8081)))
		putEndpoints(t, e, "cip", backendsSubsets("http", a, b, c)...)
		wantAll(t, spread(t, e, clusterAddr(s, 0), 30), "a", "b", "c")
	}},
	{name: "multi-port service with named target ports", run: func(t *testing.T, e Env) {
		web, admin := e.Backend(t, "web"), e.Backend(t, "admin")
		s := applyService(t, e, service("multi", "ClusterIP",
			&portalv1.ServicePort{Name: "http", Port: 8082, TargetPort: "web-port"},
			&portalv1.ServicePort{Name: "admin", Port: 8083, TargetPort: "admin-port"}))
		// One subset per address; the endpoint ports are named like the
		// service ports, whose targetPorts are names.
		putEndpoints(t, e, "multi", subset(int32(web.Addr.Port()), "http", web), subset(int32(admin.Addr.Port()), "admin", admin))
		wantAll(t, spread(t, e, clusterAddr(s, 0), 3), "web")
		wantAll(t, spread(t, e, clusterAddr(s, 1), 3), "admin")
	}},
	{name: "NodePort on the node address", run: func(t *testing.T, e Env) {
		a := e.Backend(t, "a")
		s := applyService(t, e, service("np", "NodePort", tcpPort("http", 8084)))
		putEndpoints(t, e, "np", backendsSubsets("http", a)...)
		wantAll(t, spread(t, e, netip.AddrPortFrom(e.NodeAddr(), uint16(s.GetSpec().GetPorts()[0].GetNodePort())), 3), "a")
	}},
	{name: "LoadBalancer ingress IP", run: func(t *testing.T, e Env) {
		a, b := e.Backend(t, "a"), e.Backend(t, "b")
		s := applyService(t, e, service("lb", "LoadBalancer", tcpPort("http", 8085)))
		putEndpoints(t, e, "lb", backendsSubsets("http", a, b)...)
		wantAll(t, spread(t, e, lbAddr(s, 0), 10), "a", "b")
	}},
	{name: "external IP", run: func(t *testing.T, e Env) {
		a := e.Backend(t, "a")
		svc := service("extip", "ClusterIP", tcpPort("http", 8086))
		svc.Spec.ExternalIps = []string{e.ExternalIP().String()}
		applyService(t, e, svc)
		putEndpoints(t, e, "extip", backendsSubsets("http", a)...)
		wantAll(t, spread(t, e, netip.AddrPortFrom(e.ExternalIP(), 8086), 3), "a")
	}},
	{name: "same port number on TCP and UDP", run: func(t *testing.T, e Env) {
		a := e.Backend(t, "a")
		s := applyService(t, e, service("dns", "ClusterIP",
			&portalv1.ServicePort{Name: "tcp", Port: 8087, Protocol: "TCP"},
			&portalv1.ServicePort{Name: "udp", Port: 8087, Protocol: "UDP"}))
		p := int32(a.Addr.Port())
		putEndpoints(t, e, "dns", &portalv1.EndpointSubset{
			Addresses: []*portalv1.EndpointAddress{{Ip: a.Addr.Addr().String()}},
			Ports:     []*portalv1.EndpointPort{{Name: "tcp", Port: p, Protocol: "TCP"}, {Name: "udp", Port: p, Protocol: "UDP"}},
		})
		wantAll(t, spread(t, e, clusterAddr(s, 0), 2), "a")
		r, err := e.AskUDP(t, 0, clusterAddr(s, 1))
		if err != nil || r.Backend != "a" {
			t.Fatalf("UDP: %v %v", r, err)
		}
	}},
	{name: "session affinity sticks and expires", run: func(t *testing.T, e Env) {
		a, b := e.Backend(t, "a"), e.Backend(t, "b")
		svc := service("sticky", "ClusterIP", tcpPort("http", 8088))
		svc.Spec.SessionAffinity = "ClientIP"
		svc.Spec.SessionAffinityConfig = &portalv1.SessionAffinityConfig{ClientIp: &portalv1.ClientIPConfig{TimeoutSeconds: 1}}
		s := applyService(t, e, svc)
		putEndpoints(t, e, "sticky", backendsSubsets("http", a, b)...)
		got := spread(t, e, clusterAddr(s, 0), 10)
		if len(got) != 1 {
			t.Fatalf("affinity did not stick: %v", got)
		}
		seen := map[string]bool{}
		for k := range got {
			seen[k] = true
		}
		for i := 0; i < 8 && len(seen) < 2; i++ {
			time.Sleep(1100 * time.Millisecond)
			r, err := e.Ask(t, 0, clusterAddr(s, 0))
			if err != nil {
				t.Fatal(err)
			}
			seen[r.Backend] = true
		}
		if len(seen) != 2 {
			t.Fatal("affinity never expired")
		}
	}},
	{name: "no endpoints is refused at once, then works", run: func(t *testing.T, e Env) {
		s := applyService(t, e, service("empty", "ClusterIP", tcpPort("http", 8089)))
		refusedFast(t, e, 0, clusterAddr(s, 0))
		a := e.Backend(t, "a")
		putEndpoints(t, e, "empty", backendsSubsets("http", a)...)
		wantAll(t, spread(t, e, clusterAddr(s, 0), 2), "a")
	}},
	{name: "source ranges filter the LoadBalancer IP only", run: func(t *testing.T, e Env) {
		a := e.Backend(t, "a")
		svc := service("fw", "LoadBalancer", tcpPort("http", 8090))
		svc.Spec.LoadBalancerSourceRanges = []string{netip.PrefixFrom(e.Client(1), e.Client(1).BitLen()).String()}
		s := applyService(t, e, svc)
		putEndpoints(t, e, "fw", backendsSubsets("http", a)...)
		if r, err := e.Ask(t, 1, lbAddr(s, 0)); err != nil || r.Backend != "a" {
			t.Fatalf("in-range client: %v %v", r, err)
		}
		before := a.Conns.Load()
		if r, err := e.Ask(t, 2, lbAddr(s, 0)); err == nil {
			t.Fatalf("out-of-range client answered by %v", r)
		}
		if a.Conns.Load() != before {
			t.Fatal("an out-of-range connection reached the backend")
		}
		np := netip.AddrPortFrom(e.NodeAddr(), uint16(s.GetSpec().GetPorts()[0].GetNodePort()))
		for _, addr := range []netip.AddrPort{clusterAddr(s, 0), np} {
			if r, err := e.Ask(t, 2, addr); err != nil || r.Backend != "a" {
				t.Fatalf("%s filtered for an out-of-range client: %v %v", addr, r, err)
			}
		}
	}},
	{name: "endpoint removal stops new connections to it", run: func(t *testing.T, e Env) {
		a, b := e.Backend(t, "a"), e.Backend(t, "b")
		s := applyService(t, e, service("shrink", "ClusterIP", tcpPort("http", 8091)))
		putEndpoints(t, e, "shrink", backendsSubsets("http", a, b)...)
		wantAll(t, spread(t, e, clusterAddr(s, 0), 10), "a", "b")
		putEndpoints(t, e, "shrink", backendsSubsets("http", b)...)
		wantAll(t, spread(t, e, clusterAddr(s, 0), 10), "b")
	}},
	{name: "service deletion stops traffic", run: func(t *testing.T, e Env) {
		a := e.Backend(t, "a")
		s := applyService(t, e, service("bye", "ClusterIP", tcpPort("http", 8092)))
		putEndpoints(t, e, "bye", backendsSubsets("http", a)...)
		wantAll(t, spread(t, e, clusterAddr(s, 0), 2), "a")
		r, err := e.API().DeleteService(context.Background(), &portalv1.DeleteServiceRequest{Name: "bye"})
		if err != nil {
			t.Fatal(err)
		}
		e.Programmed(t, r.GetService().GetMetadata().GetResourceVersion())
		if r, err := e.Ask(t, 0, clusterAddr(s, 0)); err == nil {
			t.Fatalf("deleted service answered: %v", r)
		}
	}},
	{name: "a dead backend is skipped without client errors", skip: map[string]string{
		"iptables": "kernel NAT cannot retry a connection on another backend; health checks remove dead backends",
	}, run: func(t *testing.T, e Env) {
		a, dead := e.Backend(t, "a"), e.Backend(t, "dead")
		s := applyService(t, e, service("flaky", "ClusterIP", tcpPort("http", 8093)))
		putEndpoints(t, e, "flaky", backendsSubsets("http", a, dead)...)
		dead.Close()
		wantAll(t, spread(t, e, clusterAddr(s, 0), 20), "a")
	}},
	{name: "endpoint change applies to new connections within 100ms of the write", run: func(t *testing.T, e Env) {
		a, b := e.Backend(t, "a"), e.Backend(t, "b")
		s := applyService(t, e, service("fast", "ClusterIP", tcpPort("http", 8094)))
		putEndpoints(t, e, "fast", backendsSubsets("http", a)...)
		start := time.Now()
		if _, err := e.API().PutEndpoints(context.Background(), &portalv1.PutEndpointsRequest{Endpoints: &portalv1.Endpoints{
			Metadata: &portalv1.ObjectMeta{Name: "fast"}, Subsets: backendsSubsets("http", b)}}); err != nil {
			t.Fatal(err)
		}
		for {
			r, err := e.Ask(t, 0, clusterAddr(s, 0))
			if err == nil && r.Backend == "b" {
				break
			}
			if time.Since(start) > 100*time.Millisecond {
				t.Fatalf("still %v %v %v after the write", r, err, time.Since(start))
			}
		}
	}},
}

// runBehaviour runs the table against one dataplane.
func runBehaviour(t *testing.T, dataplane string, newEnv func(t *testing.T) Env) {
	for _, c := range behaviourCases {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			if reason, ok := c.skip[dataplane]; ok {
				t.Skipf("does not apply to %s: %s", dataplane, reason)
			}
			c.run(t, newEnv(t))
		})
	}
}

// askFrom dials from a given source address (any loopback address works).
func askFrom(client netip.Addr, addr netip.AddrPort) (harness.Reply, error) {
	return harness.Ask(addr.String(), client, 2*time.Second)
}
