package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// faultNet connects in-process raft nodes over real TCP, and can cut pairs
// of them apart: blocked pairs cannot dial each other, and cutting closes
// every open connection so that nothing stale keeps flowing.
type faultNet struct {
	mu      sync.Mutex
	blocked map[[2]string]bool
	streams map[string]*faultStream
}

func newFaultNet() *faultNet {
	return &faultNet{blocked: map[[2]string]bool{}, streams: map[string]*faultStream{}}
}

func (n *faultNet) isBlocked(a, b string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.blocked[[2]string{a, b}]
}

// isolate cuts addr off from every other node (nil heals everything).
func (n *faultNet) isolate(addr string) {
	n.mu.Lock()
	n.blocked = map[[2]string]bool{}
	if addr != "" {
		for other := range n.streams {
			if other != addr {
				n.blocked[[2]string{addr, other}] = true
				n.blocked[[2]string{other, addr}] = true
			}
		}
	}
	streams := make([]*faultStream, 0, len(n.streams))
	for _, s := range n.streams {
		streams = append(streams, s)
	}
	n.mu.Unlock()
	for _, s := range streams {
		s.closeConns()
	}
}

type faultStream struct {
	net.Listener
	net  *faultNet
	self string
	mu   sync.Mutex
	open map[net.Conn]bool
}

func (n *faultNet) listen(t *testing.T, addr string) *faultStream {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s := &faultStream{Listener: ln, net: n, self: ln.Addr().String(), open: map[net.Conn]bool{}}
	n.mu.Lock()
	n.streams[s.self] = s
	n.mu.Unlock()
	return s
}

func (s *faultStream) track(c net.Conn) net.Conn {
	s.mu.Lock()
	s.open[c] = true
	s.mu.Unlock()
	return c
}

func (s *faultStream) closeConns() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.open {
		c.Close()
	}
	s.open = map[net.Conn]bool{}
}

func (s *faultStream) Accept() (net.Conn, error) {
	c, err := s.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return s.track(c), nil
}

func (s *faultStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	if s.net.isBlocked(s.self, string(addr)) {
		return nil, errors.New("partitioned")
	}
	c, err := net.DialTimeout("tcp", string(addr), timeout)
	if err != nil {
		return nil, err
	}
	return s.track(c), nil
}

func (s *faultStream) Close() error {
	s.closeConns()
	return s.Listener.Close()
}

// kvInput is one client operation on a register (a service's label).
type kvInput struct {
	write bool
	key   string
	value string
}

// kvOutput is what a read returned; unknown marks a write whose outcome the
// client never learned (it may or may not have taken effect).
type kvOutput struct {
	value   string
	unknown bool
}

