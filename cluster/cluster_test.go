package cluster

import (
	"context"
	"fmt"
	"io"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	portalv1 "github.com/portal-lb/portal/proto/portal/v1"
)

// node is one in-process member with a fixed raft address (so that it can
// restart on the same address).
type node struct {
	id, dir, addr string
	s             *Store
}

func (n *node) open(t *testing.T, bootstrap bool) {
	t.Helper()
	s, err := Open(Config{
		NodeID: n.id, DataDir: n.dir, RaftAddr: n.addr, GRPCAddr: "127.0.0.1:1", Bootstrap: bootstrap, Cluster: testConfig(),
		HeartbeatTimeout: 150 * time.Millisecond, ElectionTimeout: 150 * time.Millisecond, RaftLog: io.Discard,
		SnapshotThreshold: 64, TrailingLogs: 16,
	})
	if err != nil {
		t.Fatal(err)
	}
	n.s = s
}

func freeRaftAddr(t *testing.T) string {
	t.Helper()
	s, err := Open(Config{NodeID: "probe", DataDir: t.TempDir(), RaftAddr: "127.0.0.1:0", RaftLog: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	addr := s.RaftAddr()
	s.Close()
	return addr
}

// newCluster starts n1 (bootstrapped) and joins n2..nN through the leader.
func newCluster(t *testing.T, size int) []*node {
	t.Helper()
	nodes := make([]*node, size)
	for i := range nodes {
		nodes[i] = &node{id: fmt.Sprintf("n%d", i+1), dir: t.TempDir(), addr: freeRaftAddr(t)}
	}
	t.Cleanup(func() {
		for _, n := range nodes {
			if n.s != nil {
				n.s.Close()
			}
		}
	})
	nodes[0].open(t, true)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := nodes[0].s.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	if err := nodes[0].s.EnsureConfig(ctx); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes[1:] {
		n.open(t, false)
		if _, err := nodes[0].s.Join(ctx, n.s.SelfJoinRequest()); err != nil {
			t.Fatal(err)
		}
	}
	return nodes
}

func leaderOf(t *testing.T, nodes []*node) *node {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, n := range nodes {
			if n.s != nil && n.s.IsLeader() {
				return n
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("no leader")
	return nil
}

// converged waits until every open node has the service.
func converged(t *testing.T, nodes []*node, name string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for _, n := range nodes {
		if n.s == nil {
			continue
		}
		for {
			if _, err := n.s.GetService(ctx, "default", name, false); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s never saw service %s", n.id, name)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func TestThreeNodesReplicateAndSurviveLeaderLoss(t *testing.T) {
	nodes := newCluster(t, 3)
	c, err := nodes[1].s.Cluster(ctx)
	if err != nil || len(c.GetNodes()) != 3 || c.GetLeader() != "n1" {
		t.Fatalf("cluster %v %v", c, err)
	}
	leader := leaderOf(t, nodes)
	created, err := leader.s.CreateService(ctx, svc("a", "LoadBalancer", 80))
	if err != nil {
		t.Fatal(err)
	}
	converged(t, nodes, "a")
	// Every replica allocated identically.
	for _, n := range nodes {
		got, _ := n.s.GetService(ctx, "default", "a", false)
		if got.GetSpec().GetClusterIp() != created.GetSpec().GetClusterIp() || got.GetMetadata().GetResourceVersion() != created.GetMetadata().GetResourceVersion() {
			t.Fatalf("%s diverged: %v", n.id, got)
		}
	}
	// A follower refuses writes (the API layer forwards them).
	for _, n := range nodes {
		if n != leader {
			if _, err := n.s.CreateService(ctx, svc("x", "ClusterIP", 80)); status.Code(err) != codes.Unavailable {
				t.Fatalf("write on follower %s: %v", n.id, err)
			}
			break
		}
	}
	// Lose the leader: the others elect a new one and keep accepting writes.
	leader.s.Close()
	leader.s = nil
	next := leaderOf(t, nodes)
	if _, err := next.s.CreateService(ctx, svc("b", "ClusterIP", 80)); err != nil {
		t.Fatal(err)
	}
	// The old leader restarts on its data and catches up.
	leader.open(t, false)
	converged(t, nodes, "b")
	// Linearizable read on the leader; NOT leader error on a follower.
	if _, err := next.s.GetService(ctx, "default", "b", true); err != nil {
		t.Fatal(err)
	}
	if _, err := leader.s.GetService(ctx, "default", "b", true); status.Code(err) != codes.Unavailable {
		t.Fatalf("consistent read on a follower: %v", err)
	}
}

func TestSnapshotInstallToWipedNode(t *testing.T) {
	nodes := newCluster(t, 3)
	leader := leaderOf(t, nodes)
	var victim *node
	for _, n := range nodes {
		if n != leader {
			victim = n
			break
		}
	}
	victim.s.Close()
	victim.s = nil
	// Enough writes that the log the victim would need is compacted away.
	for i := 0; i < 200; i++ {
		if _, err := leader.s.CreateService(ctx, svc(fmt.Sprintf("s%d", i), "ClusterIP", 80)); err != nil {
			t.Fatal(err)
		}
	}
	// Wipe it: same id and address, empty data directory.
	victim.dir = t.TempDir()
	victim.open(t, false)
	converged(t, nodes, "s199")
	want, _, _ := leader.s.ListServices(ctx, "", false)
	got, _, _ := victim.s.ListServices(ctx, "", false)
	if len(got) != len(want) {
		t.Fatalf("wiped node has %d services, want %d", len(got), len(want))
	}
	if victim.s.Config().GetServiceCidr() == "" {
		t.Fatal("allocation configuration not restored by the snapshot")
	}
}

func TestRemoveAndTransfer(t *testing.T) {
	nodes := newCluster(t, 3)
	leader := leaderOf(t, nodes)
	var target *node
	for _, n := range nodes {
		if n != leader {
			target = n
			break
		}
	}
	got, err := leader.s.TransferLeadership(ctx, target.id)
	if err != nil || got != target.id {
		t.Fatalf("transfer to %s: %q %v", target.id, got, err)
	}
	if err := target.s.RemoveNode(ctx, leader.id); err != nil {
		t.Fatal(err)
	}
	c, _ := target.s.Cluster(ctx)
	if len(c.GetNodes()) != 2 {
		t.Fatalf("after remove: %v", c.GetNodes())
	}
	for _, n := range c.GetNodes() {
		if n.GetId() == leader.id {
			t.Fatal("removed node still listed")
		}
	}
	// The removed node knows it is out and says so.
	deadline := time.Now().Add(5 * time.Second)
	for leader.s.Ready() == nil && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if err := leader.s.Ready(); err == nil {
		t.Fatal("a removed node still reports ready")
	}
	if err := target.s.RemoveNode(ctx, "nope"); status.Code(err) != codes.NotFound {
		t.Fatalf("remove unknown: %v", err)
	}
}

// TestRecoverAfterQuorumLoss: two of three nodes are lost for good; the
// survivor's data is recovered into a single-node cluster that serves
// every object and accepts writes.
func TestRecoverAfterQuorumLoss(t *testing.T) {
	nodes := newCluster(t, 3)
	leader := leaderOf(t, nodes)
	if _, err := leader.s.CreateService(ctx, svc("kept", "LoadBalancer", 80)); err != nil {
		t.Fatal(err)
	}
	converged(t, nodes, "kept")
	for _, n := range nodes {
		n.s.Close()
		n.s = nil
	}
	survivor := nodes[2]
	if err := Recover(Config{NodeID: survivor.id, DataDir: survivor.dir, RaftAddr: survivor.addr}); err != nil {
		t.Fatal(err)
	}
	survivor.open(t, false)
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := survivor.s.WaitLeader(wctx); err != nil {
		t.Fatal(err)
	}
	if _, err := survivor.s.GetService(ctx, "default", "kept", true); err != nil {
		t.Fatal(err)
	}
	if _, err := survivor.s.CreateService(ctx, svc("after", "ClusterIP", 80)); err != nil {
		t.Fatal(err)
	}
	c, _ := survivor.s.Cluster(ctx)
	if len(c.GetNodes()) != 1 || c.GetLeader() != survivor.id {
		t.Fatalf("recovered cluster %v", c)
	}
}

// TestWatchOnFollowerSurvivesLeaderChange: a watch served by a follower
// keeps delivering events written through the next leader.
func TestWatchOnFollowerSurvivesLeaderChange(t *testing.T) {
	nodes := newCluster(t, 3)
	leader := leaderOf(t, nodes)
	var follower *node
	for _, n := range nodes {
		if n != leader {
			follower = n
			break
		}
	}
	events := make(chan string, 10)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go follower.s.WatchServices(wctx, "", 0, func(r *portalv1.WatchServicesResponse) error {
		events <- r.GetType() + " " + r.GetService().GetMetadata().GetName()
		return nil
	})
	if e := <-events; e != "BOOKMARK " {
		t.Fatalf("first event %q", e)
	}
	leader.s.Close()
	leader.s = nil
	next := leaderOf(t, nodes)
	if _, err := next.s.CreateService(ctx, svc("after", "ClusterIP", 80)); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-events:
		if e != "ADDED after" {
			t.Fatalf("event %q", e)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the follower's watch saw nothing after the leader changed")
	}
}
