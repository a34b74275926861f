package cluster

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	portalv1 "github.com/portal-lb/portal/proto/portal/v1"
)

func testConfig() *portalv1.ClusterConfig {
	return &portalv1.ClusterConfig{ServiceCidr: "198.18.0.0/16", LbPool: "198.19.0.0/24", NodePortMin: 30000, NodePortMax: 32767}
}

// openStore opens a single-node store in dir and waits until it can write.
func openStore(t *testing.T, dir string, cc *portalv1.ClusterConfig, mod ...func(*Config)) *Store {
	t.Helper()
	cfg := Config{
		NodeID: "n1", DataDir: dir, RaftAddr: "127.0.0.1:0", Bootstrap: true, GRPCAddr: "127.0.0.1:7400", Cluster: cc,
		HeartbeatTimeout: 100 * time.Millisecond, ElectionTimeout: 100 * time.Millisecond, RaftLog: io.Discard,
	}
	for _, m := range mod {
		m(&cfg)
	}
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.EnsureConfig(ctx); err != nil {
		t.Fatal(err)
	}
	return s
}

func newStore(t *testing.T, cc *portalv1.ClusterConfig, mod ...func(*Config)) *Store {
	s := openStore(t, t.TempDir(), cc, mod...)
	t.Cleanup(func() { s.Close() })
	return s
}

func svc(name, typ string, ports ...int32) *portalv1.Service {
	s := &portalv1.Service{
		Metadata: &portalv1.ObjectMeta{Name: name, Namespace: "default"},
		Spec:     &portalv1.ServiceSpec{Type: typ, SessionAffinity: "None"},
	}
	for i, p := range ports {
		s.Spec.Ports = append(s.Spec.Ports, &portalv1.ServicePort{Name: fmt.Sprintf("p%d", i), Protocol: "TCP", Port: p, TargetPort: fmt.Sprint(p)})
	}
	if portalv1.NeedsNodePorts(typ) {
		s.Spec.ExternalTrafficPolicy = "Cluster"
	}
	return s
}

// wantErr checks the status code and, when field is set, the violation.
func wantErr(t *testing.T, err error, code codes.Code, field string) {
	t.Helper()
	st, _ := status.FromError(err)
	if st.Code() != code {
		t.Fatalf("got %v, want code %v", err, code)
	}
	if field == "" {
		return
	}
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				if v.GetField() == field {
					return
				}
			}
		}
	}
	t.Fatalf("error %v has no violation for %s", err, field)
}

var ctx = context.Background()

func TestClusterIPAllocationExhaustionAndRelease(t *testing.T) {
	cc := testConfig()
	cc.ServiceCidr = "198.18.0.0/29" // 6 usable: .1-.6
	s := newStore(t, cc)
	seen := map[string]bool{}
	for i := 0; i < 6; i++ {
		out, err := s.CreateService(ctx, svc(fmt.Sprintf("s%d", i), "ClusterIP", 80))
		if err != nil {
			t.Fatal(err)
		}
		ip := netip.MustParseAddr(out.GetSpec().GetClusterIp())
		if !netip.MustParsePrefix("198.18.0.0/29").Contains(ip) || ip.String() == "198.18.0.0" || ip.String() == "198.18.0.7" {
			t.Fatalf("allocated %s outside the usable range", ip)
		}
		if seen[ip.String()] {
			t.Fatalf("allocated %s twice", ip)
		}
		seen[ip.String()] = true
	}
	_, err := s.CreateService(ctx, svc("full", "ClusterIP", 80))
	wantErr(t, err, codes.ResourceExhausted, "spec.clusterIP")
	// Nothing was written by the failed create.
	if _, err := s.GetService(ctx, "default", "full", false); status.Code(err) != codes.NotFound {
		t.Fatalf("failed create left an object: %v", err)
	}
	del, err := s.DeleteService(ctx, "default", "s3", 0)
	if err != nil {
		t.Fatal(err)
	}
	out, err := s.CreateService(ctx, svc("again", "ClusterIP", 80))
	if err != nil {
		t.Fatal(err)
	}
	if out.GetSpec().GetClusterIp() != del.GetSpec().GetClusterIp() {
		t.Fatalf("freed %s, got %s", del.GetSpec().GetClusterIp(), out.GetSpec().GetClusterIp())
	}
}

