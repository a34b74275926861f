package cluster

import (
	"bytes"
	"fmt"
	"io"
	"math/rand"
	"testing"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	raftv1 "github.com/portal-lb/portal/proto/portal/raft/v1"
)

// randomLog builds a mix of valid and conflicting commands.
func randomLog(seed int64, n int) []*raft.Log {
	r := rand.New(rand.NewSource(seed))
	types := []string{"ClusterIP", "NodePort", "LoadBalancer", "ExternalName"}
	cfg := testConfig()
	cfg.ServiceCidr, cfg.LbPool, cfg.NodePortMin, cfg.NodePortMax = "198.18.0.0/27", "198.19.0.0/28", 30000, 30040
	cmds := []*raftv1.Command{{Op: &raftv1.Command_SetConfig{SetConfig: &raftv1.SetConfig{Config: cfg}}}}
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("s%d", r.Intn(20))
		var c *raftv1.Command
		switch k := r.Intn(10); {
		case k < 5:
			s := svc(name, types[r.Intn(len(types))], int32(80+r.Intn(3)), int32(443))
			if s.Spec.Type == "ExternalName" {
				s.Spec.Ports, s.Spec.ExternalName = nil, "example.com"
			}
			if r.Intn(4) == 0 && s.Spec.Type != "ExternalName" {
				s.Spec.ClusterIp = fmt.Sprintf("198.18.0.%d", 1+r.Intn(30))
			}
			c = &raftv1.Command{Op: &raftv1.Command_UpdateService{UpdateService: &raftv1.UpdateService{Service: s, Upsert: true}}}
		case k < 7:
			c = &raftv1.Command{Op: &raftv1.Command_DeleteService{DeleteService: &raftv1.DeleteService{Namespace: "default", Name: name}}}
		case k < 9:
			c = &raftv1.Command{Op: &raftv1.Command_PutEndpoints{PutEndpoints: &raftv1.PutEndpoints{Endpoints: endpoints(name, fmt.Sprintf("198.18.9.%d", r.Intn(9)))}}}
		default:
			c = &raftv1.Command{Op: &raftv1.Command_DeleteEndpoints{DeleteEndpoints: &raftv1.DeleteEndpoints{Namespace: "default", Name: name}}}
		}
		cmds = append(cmds, c)
	}
	logs := make([]*raft.Log, len(cmds))
	for i, c := range cmds {
		c.Time = timestamppb.New(timestamppb.Now().AsTime().Truncate(0))
		c.Uid = fmt.Sprintf("uid-%d", i)
		data, _ := proto.Marshal(c)
		logs[i] = &raft.Log{Index: uint64(i + 1), Type: raft.LogCommand, Data: data}
	}
	return logs
}

type bufSink struct{ bytes.Buffer }

func (b *bufSink) ID() string    { return "test" }
func (b *bufSink) Cancel() error { return nil }
func (b *bufSink) Close() error  { return nil }

func snapshotBytes(t *testing.T, f *fsm) []byte {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink bufSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	return sink.Bytes()
}

// Every replica applying the same log must reach byte-identical state, and a
// snapshot restored elsewhere must continue identically.
func TestFSMDeterministicAndSnapshotRoundTrip(t *testing.T) {
	for seed := int64(1); seed <= 20; seed++ {
		logs := randomLog(seed, 300)
		a, b := newFSM(100), newFSM(100)
		half := len(logs) / 2
		for _, l := range logs[:half] {
			a.Apply(l)
			b.Apply(l)
		}
		// c restores a's snapshot taken halfway and applies the rest.
		c := newFSM(100)
		if err := c.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, a)))); err != nil {
			t.Fatal(err)
		}
		for _, l := range logs[half:] {
			a.Apply(l)
			b.Apply(l)
			c.Apply(l)
		}
		sa, sb, sc := snapshotBytes(t, a), snapshotBytes(t, b), snapshotBytes(t, c)
		if !bytes.Equal(sa, sb) || !bytes.Equal(sa, sc) {
			t.Fatalf("seed %d: replicas diverged", seed)
		}
		// Holdings are consistent with the objects.
		for k, s := range a.st.services {
			h := holdingsOf(s)
			if h.clusterIP.IsValid() && a.st.clusterIPs[h.clusterIP] != k {
				t.Fatalf("seed %d: %s holds %s but the allocator says %q", seed, k, h.clusterIP, a.st.clusterIPs[h.clusterIP])
			}
			for _, p := range h.nodePorts {
				if a.st.nodePorts[p] != k {
					t.Fatalf("seed %d: %s holds node port %d but the allocator says %q", seed, k, p, a.st.nodePorts[p])
				}
			}
		}
		held := len(a.st.clusterIPs)
		count := 0
		for _, s := range a.st.services {
			if holdingsOf(s).clusterIP.IsValid() {
				count++
			}
		}
		if held != count {
			t.Fatalf("seed %d: %d addresses held by %d services (leak)", seed, held, count)
		}
	}
}

func TestFSMRejectsUndecodableEntry(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("an undecodable entry was applied silently")
		}
	}()
	newFSM(10).Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: []byte{0xff, 0xff, 0xff}})
}

func TestPoolEdges(t *testing.T) {
	p, _ := newIPPool("198.18.0.0/30")
	if p.size() != 2 || p.addr(p.lo).String() != "198.18.0.1" || p.addr(p.hi).String() != "198.18.0.2" {
		t.Fatalf("v4 /30: %v %v", p.addr(p.lo), p.addr(p.hi))
	}
	p6, _ := newIPPool("2001:db8::/120")
	if p6.addr(p6.lo).String() != "2001:db8::1" || p6.addr(p6.hi).String() != "2001:db8::ff" {
		t.Fatalf("v6: %v %v", p6.addr(p6.lo), p6.addr(p6.hi))
	}
	big, _ := newIPPool("2001:db8::/64")
	if big.size() != 1<<32-1 {
		t.Fatalf("capped size %d", big.size())
	}
	if off, ok := p6.offset(p6.addr(7)); !ok || off != 7 {
		t.Fatal("offset round trip")
	}
	if _, ok := p.offset(p.addr(0)); ok {
		t.Fatal("network address usable")
	}
	p32, _ := newIPPool("198.18.0.5/32")
	if p32.size() != 1 || p32.addr(p32.lo).String() != "198.18.0.5" {
		t.Fatal("/32")
	}
}
