package iptables

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/portal-lb/portal/dataplane"
)

func bigDesired(n, eps int) *dataplane.Desired {
	d := &dataplane.Desired{}
	for s := 0; s < n; s++ {
		v := &dataplane.VirtualServer{Service: fmt.Sprintf("default/svc-%d", s), Port: "http", Kind: dataplane.KindClusterIP, Protocol: "TCP",
			Frontend: netip.AddrPortFrom(netip.AddrFrom4([4]byte{100, 64 + byte(s>>16), byte(s >> 8), byte(s)}), 80)}
		for e := 0; e < eps; e++ {
			v.Backends = append(v.Backends, dataplane.Backend{Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(s >> 8), byte(s), byte(10 + e)}), 8080)})
		}
		d.Servers = append(d.Servers, v)
	}
	return d
}

// BenchmarkBuild measures rule generation and rendering for 10k services
// with 10 endpoints (the CPU part of a full sync).
func BenchmarkBuild(b *testing.B) {
	d := bigDesired(10000, 10)
	for i := 0; i < b.N; i++ {
		r := Build(d, Options{})
		var chains []string
		for c := range r["nat"] {
			chains = append(chains, c)
		}
		_ = r.Restore("nat", chains, nil)
	}
}

func TestBuildShape(t *testing.T) {
	d := bigDesired(2, 3)
	d.Servers[0].Affinity = 10 * time.Second
	r := Build(d, Options{ClusterCIDR: netip.MustParsePrefix("198.18.0.0/16")})
	svc := hashName("PORTAL-SVC-", "default/svc-0:http/tcp")
	rules := r["nat"][svc]
	// 3 affinity checks, then probabilities 1/3, 1/2, and the last catch-all.
	if len(rules) != 6 || !strings.Contains(rules[3], "--probability 0.33333333333") ||
		!strings.Contains(rules[4], "--probability 0.50000000000") || strings.Contains(rules[5], "statistic") {
		t.Fatalf("SVC chain:\n%s", strings.Join(rules, "\n"))
	}
	if len(svc) > 28 {
		t.Fatalf("chain name %s longer than iptables allows", svc)
	}
	if !strings.Contains(strings.Join(r["nat"][chainServices], "\n"), "! -s 198.18.0.0/16") {
		t.Fatal("cluster-cidr masquerade rule missing")
	}
}