func TestAllocatorSkipsRecentlyFreed(t *testing.T) {
	s := newStore(t, testConfig())
	a, _ := s.CreateService(ctx, svc("a", "ClusterIP", 80))
	if _, err := s.DeleteService(ctx, "default", "a", 0); err != nil {
		t.Fatal(err)
	}
	b, _ := s.CreateService(ctx, svc("b", "ClusterIP", 80))
	if a.GetSpec().GetClusterIp() == b.GetSpec().GetClusterIp() {
		t.Fatalf("address %s reused at once", a.GetSpec().GetClusterIp())
	}
}

func TestRequestedClusterIP(t *testing.T) {
	s := newStore(t, testConfig())
	want := svc("a", "ClusterIP", 80)
	want.Spec.ClusterIp = "198.18.7.7"
	out, err := s.CreateService(ctx, want)
	if err != nil || out.GetSpec().GetClusterIp() != "198.18.7.7" {
		t.Fatalf("requested IP not honoured: %v %v", out, err)
	}
	taken := svc("b", "ClusterIP", 80)
	taken.Spec.ClusterIp = "198.18.7.7"
	_, err = s.CreateService(ctx, taken)
	wantErr(t, err, codes.AlreadyExists, "spec.clusterIP")
	outside := svc("c", "ClusterIP", 80)
	outside.Spec.ClusterIp = "198.19.200.1"
	_, err = s.CreateService(ctx, outside)
	wantErr(t, err, codes.InvalidArgument, "spec.clusterIP")
	headless := svc("h", "ClusterIP", 80)
	headless.Spec.ClusterIp = "None"
	out, err = s.CreateService(ctx, headless)
	if err != nil || out.GetSpec().GetClusterIp() != "None" {
		t.Fatalf("headless: %v %v", out, err)
	}
	ext := svc("x", "ExternalName")
	ext.Spec.ExternalName = "db.example.com"
	out, err = s.CreateService(ctx, ext)
	if err != nil || out.GetSpec().GetClusterIp() != "" {
		t.Fatalf("ExternalName got a ClusterIP: %v %v", out, err)
	}
}

