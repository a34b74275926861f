package test

import (
	"context"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	portalv1 "github.com/portal-lb/portal/proto/portal/v1"
	"github.com/portal-lb/portal/test/harness"
)

func TestMain(m *testing.M) {
	code := m.Run()
	harness.Cleanup()
	os.Exit(code)
}

func client(t *testing.T, addr string) portalv1.LoadBalancerServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return portalv1.NewLoadBalancerServiceClient(conn)
}

func lbService(name string) *portalv1.Service {
	return &portalv1.Service{
		Metadata: &portalv1.ObjectMeta{Name: name},
		Spec: &portalv1.ServiceSpec{Type: "LoadBalancer", Ports: []*portalv1.ServicePort{
			{Name: "http", Port: 80, TargetPort: "8080"}, {Name: "dns", Port: 53, Protocol: "UDP"},
		}},
	}
}

// TestEmbeddedDefault runs portald with no arguments at all, as the README's
// quick start does, creates a LoadBalancer service, and restarts it.
func TestEmbeddedDefault(t *testing.T) {
	if l, err := net.Listen("tcp", "127.0.0.1:7400"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("the embedded default port 127.0.0.1:7400 is taken: %v", err)
		}
		t.Skipf("127.0.0.1:7400 is in use on this machine (%v); CI runs this test", err)
	} else {
		l.Close()
	}
	bin, _ := harness.Binaries(t)
	dir := t.TempDir()
	opts := harness.Options{Dir: dir, GRPC: "127.0.0.1:7400", HTTP: "127.0.0.1:7480"}
	p := harness.StartPortald(t, bin, opts)
	// One line says where the API, the HTTP endpoint and the data are.
	var ready string
	for _, line := range strings.Split(p.Log(), "\n") {
		if strings.Contains(line, "portald ready") {
			ready = line
		}
	}
	for _, want := range []string{"api=127.0.0.1:7400", "http=http://127.0.0.1:7480", "data=" + filepath.Join(dir, "portal-data")} {
		if !strings.Contains(ready, want) {
			t.Fatalf("ready line %q lacks %q", ready, want)
		}
	}
	c := client(t, p.GRPC)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c.CreateService(ctx, &portalv1.CreateServiceRequest{Service: lbService("web")})
	if err != nil {
		t.Fatal(err)
	}
	svc := resp.GetService()
	if !netip.MustParsePrefix("127.96.0.0/16").Contains(netip.MustParseAddr(svc.GetSpec().GetClusterIp())) ||
		!netip.MustParsePrefix("127.97.0.0/16").Contains(netip.MustParseAddr(svc.GetStatus().GetLoadBalancer().GetIngress()[0].GetIp())) {
		t.Fatalf("allocations outside the embedded ranges: %v", svc)
	}
	for _, port := range svc.GetSpec().GetPorts() {
		if port.GetNodePort() < 30000 || port.GetNodePort() > 32767 {
			t.Fatalf("node port %d out of range", port.GetNodePort())
		}
	}
	p.Stop(t)

	p = harness.StartPortald(t, bin, opts)
	c = client(t, p.GRPC)
	got, err := c.GetService(ctx, &portalv1.GetServiceRequest{Name: "web"})
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(got.GetService(), svc) {
		t.Fatalf("after restart:\n%v\nwant\n%v", got.GetService(), svc)
	}
	p.Stop(t)
}

