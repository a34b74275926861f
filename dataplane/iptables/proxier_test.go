//go:build linux

package iptables

import (
	"context"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/portal-lb/portal/dataplane"
	"github.com/portal-lb/portal/test/harness"
)

// recorder wraps the real runner and keeps what each restore wrote.
type recorder struct {
	ExecRunner
	mu     sync.Mutex
	inputs []string
}

func (r *recorder) Restore(ctx context.Context, input []byte) error {
	r.mu.Lock()
	r.inputs = append(r.inputs, string(input))
	r.mu.Unlock()
	return r.ExecRunner.Restore(ctx, input)
}

func (r *recorder) last() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.inputs) == 0 {
		return ""
	}
	return r.inputs[len(r.inputs)-1]
}

func desired(services, endpoints int, moved int) *dataplane.Desired {
	d := &dataplane.Desired{}
	for s := 0; s < services; s++ {
		v := &dataplane.VirtualServer{Service: "default/svc" + string(rune('a'+s)), Port: "http", Kind: dataplane.KindClusterIP, Protocol: "TCP",
			Frontend: netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 19, 0, byte(1 + s)}), 80)}
		for e := 0; e < endpoints; e++ {
			last := byte(10 + e)
			if s == 0 && e == 0 && moved > 0 {
				last = byte(100 + moved)
			}
			v.Backends = append(v.Backends, dataplane.Backend{Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, byte(2 + s), last}), 8080)})
		}
		d.Servers = append(d.Servers, v)
	}
	return d
}

// TestPartialSyncWritesOnlyChangedChains runs the real iptables in a
// namespace: a one-endpoint change rewrites that service's chains and the
// endpoint's, nothing else; the kernel then holds exactly the ruleset.
func TestPartialSyncWritesOnlyChangedChains(t *testing.T) {
	harness.RequireRoot(t, "iptables", "iptables-save", "iptables-restore")
	host := harness.NewTopology(t).AddHost("gw", "198.18.1.1/24")
	rec := &recorder{}
	p := New(Config{Runner: rec})
	ctx := context.Background()
	run := func(d *dataplane.Desired) {
		t.Helper()
		if err := host.Do(func() error { return p.Sync(ctx, d) }); err != nil {
			t.Fatal(err)
		}
	}
	run(desired(3, 3, 0))
	full := rec.last()
	if !strings.Contains(full, ":PORTAL-SERVICES") || strings.Count(full, ":PORTAL-SEP-") != 9 {
		t.Fatalf("first sync is not full:\n%s", full)
	}
	run(desired(3, 3, 0))
	if n := len(rec.inputs); n != 1 {
		t.Fatalf("an unchanged state was written again (%d restores)", n)
	}
	run(desired(3, 3, 1))
	partial := rec.last()
	svc := hashName("PORTAL-SVC-", "default/svca:http/tcp")
	oldSep := hashName("PORTAL-SEP-", "default/svca:http/tcp", "198.18.2.10:8080")
	newSep := hashName("PORTAL-SEP-", "default/svca:http/tcp", "198.18.2.101:8080")
	for _, want := range []string{":" + svc, ":" + newSep, "-X " + oldSep} {
		if !strings.Contains(partial, want) {
			t.Fatalf("partial sync lacks %q:\n%s", want, partial)
		}
	}
	if strings.Contains(partial, ":PORTAL-SERVICES") || strings.Contains(partial, "svcb") || strings.Count(partial, ":PORTAL-SEP-") != 2 {
		t.Fatalf("partial sync rewrote unchanged chains:\n%s", partial)
	}
	// What the kernel holds is what Build says.
	var saved string
	host.Do(func() error { out, err := rec.Save(ctx, "nat"); saved = string(out); return err })
	// (The kernel stores probabilities in fixed point: compare 6 digits.)
	prob := regexp.MustCompile(`(--probability 0\.\d{6})\d+`)
	saved = prob.ReplaceAllString(saved, "$1")
	for _, line := range Build(desired(3, 3, 1), Options{})["nat"][svc] {
		if line = prob.ReplaceAllString(line, "$1"); !strings.Contains(saved, line) {
			t.Fatalf("kernel lacks %q:\n%s", line, saved)
		}
	}
	if strings.Contains(saved, oldSep) {
		t.Fatal("the removed endpoint's chain is still in the kernel")
	}
	// Cleanup leaves no PORTAL- chain and no jump.
	if err := host.Do(func() error { return p.Cleanup(ctx) }); err != nil {
		t.Fatal(err)
	}
	for _, table := range []string{"nat", "filter"} {
		host.Do(func() error { out, err := rec.Save(ctx, table); saved = string(out); return err })
		if strings.Contains(saved, "PORTAL-") {
			t.Fatalf("%s after cleanup:\n%s", table, saved)
		}
	}
}