func TestNodePortAllocation(t *testing.T) {
	cc := testConfig()
	cc.NodePortMin, cc.NodePortMax = 30000, 30003
	s := newStore(t, cc)
	a, err := s.CreateService(ctx, svc("a", "NodePort", 80, 443))
	if err != nil {
		t.Fatal(err)
	}
	p0, p1 := a.GetSpec().GetPorts()[0].GetNodePort(), a.GetSpec().GetPorts()[1].GetNodePort()
	if p0 < 30000 || p0 > 30003 || p1 < 30000 || p1 > 30003 || p0 == p1 {
		t.Fatalf("node ports %d %d", p0, p1)
	}
	req := svc("b", "NodePort", 80)
	req.Spec.Ports[0].NodePort = p0
	_, err = s.CreateService(ctx, req)
	wantErr(t, err, codes.AlreadyExists, "spec.ports[0].nodePort")
	req.Spec.Ports[0].NodePort = 31000
	_, err = s.CreateService(ctx, req)
	wantErr(t, err, codes.InvalidArgument, "spec.ports[0].nodePort")
	// A requested free port is honoured, and an allocated one avoids it.
	free := int32(30000)
	for free == p0 || free == p1 {
		free++
	}
	req.Spec.Ports = append(req.Spec.Ports, &portalv1.ServicePort{Name: "q", Protocol: "TCP", Port: 81, TargetPort: "81"})
	req.Spec.Ports[0].NodePort = 0
	req.Spec.Ports[1].NodePort = free
	b, err := s.CreateService(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if b.GetSpec().GetPorts()[1].GetNodePort() != free || b.GetSpec().GetPorts()[0].GetNodePort() == free {
		t.Fatalf("ports %v", b.GetSpec().GetPorts())
	}
	_, err = s.CreateService(ctx, svc("c", "NodePort", 80))
	wantErr(t, err, codes.ResourceExhausted, "spec.ports[0].nodePort")
	if _, err := s.DeleteService(ctx, "default", "a", 0); err != nil {
		t.Fatal(err)
	}
	c, err := s.CreateService(ctx, svc("c", "NodePort", 80, 90))
	if err != nil {
		t.Fatalf("ports not released on delete: %v", err)
	}
	got := []int32{c.GetSpec().GetPorts()[0].GetNodePort(), c.GetSpec().GetPorts()[1].GetNodePort()}
	if !(got[0] == p0 && got[1] == p1 || got[0] == p1 && got[1] == p0) {
		t.Fatalf("got %v, want the freed %d and %d", got, p0, p1)
	}
}

func TestLoadBalancerAllocation(t *testing.T) {
	cc := testConfig()
	cc.LbPool = "198.19.0.0/30" // 2 usable
	s := newStore(t, cc)
	a, err := s.CreateService(ctx, svc("a", "LoadBalancer", 80))
	if err != nil {
		t.Fatal(err)
	}
	ing := a.GetStatus().GetLoadBalancer().GetIngress()
	if len(ing) != 1 || !netip.MustParsePrefix("198.19.0.0/30").Contains(netip.MustParseAddr(ing[0].GetIp())) {
		t.Fatalf("ingress %v", ing)
	}
	if np := a.GetSpec().GetPorts()[0].GetNodePort(); np < 30000 || np > 32767 {
		t.Fatalf("LoadBalancer without node port: %d", np)
	}
	if a.GetSpec().GetClusterIp() == "" || a.GetSpec().GetHealthCheckNodePort() != 0 {
		t.Fatalf("spec %v", a.GetSpec())
	}
	req := svc("b", "LoadBalancer", 80)
	req.Spec.LoadBalancerIp = ing[0].GetIp()
	_, err = s.CreateService(ctx, req)
	wantErr(t, err, codes.AlreadyExists, "spec.loadBalancerIP")
	req.Spec.LoadBalancerIp = "198.19.9.9"
	_, err = s.CreateService(ctx, req)
	wantErr(t, err, codes.InvalidArgument, "spec.loadBalancerIP")
	local := svc("local", "LoadBalancer", 80)
	local.Spec.ExternalTrafficPolicy = "Local"
	l, err := s.CreateService(ctx, local)
	if err != nil {
		t.Fatal(err)
	}
	if hc := l.GetSpec().GetHealthCheckNodePort(); hc < 30000 || hc > 32767 || hc == l.GetSpec().GetPorts()[0].GetNodePort() {
		t.Fatalf("healthCheckNodePort %d", hc)
	}
	_, err = s.CreateService(ctx, svc("c", "LoadBalancer", 80))
	wantErr(t, err, codes.ResourceExhausted, "spec.loadBalancerIP")
	// Changing to ClusterIP frees the LB address and node ports.
	down := svc("a", "ClusterIP", 80)
	if _, _, err := s.UpdateService(ctx, down, false); err != nil {
		t.Fatal(err)
	}
	c, err := s.CreateService(ctx, svc("c", "LoadBalancer", 80))
	if err != nil || c.GetStatus().GetLoadBalancer().GetIngress()[0].GetIp() != ing[0].GetIp() {
		t.Fatalf("freed LB address not reused: %v %v", c, err)
	}
}

func TestApplyKeepsAllocationsAndIsIdempotent(t *testing.T) {
	s := newStore(t, testConfig())
	in := svc("web", "LoadBalancer", 80, 443)
	first, res, err := s.UpdateService(ctx, proto.Clone(in).(*portalv1.Service), true)
	if err != nil || res != "created" {
		t.Fatalf("%v %v", res, err)
	}
	again, res, err := s.UpdateService(ctx, proto.Clone(in).(*portalv1.Service), true)
	if err != nil || res != "unchanged" {
		t.Fatalf("%v %v", res, err)
	}
	if !proto.Equal(first, again) {
		t.Fatalf("re-apply changed the object:\n%v\n%v", first, again)
	}
	// A new label changes the object but keeps every allocation.
	in.Metadata.Labels = map[string]string{"team": "a"}
	changed, res, err := s.UpdateService(ctx, proto.Clone(in).(*portalv1.Service), true)
	if err != nil || res != "configured" {
		t.Fatalf("%v %v", res, err)
	}
	if changed.GetMetadata().GetResourceVersion() <= first.GetMetadata().GetResourceVersion() {
		t.Fatal("resourceVersion did not advance")
	}
	if changed.GetSpec().GetClusterIp() != first.GetSpec().GetClusterIp() ||
		changed.GetSpec().GetPorts()[1].GetNodePort() != first.GetSpec().GetPorts()[1].GetNodePort() ||
		changed.GetStatus().GetLoadBalancer().GetIngress()[0].GetIp() != first.GetStatus().GetLoadBalancer().GetIngress()[0].GetIp() ||
		changed.GetMetadata().GetUid() != first.GetMetadata().GetUid() {
		t.Fatalf("allocations moved:\n%v\n%v", first, changed)
	}
	// Reordered ports keep their node ports (matched by port and protocol).
	in.Spec.Ports[0], in.Spec.Ports[1] = in.Spec.Ports[1], in.Spec.Ports[0]
	swapped, _, err := s.UpdateService(ctx, proto.Clone(in).(*portalv1.Service), true)
	if err != nil {
		t.Fatal(err)
	}
	if swapped.GetSpec().GetPorts()[0].GetNodePort() != first.GetSpec().GetPorts()[1].GetNodePort() {
		t.Fatal("node port did not follow its port")
	}
	// ClusterIP is immutable.
	in.Spec.ClusterIp = "198.18.99.99"
	_, _, err = s.UpdateService(ctx, proto.Clone(in).(*portalv1.Service), true)
	wantErr(t, err, codes.InvalidArgument, "spec.clusterIP")
	// ...except to and from ExternalName.
	ext := svc("web", "ExternalName")
	ext.Spec.ExternalName = "example.com"
	out, _, err := s.UpdateService(ctx, ext, false)
	if err != nil || out.GetSpec().GetClusterIp() != "" || out.GetStatus().GetLoadBalancer() != nil {
		t.Fatalf("to ExternalName: %v %v", out, err)
	}
	back := svc("web", "ClusterIP", 80)
	back.Spec.ClusterIp = first.GetSpec().GetClusterIp()
	out, _, err = s.UpdateService(ctx, back, false)
	if err != nil || out.GetSpec().GetClusterIp() != first.GetSpec().GetClusterIp() {
		t.Fatalf("from ExternalName: %v %v", out, err)
	}
	// Update of a missing service is NOT_FOUND; Create of an existing one ALREADY_EXISTS.
	_, _, err = s.UpdateService(ctx, svc("nope", "ClusterIP", 80), false)
	wantErr(t, err, codes.NotFound, "")
	_, err = s.CreateService(ctx, svc("web", "ClusterIP", 80))
	wantErr(t, err, codes.AlreadyExists, "metadata.name")
}

func TestOptimisticConcurrency(t *testing.T) {
	s := newStore(t, testConfig())
	a, _ := s.CreateService(ctx, svc("a", "ClusterIP", 80))
	upd := svc("a", "ClusterIP", 81)
	upd.Metadata.ResourceVersion = a.GetMetadata().GetResourceVersion()
	b, _, err := s.UpdateService(ctx, upd, false)
	if err != nil {
		t.Fatal(err)
	}
	stale := svc("a", "ClusterIP", 82)
	stale.Metadata.ResourceVersion = a.GetMetadata().GetResourceVersion()
	_, _, err = s.UpdateService(ctx, stale, false)
	wantErr(t, err, codes.Aborted, "")
	_, err = s.DeleteService(ctx, "default", "a", a.GetMetadata().GetResourceVersion())
	wantErr(t, err, codes.Aborted, "")
	if _, err := s.DeleteService(ctx, "default", "a", b.GetMetadata().GetResourceVersion()); err != nil {
		t.Fatal(err)
	}
	ep := endpoints("a", "198.18.5.1")
	e1, _, err := s.PutEndpoints(ctx, ep)
	if err != nil {
		t.Fatal(err)
	}
	ep2 := endpoints("a", "198.18.5.2")
	ep2.Metadata.ResourceVersion = e1.GetMetadata().GetResourceVersion() + 100
	_, _, err = s.PutEndpoints(ctx, ep2)
	wantErr(t, err, codes.Aborted, "")
	_, err = s.DeleteEndpoints(ctx, "default", "a", e1.GetMetadata().GetResourceVersion()+100)
	wantErr(t, err, codes.Aborted, "")
}

func endpoints(name string, ips ...string) *portalv1.Endpoints {
	ss := &portalv1.EndpointSubset{Ports: []*portalv1.EndpointPort{{Port: 8080, Protocol: "TCP"}}}
	for _, ip := range ips {
		ss.Addresses = append(ss.Addresses, &portalv1.EndpointAddress{Ip: ip})
	}
	return &portalv1.Endpoints{Metadata: &portalv1.ObjectMeta{Name: name, Namespace: "default"}, Subsets: []*portalv1.EndpointSubset{ss}}
}

func TestEndpointsRules(t *testing.T) {
	s := newStore(t, testConfig()) // loopback not allowed
	_, _, err := s.PutEndpoints(ctx, endpoints("a", "198.18.1.1", "127.0.0.1"))
	wantErr(t, err, codes.InvalidArgument, "subsets[0].addresses[1].ip")
	_, _, err = s.PutEndpoints(ctx, endpoints("a", "::1"))
	wantErr(t, err, codes.InvalidArgument, "subsets[0].addresses[0].ip")

	multi := svc("m", "ClusterIP", 80, 443) // ports p0, p1
	if _, err := s.CreateService(ctx, multi); err != nil {
		t.Fatal(err)
	}
	ep := endpoints("m", "198.18.1.1")
	ep.Subsets[0].Ports = []*portalv1.EndpointPort{{Name: "p0", Port: 8080, Protocol: "TCP"}, {Name: "https", Port: 8443, Protocol: "TCP"}}
	_, _, err = s.PutEndpoints(ctx, ep)
	wantErr(t, err, codes.InvalidArgument, "subsets[0].ports[1].name")
	ep.Subsets[0].Ports[1].Name = "p1"
	if _, res, err := s.PutEndpoints(ctx, ep); err != nil || res != "created" {
		t.Fatalf("%v %v", res, err)
	}
	if _, res, err := s.PutEndpoints(ctx, ep); err != nil || res != "unchanged" {
		t.Fatalf("%v %v", res, err)
	}

	open := newStore(t, &portalv1.ClusterConfig{ServiceCidr: "127.96.0.0/16", LbPool: "127.97.0.0/16", NodePortMin: 30000, NodePortMax: 32767, AllowLoopbackEndpoints: true})
	if _, _, err := open.PutEndpoints(ctx, endpoints("a", "127.0.0.1")); err != nil {
		t.Fatalf("loopback refused where allowed: %v", err)
	}
}

// collect runs a watch in the background and returns its events.
func collectServices(t *testing.T, s *Store, ns string, rv uint64) (func(n int) []*portalv1.WatchServicesResponse, context.CancelFunc, chan error) {
	ch := make(chan *portalv1.WatchServicesResponse, 1000)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		errc <- s.WatchServices(ctx, ns, rv, func(r *portalv1.WatchServicesResponse) error { ch <- r; return nil })
	}()
	next := func(n int) []*portalv1.WatchServicesResponse {
		t.Helper()
		var out []*portalv1.WatchServicesResponse
		for len(out) < n {
			select {
			case r := <-ch:
				out = append(out, r)
			case err := <-errc:
				t.Fatalf("watch ended: %v", err)
			case <-time.After(5 * time.Second):
				t.Fatalf("got %d of %d events", len(out), n)
			}
		}
		select {
		case r := <-ch:
			t.Fatalf("unexpected extra event %v", r)
		case <-time.After(50 * time.Millisecond):
		}
		return out
	}
	t.Cleanup(cancel)
	return next, cancel, errc
}

