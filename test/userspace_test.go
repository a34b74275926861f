package test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/portal-lb/portal/cluster"
	"github.com/portal-lb/portal/dataplane"
	"github.com/portal-lb/portal/dataplane/userspace"
	portalv1 "github.com/portal-lb/portal/proto/portal/v1"
	"github.com/portal-lb/portal/server"
	"github.com/portal-lb/portal/test/harness"
)

// userspaceEnv is one node in-process on loopback: the raft store, the gRPC
// API, the node agent and the userspace proxy, wired as portald wires them.
// Each env gets its own service CIDR and LB pool inside 127.0.0.0/8, so
// envs never share a frontend.
type userspaceEnv struct {
	api   portalv1.LoadBalancerServiceClient
	agent *dataplane.Agent
	ext   netip.Addr
}

var envSeq atomic.Int32

func newUserspaceEnv(t *testing.T) Env {
	n := envSeq.Add(1)
	st, err := cluster.Open(cluster.Config{
		NodeID: "gw-1", DataDir: t.TempDir(), RaftAddr: "127.0.0.1:0", Bootstrap: true, RaftLog: io.Discard,
		HeartbeatTimeout: 100 * time.Millisecond, ElectionTimeout: 100 * time.Millisecond,
		Cluster: &portalv1.ClusterConfig{
			ServiceCidr: fmt.Sprintf("127.98.%d.0/24", n), LbPool: fmt.Sprintf("127.99.%d.0/24", n),
			NodePortMin: 31000 + 20*n, NodePortMax: 31019 + 20*n, AllowLoopbackEndpoints: true,
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	if err := st.WaitLeader(wctx); err != nil {
		t.Fatal(err)
	}
	if err := st.EnsureConfig(wctx); err != nil {
		t.Fatal(err)
	}
	proxy := userspace.New(userspace.Config{DrainGrace: time.Second})
	agent := dataplane.NewAgent(dataplane.AgentConfig{
		Source: st, Dataplane: proxy, HealthChecks: true,
		Node: dataplane.Node{Name: "gw-1", Addresses: []netip.Addr{netip.MustParseAddr("127.0.0.1")}},
	})
	gs, _ := server.New(st, server.Options{Health: agent, NodeID: "gw-1"})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(lis)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { agent.Run(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		<-done
		proxy.Cleanup(context.Background())
		conn.Close()
		gs.Stop()
		st.Close()
	})
	return &userspaceEnv{
		api: portalv1.NewLoadBalancerServiceClient(conn), agent: agent,
		ext: netip.AddrFrom4([4]byte{127, 95, byte(n), 1}),
	}
}

func (e *userspaceEnv) API() portalv1.LoadBalancerServiceClient { return e.api }

func (e *userspaceEnv) Programmed(t *testing.T, rv uint64) {
	t.Helper()
	harness.Eventually(t, 5*time.Second, "dataplane programmed", func() error {
		if got := e.agent.SyncedRevision(); got < rv {
			return fmt.Errorf("programmed revision %d < %d", got, rv)
		}
		return nil
	})
}

func (e *userspaceEnv) Backend(t *testing.T, name string) *harness.Backend {
	return harness.StartBackend(t, name, "127.0.0.1:0")
}

func (e *userspaceEnv) Client(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{127, 0, 0, byte(10 + i)})
}

func (e *userspaceEnv) NodeAddr() netip.Addr   { return netip.MustParseAddr("127.0.0.1") }
func (e *userspaceEnv) ExternalIP() netip.Addr { return e.ext }

func (e *userspaceEnv) Ask(t *testing.T, client int, addr netip.AddrPort) (harness.Reply, error) {
	return askFrom(e.Client(client), addr)
}

func (e *userspaceEnv) AskUDP(t *testing.T, client int, addr netip.AddrPort) (harness.Reply, error) {
	return harness.AskUDP(addr.String(), "ping", 2*time.Second)
}

// TestUserspaceBehaviour runs the dataplane behaviour table through the
// whole node (API -> raft -> watch -> agent -> proxy) on loopback.
func TestUserspaceBehaviour(t *testing.T) {
	runBehaviour(t, "userspace", newUserspaceEnv)
}
