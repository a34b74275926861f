package test

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	portalv1 "github.com/portal-lb/portal/proto/portal/v1"
	"github.com/portal-lb/portal/test/harness"
)

type member struct {
	id, dir          string
	grpc, http, raft string
	p                *harness.Portald
}

func (m *member) start(t *testing.T, bin string, extra ...string) {
	args := append([]string{"--node-id", m.id, "--data-dir", m.dir, "--grpc-addr", m.grpc, "--http-addr", m.http,
		"--raft-addr", m.raft, "--dataplane", "none"}, extra...)
	m.p = harness.StartPortald(t, bin, harness.Options{GRPC: m.grpc, HTTP: m.http, Args: args})
}

func clients(t *testing.T, addr string) (portalv1.LoadBalancerServiceClient, portalv1.ClusterServiceClient) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return portalv1.NewLoadBalancerServiceClient(conn), portalv1.NewClusterServiceClient(conn)
}

// TestThreeProcessCluster builds a cluster of real portald processes
// (bootstrap, join through a follower), writes through followers, kills the
// leader with SIGKILL under concurrent writes, and checks that every
// acknowledged write survives on every node and that the killed node
// catches up after a restart.
func TestThreeProcessCluster(t *testing.T) {
	bin, ctlBin := harness.Binaries(t)
	ms := make([]*member, 3)
	for i := range ms {
		ms[i] = &member{id: fmt.Sprintf("gw-%d", i+1), dir: t.TempDir(), grpc: harness.FreeAddr(t), http: harness.FreeAddr(t), raft: harness.FreeAddr(t)}
	}
	ms[0].start(t, bin, "--bootstrap")
	ms[1].start(t, bin, "--join", ms[0].grpc)
	ms[2].start(t, bin, "--join", ms[1].grpc) // via a follower: forwarded
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	lb3, cl3 := clients(t, ms[2].grpc)
	c, err := cl3.GetCluster(ctx, &portalv1.GetClusterRequest{})
	if err != nil || len(c.GetNodes()) != 3 || c.GetLeader() != "gw-1" {
		t.Fatalf("cluster: %v %v", c, err)
	}
	for _, n := range c.GetNodes() {
		if !n.GetReady() || n.GetGrpcAddress() == "" {
			t.Fatalf("node %v", n)
		}
	}
	// A write on a follower is forwarded; the answer is the leader's.
	r, err := lb3.CreateService(ctx, &portalv1.CreateServiceRequest{Service: lbService("web")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lb3.CreateService(ctx, &portalv1.CreateServiceRequest{Service: lbService("web")}); err == nil {
		t.Fatal("duplicate create through a follower succeeded")
	}
	if _, err := lb3.GetService(ctx, &portalv1.GetServiceRequest{Name: "web", Consistent: true}); err != nil {
		t.Fatalf("consistent read on a follower: %v", err)
	}

	// Concurrent writers through the two followers while the leader dies.
	var mu sync.Mutex
	acked := map[string]bool{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w, m := range ms[1:] {
		lb, _ := clients(t, m.grpc)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				name := fmt.Sprintf("w%d-%d", w, i)
				wctx, wcancel := context.WithTimeout(ctx, 3*time.Second)
				_, err := lb.CreateService(wctx, &portalv1.CreateServiceRequest{Service: lbService(name)})
				wcancel()
				if err == nil {
					mu.Lock()
					acked[name] = true
					mu.Unlock()
				} else {
					time.Sleep(20 * time.Millisecond)
				}
			}
		}()
	}
	time.Sleep(500 * time.Millisecond)
	ms[0].p.Kill()
	time.Sleep(3 * time.Second)
	close(stop)
	wg.Wait()
	if len(acked) < 10 {
		t.Fatalf("only %d writes acknowledged", len(acked))
	}
	ms[0].start(t, bin) // restart on its data: catches up
	for _, m := range ms {
		lb, _ := clients(t, m.grpc)
		harness.Eventually(t, 10*time.Second, m.id+" has every acknowledged write", func() error {
			list, err := lb.ListServices(ctx, &portalv1.ListServicesRequest{})
			if err != nil {
				return err
			}
			have := map[string]bool{}
			for _, s := range list.GetServices() {
				have[s.GetMetadata().GetName()] = true
				if s.GetMetadata().GetName() == "web" && s.GetSpec().GetClusterIp() != r.GetService().GetSpec().GetClusterIp() {
					return fmt.Errorf("web's ClusterIP changed")
				}
			}
			mu.Lock()
			defer mu.Unlock()
			for name := range acked {
				if !have[name] {
					return fmt.Errorf("acknowledged write %s missing", name)
				}
			}
			return nil
		})
	}
	_, cl1 := clients(t, ms[0].grpc)
	c, err = cl1.GetCluster(ctx, &portalv1.GetClusterRequest{})
	if err != nil || c.GetLeader() == "gw-1" || c.GetLeader() == "" || len(c.GetNodes()) != 3 {
		t.Fatalf("after the leader's death: %v %v", c, err)
	}
	// portalctl drives membership through any node.
	ctl := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(ctlBin, append([]string{"--server", ms[0].grpc}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("portalctl %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	if out := ctl("cluster", "status"); strings.Count(out, "gw-") < 3 || !strings.Contains(out, "leader") {
		t.Fatalf("cluster status:\n%s", out)
	}
	if out := ctl("cluster", "transfer-leadership", "gw-1"); !strings.Contains(out, "leader is now gw-1") {
		t.Fatalf("transfer: %s", out)
	}
	ctl("cluster", "remove", "gw-3")
	if out := ctl("cluster", "status"); strings.Contains(out, "gw-3") {
		t.Fatalf("gw-3 still listed after removal:\n%s", out)
	}
	ms[2].p.Kill()
	for _, m := range ms[:2] {
		m.p.Stop(t)
	}
}