func TestWatchListThenChangesAndResume(t *testing.T) {
	s := newStore(t, testConfig())
	a, _ := s.CreateService(ctx, svc("a", "ClusterIP", 80))
	other := svc("o", "ClusterIP", 80)
	other.Metadata.Namespace = "other"
	if _, err := s.CreateService(ctx, other); err != nil {
		t.Fatal(err)
	}
	next, _, _ := collectServices(t, s, "default", 0)
	evs := next(2)
	if evs[0].GetType() != "ADDED" || evs[0].GetService().GetMetadata().GetName() != "a" || evs[1].GetType() != "BOOKMARK" {
		t.Fatalf("initial events %v", evs)
	}
	bookmark := evs[1].GetResourceVersion()
	if _, list, _ := s.ListServices(ctx, "", false); bookmark != list {
		t.Fatalf("bookmark %d, list revision %d", bookmark, list)
	}
	b, _ := s.CreateService(ctx, svc("b", "ClusterIP", 80))
	if _, err := s.CreateService(ctx, func() *portalv1.Service { o := svc("o2", "ClusterIP", 80); o.Metadata.Namespace = "other"; return o }()); err != nil {
		t.Fatal(err)
	}
	upd := svc("a", "ClusterIP", 81)
	if _, _, err := s.UpdateService(ctx, upd, false); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DeleteService(ctx, "default", "b", 0); err != nil {
		t.Fatal(err)
	}
	evs = next(3)
	if evs[0].GetType() != "ADDED" || evs[1].GetType() != "MODIFIED" || evs[2].GetType() != "DELETED" {
		t.Fatalf("change events %v", evs)
	}
	// Resume from the create of b: the same later events, in order.
	resume, _, _ := collectServices(t, s, "default", b.GetMetadata().GetResourceVersion())
	again := resume(2)
	if again[0].GetResourceVersion() != evs[1].GetResourceVersion() || again[1].GetResourceVersion() != evs[2].GetResourceVersion() {
		t.Fatalf("resume got %v, want %v", again, evs[1:])
	}
	if evs[0].GetResourceVersion() <= a.GetMetadata().GetResourceVersion() {
		t.Fatal("revisions not increasing")
	}
	// Every namespace.
	all, _, _ := collectServices(t, s, "", b.GetMetadata().GetResourceVersion())
	if got := all(3); got[0].GetService().GetMetadata().GetNamespace() != "other" {
		t.Fatalf("all namespaces %v", got)
	}
}