// TestRestartKeepsObjectsAndAllocations writes many objects, stops portald
// (cleanly, then with SIGKILL), and checks that everything comes back and
// that allocations stay held.
func TestRestartKeepsObjectsAndAllocations(t *testing.T) {
	bin, _ := harness.Binaries(t)
	dir := t.TempDir()
	grpcAddr, httpAddr, raftAddr := harness.FreeAddr(t), harness.FreeAddr(t), harness.FreeAddr(t)
	opts := harness.Options{Dir: dir, GRPC: grpcAddr, HTTP: httpAddr,
		Args: []string{"--grpc-addr", grpcAddr, "--http-addr", httpAddr, "--raft-addr", raftAddr, "--node-id", "gw-1", "--dataplane", "none"}}
	p := harness.StartPortald(t, bin, opts)
	c := client(t, p.GRPC)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, name := range []string{"a", "b", "c", "d", "e"} {
		if _, err := c.ApplyService(ctx, &portalv1.ApplyServiceRequest{Service: lbService(name)}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.PutEndpoints(ctx, &portalv1.PutEndpointsRequest{Endpoints: &portalv1.Endpoints{
			Metadata: &portalv1.ObjectMeta{Name: name},
			Subsets: []*portalv1.EndpointSubset{{Addresses: []*portalv1.EndpointAddress{{Ip: "127.0.0.1"}},
				Ports: []*portalv1.EndpointPort{{Name: "http", Port: 8080}, {Name: "dns", Port: 5353, Protocol: "UDP"}}}},
		}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.DeleteService(ctx, &portalv1.DeleteServiceRequest{Name: "c"}); err != nil {
		t.Fatal(err)
	}
	before, err := c.ListServices(ctx, &portalv1.ListServicesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	beforeEp, _ := c.ListEndpoints(ctx, &portalv1.ListEndpointsRequest{})

	for _, crash := range []bool{false, true} {
		if crash {
			p.Kill()
		} else {
			p.Stop(t)
		}
		p = harness.StartPortald(t, bin, opts)
		c = client(t, p.GRPC)
		after, err := c.ListServices(ctx, &portalv1.ListServicesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		afterEp, _ := c.ListEndpoints(ctx, &portalv1.ListEndpointsRequest{})
		if !proto.Equal(before, after) || !proto.Equal(beforeEp, afterEp) {
			t.Fatalf("crash=%v: state differs after restart:\n%v\n%v", crash, before, after)
		}
	}
	// The freed address of "c" is not handed out before the rest of the
	// pool, and the held ones are still held.
	taken := proto.Clone(lbService("x")).(*portalv1.Service)
	taken.Spec.ClusterIp = before.GetServices()[0].GetSpec().GetClusterIp()
	if _, err := c.CreateService(ctx, &portalv1.CreateServiceRequest{Service: taken}); err == nil {
		t.Fatal("a held ClusterIP was handed out again after restart")
	}
	p.Stop(t)
}

// TestConfigurationSources checks precedence (file < PORTAL_* < flags) and
// that bad configuration fails with a message naming the key.
func TestConfigurationSources(t *testing.T) {
	bin, _ := harness.Binaries(t)
	dir := t.TempDir()
	grpcAddr, httpAddr := harness.FreeAddr(t), harness.FreeAddr(t)
	cfg := filepath.Join(dir, "portald.yaml")
	os.WriteFile(cfg, []byte("service-cidr: 198.18.0.0/24\nlb-pool: 198.19.0.0/24\nnode-port-range: 31000-31010\nraft-addr: "+harness.FreeAddr(t)+"\ngrpc-addr: 127.0.0.1:1\n"), 0o644)
	p := harness.StartPortald(t, bin, harness.Options{Dir: dir, GRPC: grpcAddr, HTTP: httpAddr,
		Args: []string{"--config", cfg, "--grpc-addr", grpcAddr, "--lb-pool", "198.19.1.0/24", "--dataplane", "none"},
		Env:  []string{"PORTAL_HTTP_ADDR=" + httpAddr, "PORTAL_LB_POOL=198.19.2.0/24", "PORTAL_NODE_PORT_RANGE=31000-31001"}})
	c := client(t, p.GRPC)
	ctx := context.Background()
	resp, err := c.CreateService(ctx, &portalv1.CreateServiceRequest{Service: lbService("web")})
	if err != nil {
		t.Fatal(err)
	}
	s := resp.GetService()
	if !strings.HasPrefix(s.GetSpec().GetClusterIp(), "198.18.0.") || // file
		!strings.HasPrefix(s.GetStatus().GetLoadBalancer().GetIngress()[0].GetIp(), "198.19.1.") || // flag beats env
		s.GetSpec().GetPorts()[0].GetNodePort() < 31000 || s.GetSpec().GetPorts()[1].GetNodePort() > 31001 { // env beats file
		t.Fatalf("configuration precedence: %v", s)
	}
	p.Stop(t)

	// The shipped example configuration is accepted as it is.
	shipped, _ := filepath.Abs("../configs/portald.yaml")
	g2, h2 := harness.FreeAddr(t), harness.FreeAddr(t)
	harness.StartPortald(t, bin, harness.Options{GRPC: g2, HTTP: h2, Args: []string{"--config", shipped,
		"--grpc-addr", g2, "--http-addr", h2, "--raft-addr", harness.FreeAddr(t), "--dataplane", "none"}}).Stop(t)

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--drain-grace", "0s"}, "drain-grace"},
		{[]string{"--dataplane", "ebpf"}, "dataplane"},
		{[]string{"--service-cidr", "10.0.0.0/40"}, "service-cidr"},
		{[]string{"--node-port-range", "32767-30000"}, "node-port-range"},
		{[]string{"--config", writeFile(t, "bad.yaml", "servce-cidr: 198.18.0.0/24\n")}, "servce-cidr"},
	} {
		out, err := exec.Command(bin, c.args...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), c.want) {
			t.Fatalf("%v: err=%v output=%s", c.args, err, out)
		}
	}
}

func writeFile(t *testing.T, name, content string) string {
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