var registerModel = porcupine.Model{
	Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range h {
			k := op.Input.(kvInput).key
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() interface{} { return "" },
	Step: func(state, input, output interface{}) (bool, interface{}) {
		in, out := input.(kvInput), output.(kvOutput)
		if in.write {
			return true, in.value
		}
		return out.value == state.(string), state
	},
	DescribeOperation: func(input, output interface{}) string {
		in, out := input.(kvInput), output.(kvOutput)
		if in.write {
			return fmt.Sprintf("put(%s, %s)", in.key, in.value)
		}
		return fmt.Sprintf("get(%s) -> %q", in.key, out.value)
	},
}

// TestLinearizableUnderFaults records concurrent writes and linearizable
// reads through every node while a nemesis isolates, kills and restarts
// nodes, then checks the history with porcupine. PORTAL_LINEARIZABILITY_OPS
// sets the operation count (default 10000; `make soak` runs more).
func TestLinearizableUnderFaults(t *testing.T) {
	target := 10000
	if v, err := strconv.Atoi(os.Getenv("PORTAL_LINEARIZABILITY_OPS")); err == nil && v > 0 {
		target = v
	}
	fnet := newFaultNet()
	nodes := make([]*node, 3)
	var mu sync.Mutex // guards nodes[i].s against the nemesis
	open := func(n *node, bootstrap bool) {
		stream := fnet.listen(t, n.addr)
		s, err := Open(Config{
			NodeID: n.id, DataDir: n.dir, RaftAddr: n.addr, GRPCAddr: "127.0.0.1:1", Bootstrap: bootstrap, Cluster: testConfig(),
			HeartbeatTimeout: 150 * time.Millisecond, ElectionTimeout: 150 * time.Millisecond, RaftLog: io.Discard,
			SnapshotThreshold: 512, TrailingLogs: 128, RaftStream: stream,
		})
		if err != nil {
			t.Error(err)
			return
		}
		mu.Lock()
		n.s = s
		mu.Unlock()
	}
	for i := range nodes {
		nodes[i] = &node{id: fmt.Sprintf("n%d", i+1), dir: t.TempDir(), addr: freeRaftAddr(t)}
	}
	open(nodes[0], true)
	ctx := context.Background()
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	if err := nodes[0].s.WaitLeader(wctx); err != nil {
		t.Fatal(err)
	}
	if err := nodes[0].s.EnsureConfig(wctx); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes[1:] {
		open(n, false)
		if _, err := nodes[0].s.Join(wctx, n.s.SelfJoinRequest()); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, n := range nodes {
			if n.s != nil {
				n.s.Close()
			}
		}
	})

	start := time.Now()
	now := func() int64 { return int64(time.Since(start)) }
	var (
		histMu  sync.Mutex
		history []porcupine.Operation
		done    atomic.Int64
		stop    = make(chan struct{})
		wg      sync.WaitGroup
	)
	keys := []string{"k0", "k1", "k2", "k3", "k4"}
	pick := func(r *rand.Rand) *Store {
		mu.Lock()
		defer mu.Unlock()
		for {
			if n := nodes[r.Intn(len(nodes))]; n.s != nil {
				return n.s
			}
		}
	}
	for c := 0; c < 4; c++ {
		wg.Add(1)
		go func(client int) {
			defer wg.Done()
			r := rand.New(rand.NewSource(int64(client)))
			for seq := 0; ; seq++ {
				select {
				case <-stop:
					return
				default:
				}
				key := keys[r.Intn(len(keys))]
				s := pick(r)
				octx, ocancel := context.WithTimeout(ctx, 2*time.Second)
				call := now()
				if r.Intn(2) == 0 {
					value := fmt.Sprintf("c%d-%d", client, seq)
					svc := svc(key, "ClusterIP", 80)
					svc.Metadata.Labels = map[string]string{"v": value}
					_, _, err := s.UpdateService(octx, svc, true)
					ret := now()
					ocancel()
					op := porcupine.Operation{ClientId: client, Input: kvInput{write: true, key: key, value: value}, Call: call, Return: ret}
					switch {
					case err == nil:
					case isNotLeader(err):
						continue // refused before it was proposed: no effect
					default:
						// Unknown outcome: it may apply at any time after the call.
						op.Output, op.Return = kvOutput{unknown: true}, 1<<62
					}
					if op.Output == nil {
						op.Output = kvOutput{}
					}
					histMu.Lock()
					history = append(history, op)
					histMu.Unlock()
				} else {
					got, err := s.GetService(octx, "default", key, true)
					ret := now()
					ocancel()
					if err != nil && status.Code(err) != codes.NotFound {
						continue // a failed read has no effect
					}
					histMu.Lock()
					history = append(history, porcupine.Operation{ClientId: client, Input: kvInput{key: key},
						Output: kvOutput{value: got.GetMetadata().GetLabels()["v"]}, Call: call, Return: ret})
					histMu.Unlock()
				}
				if done.Add(1) >= int64(target) {
					return
				}
			}
		}(c)
	}
	// The nemesis: isolate a node, heal, kill and restart one.
	wg.Add(1)
	faults := 0
	go func() {
		defer wg.Done()
		r := rand.New(rand.NewSource(99))
		for done.Load() < int64(target) {
			time.Sleep(time.Duration(200+r.Intn(300)) * time.Millisecond)
			victim := nodes[r.Intn(len(nodes))]
			switch r.Intn(3) {
			case 0:
				fnet.isolate(victim.addr)
				time.Sleep(time.Duration(300+r.Intn(400)) * time.Millisecond)
				fnet.isolate("")
			case 1:
				mu.Lock()
				s := victim.s
				victim.s = nil
				mu.Unlock()
				s.Close()
				time.Sleep(time.Duration(100+r.Intn(300)) * time.Millisecond)
				open(victim, false)
			default:
				fnet.isolate("")
			}
			faults++
		}
	}()
	deadline := time.After(5 * time.Minute)
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-deadline:
		close(stop)
		<-finished
		t.Fatalf("only %d of %d operations in 5 minutes", done.Load(), target)
	}
	writes, reads := 0, 0
	for _, op := range history {
		if op.Input.(kvInput).write {
			writes++
		} else {
			reads++
		}
	}
	res, info := porcupine.CheckOperationsVerbose(registerModel, history, 2*time.Minute)
	t.Logf("%d operations (%d writes, %d reads) under %d faults in %v; porcupine: %v",
		len(history), writes, reads, faults, time.Since(start).Round(time.Millisecond), res)
	if res != porcupine.Ok {
		path := t.TempDir() + "/history.html"
		if f, err := os.Create(path); err == nil {
			_ = porcupine.Visualize(registerModel, info, f)
			f.Close()
		}
		t.Fatalf("history is not linearizable (%v); visualization: %s", res, path)
	}
	if len(history) < target*9/10 {
		t.Fatalf("only %d operations recorded", len(history))
	}
}

// isNotLeader tells a refusal raised before proposing (safe to drop).
func isNotLeader(err error) bool {
	return status.Code(err) == codes.Unavailable && strings.Contains(status.Convert(err).Message(), notLeaderText)
}
