//go:build linux

package iptables

import (
	"context"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/portal-lb/portal/dataplane"
	"github.com/portal-lb/portal/test/harness"
)

// normalize reduces iptables-save output to chain -> rules, with
// probabilities cut to 6 digits (the kernel stores them in fixed point).
func normalize(save string) map[string][]string {
	prob := regexp.MustCompile(`(--probability 0\.\d{6})\d+`)
	out := map[string][]string{}
	for _, line := range strings.Split(save, "\n") {
		switch {
		case strings.HasPrefix(line, ":"):
			out[strings.Fields(line[1:])[0]] = nil
		case strings.HasPrefix(line, "-A "):
			chain := strings.Fields(line)[1]
			out[chain] = append(out[chain], prob.ReplaceAllString(line, "$1"))
		}
	}
	return out
}

// TestFakeMatchesKernel runs one sequence of syncs against the fake and
// against the real iptables in a namespace, and compares the tables after
// every step: the fake is only as good as this check.
func TestFakeMatchesKernel(t *testing.T) {
	harness.RequireRoot(t, "iptables", "iptables-save", "iptables-restore")
	host := harness.NewTopology(t).AddHost("gw", "198.18.1.1/24")
	fake := NewFake()
	opts := Options{ClusterCIDR: netip.MustParsePrefix("198.18.0.0/16")}
	pf, pk := New(Config{Runner: fake, Options: opts}), New(Config{Runner: ExecRunner{}, Options: opts})
	ctx := context.Background()
	lb := desired(2, 2, 0)
	lb.Servers = append(lb.Servers, &dataplane.VirtualServer{Service: "default/lb", Port: "http", Kind: dataplane.KindLoadBalancer,
		Protocol: "TCP", Frontend: lb.Servers[0].Frontend, Backends: lb.Servers[0].Backends})
	rich := desired(2, 2, 0)
	rich.Servers[0].Affinity = 30 * time.Second
	rich.Servers = append(rich.Servers,
		&dataplane.VirtualServer{Service: "default/fw", Port: "https", Kind: dataplane.KindLoadBalancer, Protocol: "TCP",
			Frontend: netip.MustParseAddrPort("198.19.1.1:443"), SourceRanges: []netip.Prefix{netip.MustParsePrefix("198.18.1.0/24")},
			Backends: lb.Servers[0].Backends},
		&dataplane.VirtualServer{Service: "default/fw", Port: "https", Kind: dataplane.KindNodePort, Protocol: "TCP", Local: true,
			Frontend: netip.MustParseAddrPort("198.18.1.1:30443"), Backends: lb.Servers[0].Backends},
		&dataplane.VirtualServer{Service: "default/dns", Port: "dns", Kind: dataplane.KindClusterIP, Protocol: "UDP",
			Frontend: netip.MustParseAddrPort("198.19.0.53:53"), Backends: lb.Servers[0].Backends})
	steps := []struct {
		name string
		d    *dataplane.Desired
	}{
		{"first (full) sync", desired(3, 3, 0)},
		{"one endpoint moved", desired(3, 3, 1)},
		{"a service removed", desired(2, 3, 1)},
		{"no endpoints", desired(2, 0, 0)},
		{"external frontend", lb},
		{"source ranges, Local, affinity, UDP", rich},
		{"cluster CIDR masquerade", desired(1, 1, 0)},
	}
	for _, step := range steps {
		if err := pf.Sync(ctx, step.d); err != nil {
			t.Fatalf("%s: fake: %v", step.name, err)
		}
		if err := host.Do(func() error { return pk.Sync(ctx, step.d) }); err != nil {
			t.Fatalf("%s: kernel: %v", step.name, err)
		}
		compare(t, step.name, fake, host)
	}
	if err := pf.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if err := host.Do(func() error { return pk.Cleanup(ctx) }); err != nil {
		t.Fatal(err)
	}
	compare(t, "cleanup", fake, host)
}

func compare(t *testing.T, step string, fake *Fake, host *harness.Host) {
	t.Helper()
	for _, table := range []string{"nat", "filter"} {
		fs, _ := fake.Save(context.Background(), table)
		var ks []byte
		if err := host.Do(func() (err error) { ks, err = ExecRunner{}.Save(context.Background(), table); return err }); err != nil {
			t.Fatal(err)
		}
		f, k := normalize(string(fs)), normalize(string(ks))
		for chain, rules := range k {
			if !slices.Equal(f[chain], rules) {
				t.Fatalf("%s: %s %s differs:\nkernel:\n%s\nfake:\n%s", step, table, chain, strings.Join(rules, "\n"), strings.Join(f[chain], "\n"))
			}
		}
		for chain := range f {
			if _, ok := k[chain]; !ok {
				t.Fatalf("%s: %s: the fake has chain %s, the kernel has not", step, table, chain)
			}
		}
	}
}

// TestPartialSyncOnFake is the partial-sync check without root.
func TestPartialSyncOnFake(t *testing.T) {
	fake := NewFake()
	p := New(Config{Runner: fake})
	ctx := context.Background()
	if err := p.Sync(ctx, desired(3, 3, 0)); err != nil {
		t.Fatal(err)
	}
	if err := p.Sync(ctx, desired(3, 3, 0)); err != nil || fake.Restores != 1 {
		t.Fatalf("unchanged state restored again (%d restores, %v)", fake.Restores, err)
	}
	if err := p.Sync(ctx, desired(3, 3, 1)); err != nil {
		t.Fatal(err)
	}
	nat, _ := fake.Save(ctx, "nat")
	oldSep := hashName("PORTAL-SEP-", "default/svca:http/tcp", "198.18.2.10:8080")
	newSep := hashName("PORTAL-SEP-", "default/svca:http/tcp", "198.18.2.101:8080")
	if strings.Contains(string(nat), oldSep) || !strings.Contains(string(nat), newSep) {
		t.Fatalf("after moving an endpoint:\n%s", nat)
	}
	if err := p.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	for _, table := range []string{"nat", "filter"} {
		out, _ := fake.Save(ctx, table)
		if strings.Contains(string(out), "PORTAL-") {
			t.Fatalf("after cleanup:\n%s", out)
		}
	}
}
