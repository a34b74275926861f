package test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	portalv1 "github.com/portal-lb/portal/proto/portal/v1"
	"github.com/portal-lb/portal/test/harness"
)

// TestNetnsHealthTwoGatewaysIPTables: two gateways (iptables dataplane,
// one cluster) probe the same backends; GetServiceHealth on one gathers
// both views, and a failing endpoint leaves the kernel rules.
func TestNetnsHealthTwoGatewaysIPTables(t *testing.T) {
	harness.RequireRoot(t, "iptables", "iptables-save", "iptables-restore")
	bin, _ := harness.Binaries(t)
	tp := harness.NewTopology(t)
	gw1 := tp.AddHost("gw1", "198.18.1.1/24", "198.18.2.1/24")
	gw2 := tp.AddHost("gw2", "198.18.1.2/24", "198.18.2.2/24")
	for _, gw := range []*harness.Host{gw1, gw2} {
		gw.Sysctl("net.ipv4.ip_forward=1")
	}
	client := tp.AddHost("client", "198.18.1.10/24")
	client.IP("route", "add", "198.19.0.0/16", "via", "198.18.1.1")
	backends := tp.AddHost("backends", "198.18.2.11/24", "198.18.2.12/24")
	backends.IP("route", "add", "198.18.1.0/24", "via", "198.18.2.1")

	start := func(h *harness.Host, id, ip string, extra ...string) *harness.Portald {
		args := append([]string{"--dataplane", "iptables", "--node-id", id, "--data-dir", t.TempDir(),
			"--grpc-addr", ip + ":7400", "--raft-addr", ip + ":7401", "--http-addr", "127.0.0.1:7480",
			"--service-cidr", "198.19.0.0/24", "--lb-pool", "198.19.1.0/24", "--node-addresses", ip,
			"--allow-loopback-endpoints=false"}, extra...)
		return harness.StartPortald(t, bin, harness.Options{Host: h, GRPC: ip + ":7400", HTTP: "127.0.0.1:7480", Args: args})
	}
	p1 := start(gw1, "gw-1", "198.18.1.1", "--bootstrap")
	start(gw2, "gw-2", "198.18.1.2", "--join", "198.18.1.1:7400")

	// Backends with a switchable HTTP health endpoint on port 18880.

	oks := map[string]*atomic.Bool{}
	var bes []*harness.Backend
	for i, ip := range []string{"198.18.2.11", "198.18.2.12"} {
		name := string(rune('a' + i))
		bes = append(bes, backends.StartBackend(t, name, ip+":8080"))
		ok := &atomic.Bool{}
		ok.Store(true)
		oks[name] = ok
		var ln net.Listener
		if err := backends.Do(func() (err error) { ln, err = net.Listen("tcp", ip+":18880"); return err }); err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			if !ok.Load() {
				w.WriteHeader(http.StatusServiceUnavailable)
			}
		})}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
	}

	conn, err := grpc.NewClient("passthrough:///198.18.1.1:7400", grpc.WithContextDialer(p1.Dialer()), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	api := portalv1.NewLoadBalancerServiceClient(conn)
	ctx := context.Background()
	svc := service("web", "ClusterIP", tcpPort("http", 80))
	svc.Spec.HealthCheck = &portalv1.HealthCheck{Type: "HTTP", Port: 18880, IntervalMillis: 100, TimeoutMillis: 80, HealthyThreshold: 2, UnhealthyThreshold: 2}
	r, err := api.ApplyService(ctx, &portalv1.ApplyServiceRequest{Service: svc})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := api.PutEndpoints(ctx, &portalv1.PutEndpointsRequest{Endpoints: &portalv1.Endpoints{
		Metadata: &portalv1.ObjectMeta{Name: "web"}, Subsets: backendsSubsets("http", bes...)}}); err != nil {
		t.Fatal(err)
	}
	vip := netip.AddrPortFrom(netip.MustParseAddr(r.GetService().GetSpec().GetClusterIp()), 80)
	states := func() (map[string]string, error) {
		h, err := api.GetServiceHealth(ctx, &portalv1.GetServiceHealthRequest{Name: "web"})
		if err != nil {
			return nil, err
		}
		out := map[string]string{}
		for _, e := range h.GetEndpoints() {
			out[e.GetNode()+"/"+e.GetIp()] = e.GetState()
		}
		if len(h.GetUnreachableNodes()) > 0 {
			return out, fmt.Errorf("unreachable: %v", h.GetUnreachableNodes())
		}
		return out, nil
	}
	harness.Eventually(t, 10*time.Second, "both gateways see both endpoints healthy", func() error {
		st, err := states()
		if err != nil {
			return err
		}
		for _, n := range []string{"gw-1", "gw-2"} {
			for _, ip := range []string{"198.18.2.11", "198.18.2.12"} {
				if st[n+"/"+ip] != "Healthy" {
					return fmt.Errorf("%v", st)
				}
			}
		}
		return nil
	})
	seen := map[string]bool{}
	for i := 0; i < 20; i++ {
		if rep, err := client.Ask(vip.String(), netip.Addr{}, 2*time.Second); err == nil {
			seen[rep.Backend] = true
		}
	}
	if !seen["a"] || !seen["b"] {
		t.Fatalf("before the failure, served by %v", seen)
	}
	oks["b"].Store(false)
	harness.Eventually(t, 5*time.Second, "both gateways see b unhealthy", func() error {
		st, _ := states()
		if st["gw-1/198.18.2.12"] != "Unhealthy" || st["gw-2/198.18.2.12"] != "Unhealthy" || st["gw-1/198.18.2.11"] != "Healthy" {
			return fmt.Errorf("%v", st)
		}
		return nil
	})
	time.Sleep(200 * time.Millisecond) // the transition's sync
	for i := 0; i < 20; i++ {
		rep, err := client.Ask(vip.String(), netip.Addr{}, 2*time.Second)
		if err != nil || rep.Backend != "a" {
			t.Fatalf("after b failed its check: %v %v", rep, err)
		}
	}
}
