package test

import (
	"bufio"
	"context"
	"fmt"
	"net"
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

// topologyEnv is an Env on a network topology, with a gateway to act on.
type topologyEnv interface {
	Env
	AskFromBackend(t *testing.T, b *harness.Backend, addr netip.AddrPort) (harness.Reply, error)
	Gateway(args ...string) (string, error)
	Restart(t *testing.T)
	Dataplane() string
	ClientHost() *harness.Host
	Portald() (*harness.Portald, string)
}

func needTopology(t *testing.T, e Env) topologyEnv {
	t.Helper()
	te, ok := e.(topologyEnv)
	if !ok {
		t.Skip("needs the network-namespace topology (the loopback run has no separate hosts); the netns run covers it")
	}
	return te
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
	{name: "a UDP client moves off a removed endpoint", run: func(t *testing.T, e Env) {
		te := needTopology(t, e)
		a, b := e.Backend(t, "a"), e.Backend(t, "b")
		s := applyService(t, e, service("udp", "ClusterIP", &portalv1.ServicePort{Name: "dns", Port: 8053, Protocol: "UDP"}))
		udpSubset := func(be *harness.Backend) *portalv1.EndpointSubset {
			return &portalv1.EndpointSubset{Addresses: []*portalv1.EndpointAddress{{Ip: be.Addr.Addr().String()}},
				Ports: []*portalv1.EndpointPort{{Name: "dns", Port: int32(be.Addr.Port()), Protocol: "UDP"}}}
		}
		putEndpoints(t, e, "udp", udpSubset(a))
		// One client socket: the same 5-tuple (one conntrack entry) throughout.
		var conn net.Conn
		if err := te.ClientHost().Do(func() (err error) { conn, err = net.Dial("udp", clusterAddr(s, 0).String()); return err }); err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ask := func() string {
			buf := make([]byte, 512)
			fmt.Fprint(conn, "ping")
			_ = conn.SetReadDeadline(time.Now().Add(time.Second))
			n, err := conn.Read(buf)
			if err != nil {
				return err.Error()
			}
			return strings.Fields(string(buf[:n]))[0]
		}
		if got := ask(); got != "a" {
			t.Fatalf("first datagram: %s", got)
		}
		// a stays up (it would still answer): only the endpoint is removed.
		putEndpoints(t, e, "udp", udpSubset(b))
		if got := ask(); got != "b" {
			t.Fatalf("after removing a, the same client socket reached %q", got)
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

var topologyCases = []behaviourCase{
	{name: "hairpin: a backend reaches itself through its service", run: func(t *testing.T, e Env) {
		te := needTopology(t, e)
		a := e.Backend(t, "a")
		s := applyService(t, e, service("hairpin", "ClusterIP", tcpPort("http", 8095)))
		putEndpoints(t, e, "hairpin", backendsSubsets("http", a)...)
		r, err := te.AskFromBackend(t, a, clusterAddr(s, 0))
		if err != nil || r.Backend != "a" {
			t.Fatalf("hairpin: %v %v", r, err)
		}
		if host, _, _ := strings.Cut(r.Client, ":"); host == a.Addr.Addr().String() {
			t.Fatalf("hairpin traffic was not masqueraded (backend saw itself, %s)", r.Client)
		}
	}},
	{name: "client address is replaced with Cluster and preserved with Local", skip: map[string]string{
		"userspace": "a proxy opens its own connection to the backend: the backend always sees the gateway",
	}, run: func(t *testing.T, e Env) {
		needTopology(t, e)
		a := e.Backend(t, "a")
		for _, policy := range []string{"Cluster", "Local"} {
			name := "src-" + strings.ToLower(policy)
			svc := service(name, "LoadBalancer", tcpPort("http", 8096))
			svc.Spec.ExternalTrafficPolicy = policy
			s := applyService(t, e, svc)
			putEndpoints(t, e, name, backendsSubsets("http", a)...)
			np := netip.AddrPortFrom(e.NodeAddr(), uint16(s.GetSpec().GetPorts()[0].GetNodePort()))
			for _, addr := range []netip.AddrPort{lbAddr(s, 0), np} {
				r, err := e.Ask(t, 0, addr)
				if err != nil {
					t.Fatalf("%s %s: %v", policy, addr, err)
				}
				host, _, _ := strings.Cut(r.Client, ":")
				if preserved := host == e.Client(0).String(); preserved != (policy == "Local") {
					t.Fatalf("%s via %s: backend saw %s (client %s)", policy, addr, host, e.Client(0))
				}
			}
		}
	}},
	{name: "externalTrafficPolicy Local uses this node's endpoints for external traffic", run: func(t *testing.T, e Env) {
		needTopology(t, e)
		here, there := e.Backend(t, "here"), e.Backend(t, "there")
		svc := service("local", "LoadBalancer", tcpPort("http", 8097))
		svc.Spec.ExternalTrafficPolicy = "Local"
		s := applyService(t, e, svc)
		putEndpoints(t, e, "local", &portalv1.EndpointSubset{
			Addresses: []*portalv1.EndpointAddress{{Ip: here.Addr.Addr().String(), NodeName: "gw-1"}, {Ip: there.Addr.Addr().String(), NodeName: "gw-2"}},
			Ports:     []*portalv1.EndpointPort{{Name: "http", Port: 8080}},
		})
		wantAll(t, spread(t, e, lbAddr(s, 0), 10), "here")
		wantAll(t, spread(t, e, clusterAddr(s, 0), 20), "here", "there")
	}},
	{name: "an external iptables -t nat -F is repaired within the resync period", skip: map[string]string{
		"userspace": "the userspace dataplane writes no iptables rules",
	}, run: func(t *testing.T, e Env) {
		te := needTopology(t, e)
		a := e.Backend(t, "a")
		s := applyService(t, e, service("repair", "ClusterIP", tcpPort("http", 8098)))
		putEndpoints(t, e, "repair", backendsSubsets("http", a)...)
		wantAll(t, spread(t, e, clusterAddr(s, 0), 2), "a")
		if out, err := te.Gateway("iptables", "-t", "nat", "-F"); err != nil {
			t.Fatalf("flush: %v %s", err, out)
		}
		if _, err := e.Ask(t, 0, clusterAddr(s, 0)); err == nil {
			t.Fatal("traffic still flows right after the flush: the test proves nothing")
		}
		// The env's resync period is 2s.
		harness.Eventually(t, 4*time.Second, "rules repaired", func() error {
			_, err := e.Ask(t, 0, clusterAddr(s, 0))
			return err
		})
	}},
	{name: "a portald restart keeps an established TCP connection", skip: map[string]string{
		"userspace": "the userspace proxy is the process: its connections end with it",
	}, run: func(t *testing.T, e Env) {
		te := needTopology(t, e)
		a := e.Backend(t, "a")
		s := applyService(t, e, service("keep", "ClusterIP", tcpPort("http", 8099)))
		putEndpoints(t, e, "keep", backendsSubsets("http", a)...)
		var conn net.Conn
		if err := te.ClientHost().Do(func() (err error) {
			conn, err = net.DialTimeout("tcp", clusterAddr(s, 0).String(), 2*time.Second)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		rd := bufio.NewReader(conn)
		if line, err := rd.ReadString('\n'); err != nil || !strings.HasPrefix(line, "a ") {
			t.Fatalf("greeting %q %v", line, err)
		}
		te.Restart(t)
		e.Programmed(t, 1)
		_ = conn.SetDeadline(time.Now().Add(3 * time.Second))
		fmt.Fprintf(conn, "still here\n")
		if line, err := rd.ReadString('\n'); err != nil || line != "still here\n" {
			t.Fatalf("connection broken by the restart: %q %v", line, err)
		}
	}},
	{name: "portald cleanup leaves the tables as they were before", skip: map[string]string{
		"userspace": "the userspace dataplane writes no iptables rules",
	}, run: func(t *testing.T, e Env) {
		te := needTopology(t, e)
		p, bin := te.Portald()
		p.Stop(t)
		if out, err := te.Gateway(bin, "cleanup"); err != nil {
			t.Fatalf("cleanup: %v %s", err, out)
		}
		// Unrelated rules of the host's own must survive portal.
		for _, rule := range [][]string{
			{"iptables", "-t", "nat", "-A", "POSTROUTING", "-s", "198.18.9.0/24", "-j", "MASQUERADE"},
			{"iptables", "-A", "INPUT", "-s", "198.18.9.9/32", "-j", "DROP"},
		} {
			if out, err := te.Gateway(rule...); err != nil {
				t.Fatalf("%v: %v %s", rule, err, out)
			}
		}
		before := saveTables(t, te)
		te.Restart(t)
		a := e.Backend(t, "a")
		s := applyService(t, e, service("clean", "LoadBalancer", tcpPort("http", 8100)))
		putEndpoints(t, e, "clean", backendsSubsets("http", a)...)
		wantAll(t, spread(t, e, clusterAddr(s, 0), 2), "a")
		if saveTables(t, te) == before {
			t.Fatal("portal wrote no rules: the test proves nothing")
		}
		p, _ = te.Portald()
		p.Stop(t)
		if out, err := te.Gateway(bin, "cleanup"); err != nil {
			t.Fatalf("cleanup: %v %s", err, out)
		}
		if after := saveTables(t, te); after != before {
			t.Fatalf("tables differ after cleanup:\nbefore:\n%s\nafter:\n%s", before, after)
		}
		te.Restart(t) // leave a running portald for the cleanup of the test
	}},
}

// saveTables returns the gateway's nat and filter tables without counters
// and comments lines, for comparison.
func saveTables(t *testing.T, te topologyEnv) string {
	t.Helper()
	var b strings.Builder
	for _, table := range []string{"nat", "filter"} {
		out, err := te.Gateway("iptables-save", "-t", table)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(out, "\n") {
			if strings.HasPrefix(line, "#") {
				continue
			}
			if strings.HasPrefix(line, ":") { // drop packet counters
				line = strings.Fields(line)[0] + " " + strings.Fields(line)[1]
			}
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

// runBehaviour runs the table against one dataplane.
func runBehaviour(t *testing.T, dataplane string, newEnv func(t *testing.T) Env) {
	for _, c := range append(append([]behaviourCase(nil), behaviourCases...), topologyCases...) {
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