func TestWatchTooOldIsOutOfRange(t *testing.T) {
	s := newStore(t, testConfig(), func(c *Config) { c.WatchHistory = 4 })
	first, _ := s.CreateService(ctx, svc("s0", "ClusterIP", 80))
	for i := 1; i < 8; i++ {
		if _, err := s.CreateService(ctx, svc(fmt.Sprintf("s%d", i), "ClusterIP", 80)); err != nil {
			t.Fatal(err)
		}
	}
	err := s.WatchServices(ctx, "", first.GetMetadata().GetResourceVersion(), func(*portalv1.WatchServicesResponse) error { return nil })
	wantErr(t, err, codes.OutOfRange, "")
}

func TestWatchEndpoints(t *testing.T) {
	s := newStore(t, testConfig())
	ch := make(chan *portalv1.WatchEndpointsResponse, 10)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go s.WatchEndpoints(wctx, "default", 0, func(r *portalv1.WatchEndpointsResponse) error { ch <- r; return nil })
	if r := <-ch; r.GetType() != "BOOKMARK" {
		t.Fatalf("first event %v", r)
	}
	if _, err := s.CreateService(ctx, svc("a", "ClusterIP", 80)); err != nil { // not an endpoints event
		t.Fatal(err)
	}
	if _, _, err := s.PutEndpoints(ctx, endpoints("a", "198.18.1.1")); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-ch:
		if r.GetType() != "ADDED" || r.GetEndpoints().GetSubsets()[0].GetAddresses()[0].GetIp() != "198.18.1.1" ||
			time.Since(r.GetWriteTime().AsTime()) > time.Minute {
			t.Fatalf("event %v", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no endpoints event")
	}
}

// TestRestartRestoresEverything reopens the data directory, once replaying
// the log and once from a snapshot, and checks objects and allocations.
func TestRestartRestoresEverything(t *testing.T) {
	for _, snap := range []bool{false, true} {
		t.Run(fmt.Sprintf("snapshot=%v", snap), func(t *testing.T) {
			dir := t.TempDir()
			s := openStore(t, dir, testConfig())
			lb, err := s.CreateService(ctx, svc("lb", "LoadBalancer", 80))
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := s.PutEndpoints(ctx, endpoints("lb", "198.18.1.1")); err != nil {
				t.Fatal(err)
			}
			if snap {
				if err := s.raft.Snapshot().Error(); err != nil {
					t.Fatal(err)
				}
			}
			before, rev, _ := s.ListServices(ctx, "", false)
			s.Close()

			s = openStore(t, dir, testConfig())
			defer s.Close()
			after, rev2, _ := s.ListServices(ctx, "", false)
			if rev2 != rev || len(after) != 1 || !proto.Equal(before[0], after[0]) {
				t.Fatalf("restored %v at %d, want %v at %d", after, rev2, before, rev)
			}
			if _, err := s.GetEndpoints(ctx, "default", "lb", false); err != nil {
				t.Fatal(err)
			}
			// Allocations are held after the restart: asking for them fails.
			req := svc("x", "NodePort", 80)
			req.Spec.Ports[0].NodePort = lb.GetSpec().GetPorts()[0].GetNodePort()
			_, err = s.CreateService(ctx, req)
			wantErr(t, err, codes.AlreadyExists, "spec.ports[0].nodePort")
			req = svc("y", "ClusterIP", 80)
			req.Spec.ClusterIp = lb.GetSpec().GetClusterIp()
			_, err = s.CreateService(ctx, req)
			wantErr(t, err, codes.AlreadyExists, "spec.clusterIP")
		})
	}
}

func TestClusterInfo(t *testing.T) {
	s := newStore(t, testConfig())
	c, err := s.Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c.GetLeader() != "n1" || len(c.GetNodes()) != 1 || c.GetNodes()[0].GetRole() != "leader" || !c.GetNodes()[0].GetReady() ||
		c.GetNodes()[0].GetRaftAddress() != s.RaftAddr() || c.GetConfig().GetServiceCidr() != "198.18.0.0/16" {
		t.Fatalf("cluster %v", c)
	}
	if _, err := s.GetService(ctx, "default", "none", true); status.Code(err) != codes.NotFound {
		t.Fatalf("consistent read: %v", err)
	}
}
