package userspace

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/portal-lb/portal/dataplane"
	"github.com/portal-lb/portal/test/harness"
)

// Each test uses its own 127.96.N.0/24 frontends (loopback, no privileges).
var nextNet atomic.Int32

func frontendIP() netip.Addr {
	n := nextNet.Add(1)
	return netip.AddrFrom4([4]byte{127, 96, byte(100 + n), 1})
}

func newProxy(t *testing.T, mod ...func(*Config)) (*Proxy, *prometheus.Registry) {
	reg := prometheus.NewRegistry()
	cfg := Config{DrainGrace: 200 * time.Millisecond, Registerer: reg, DialTimeout: 300 * time.Millisecond}
	for _, m := range mod {
		m(&cfg)
	}
	p := New(cfg)
	t.Cleanup(func() { p.Cleanup(context.Background()) })
	return p, reg
}

func vs(ip netip.Addr, port uint16, proto string, backends ...*harness.Backend) *dataplane.VirtualServer {
	v := &dataplane.VirtualServer{Service: "default/web", Port: "http", Kind: dataplane.KindClusterIP, Protocol: proto, Frontend: netip.AddrPortFrom(ip, port)}
	for _, b := range backends {
		v.Backends = append(v.Backends, dataplane.Backend{Addr: b.Addr})
	}
	return v
}

func syncOrFail(t *testing.T, p *Proxy, servers ...*dataplane.VirtualServer) {
	t.Helper()
	if err := p.Sync(context.Background(), &dataplane.Desired{Servers: servers}); err != nil {
		t.Fatal(err)
	}
}

func ask(t *testing.T, addr netip.AddrPort) harness.Reply {
	t.Helper()
	r, err := harness.Ask(addr.String(), netip.Addr{}, 2*time.Second)
	if err != nil {
		t.Fatalf("ask %s: %v", addr, err)
	}
	return r
}

func TestRoundRobinReachesEveryBackend(t *testing.T) {
	p, _ := newProxy(t)
	a, b, c := harness.StartBackend(t, "a", "127.0.0.1:0"), harness.StartBackend(t, "b", "127.0.0.1:0"), harness.StartBackend(t, "c", "127.0.0.1:0")
	v := vs(frontendIP(), 8080, "TCP", a, b, c)
	syncOrFail(t, p, v)
	counts := map[string]int{}
	for i := 0; i < 30; i++ {
		counts[ask(t, v.Frontend).Backend]++
	}
	if counts["a"] != 10 || counts["b"] != 10 || counts["c"] != 10 {
		t.Fatalf("round robin uneven: %v", counts)
	}
}

func TestLeastConnectionsPrefersIdleBackend(t *testing.T) {
	p, _ := newProxy(t)
	a, b := harness.StartBackend(t, "a", "127.0.0.1:0"), harness.StartBackend(t, "b", "127.0.0.1:0")
	v := vs(frontendIP(), 8080, "TCP", a, b)
	v.Scheduler = "lc"
	syncOrFail(t, p, v)
	// Hold three connections open; they spread over both backends.
	var held []net.Conn
	busy := map[string]int{}
	for i := 0; i < 3; i++ {
		c, err := net.Dial("tcp", v.Frontend.String())
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
		line, _ := bufio.NewReader(c).ReadString('\n')
		busy[strings.Fields(line)[0]]++
	}
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	idle := "a"
	if busy["a"] > busy["b"] {
		idle = "b"
	}
	// Every new short connection goes to the less busy backend (once the
	// previous one has ended on the proxy too).
	for i := 0; i < 5; i++ {
		harness.Eventually(t, 2*time.Second, "only the held connections open", func() error {
			if n := testutil.ToFloat64(p.m.active.WithLabelValues("default/web:http")); n != 3 {
				return fmt.Errorf("%v active", n)
			}
			return nil
		})
		if got := ask(t, v.Frontend).Backend; got != idle {
			t.Fatalf("least connections picked %s with busy=%v", got, busy)
		}
	}
}

func TestClientIPAffinitySticksAndExpires(t *testing.T) {
	p, _ := newProxy(t)
	a, b := harness.StartBackend(t, "a", "127.0.0.1:0"), harness.StartBackend(t, "b", "127.0.0.1:0")
	v := vs(frontendIP(), 8080, "TCP", a, b)
	v.Affinity = 400 * time.Millisecond
	syncOrFail(t, p, v)
	first := ask(t, v.Frontend).Backend
	for i := 0; i < 10; i++ {
		if got := ask(t, v.Frontend).Backend; got != first {
			t.Fatalf("affinity broken: %s then %s", first, got)
		}
	}
	// Another client address is balanced on its own.
	other := map[string]bool{}
	for i := 0; i < 4; i++ {
		r, err := harness.Ask(v.Frontend.String(), netip.MustParseAddr(fmt.Sprintf("127.0.0.%d", 10+i)), time.Second)
		if err != nil {
			t.Fatal(err)
		}
		other[r.Backend] = true
	}
	if len(other) != 2 {
		t.Fatalf("new clients all went to %v", other)
	}
	// After the timeout without traffic the client is balanced again: over
	// several expiries it must see both backends.
	seen := map[string]bool{first: true}
	for i := 0; i < 6 && len(seen) < 2; i++ {
		time.Sleep(450 * time.Millisecond)
		seen[ask(t, v.Frontend).Backend] = true
	}
	if len(seen) != 2 {
		t.Fatal("affinity never expired")
	}
}

func TestDeadBackendIsSkipped(t *testing.T) {
	p, reg := newProxy(t)
	a := harness.StartBackend(t, "a", "127.0.0.1:0")
	dead := harness.StartBackend(t, "dead", "127.0.0.1:0")
	dead.Close() // refuses connections
	v := vs(frontendIP(), 8080, "TCP", a, dead)
	syncOrFail(t, p, v)
	for i := 0; i < 20; i++ {
		if got := ask(t, v.Frontend).Backend; got != "a" {
			t.Fatalf("got %s", got)
		}
	}
	// Refused once, then avoided: far fewer dial failures than requests.
	if n := testutil.ToFloat64(p.m.dialFailures.WithLabelValues("default/web:http")); n < 1 || n > 2 {
		t.Fatalf("dial failures %v", n)
	}
	_ = reg
}

func TestNoEndpointsRefusesAtOnce(t *testing.T) {
	p, _ := newProxy(t)
	v := vs(frontendIP(), 8080, "TCP")
	syncOrFail(t, p, v)
	start := time.Now()
	_, err := harness.Ask(v.Frontend.String(), netip.Addr{}, 5*time.Second)
	if err == nil || time.Since(start) > time.Second {
		t.Fatalf("no endpoints: err=%v after %v", err, time.Since(start))
	}
	a := harness.StartBackend(t, "a", "127.0.0.1:0")
	syncOrFail(t, p, vs(v.Frontend.Addr(), 8080, "TCP", a))
	if got := ask(t, v.Frontend).Backend; got != "a" {
		t.Fatalf("got %s", got)
	}
}

func TestSourceRangesOnlyOnLoadBalancer(t *testing.T) {
	p, _ := newProxy(t)
	a := harness.StartBackend(t, "a", "127.0.0.1:0")
	lb := vs(frontendIP(), 8080, "TCP", a)
	lb.Kind = dataplane.KindLoadBalancer
	lb.SourceRanges = []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}
	cip := vs(frontendIP(), 8080, "TCP", a) // ClusterIP: never filtered
	syncOrFail(t, p, lb, cip)
	before := a.Conns.Load()
	if _, err := harness.Ask(lb.Frontend.String(), netip.MustParseAddr("127.0.0.3"), time.Second); err == nil {
		t.Fatal("out-of-range client reached the backend")
	}
	if a.Conns.Load() != before {
		t.Fatal("a connection from outside the ranges reached the backend")
	}
	if r, err := harness.Ask(lb.Frontend.String(), netip.MustParseAddr("127.0.0.2"), time.Second); err != nil || r.Backend != "a" {
		t.Fatalf("in-range client: %v %v", r, err)
	}
	if r, err := harness.Ask(cip.Frontend.String(), netip.MustParseAddr("127.0.0.3"), time.Second); err != nil || r.Backend != "a" {
		t.Fatalf("ClusterIP filtered: %v %v", r, err)
	}
}

func TestUDPRoundTripsAndFlows(t *testing.T) {
	p, _ := newProxy(t, func(c *Config) { c.UDPIdleTimeout = 300 * time.Millisecond })
	a, b := harness.StartBackend(t, "a", "127.0.0.1:0"), harness.StartBackend(t, "b", "127.0.0.1:0")
	v := vs(frontendIP(), 5353, "UDP", a, b)
	syncOrFail(t, p, v)
	// One client socket is one flow: every datagram reaches the same backend
	// and each reply comes back to that socket.
	c, err := net.Dial("udp", v.Frontend.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 1024)
	var first string
	for i := 0; i < 5; i++ {
		fmt.Fprintf(c, "ping%d", i)
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, err := c.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		f := strings.Fields(string(buf[:n]))
		if f[2] != fmt.Sprintf("ping%d", i) {
			t.Fatalf("reply %q", buf[:n])
		}
		if first == "" {
			first = f[0]
		} else if f[0] != first {
			t.Fatalf("flow moved from %s to %s", first, f[0])
		}
	}
	// Separate clients are balanced.
	seen := map[string]bool{}
	for i := 0; i < 6; i++ {
		r, err := harness.AskUDP(v.Frontend.String(), "x", 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		seen[r.Backend] = true
	}
	if len(seen) != 2 {
		t.Fatalf("UDP flows not balanced: %v", seen)
	}
	// Idle flows end.
	harness.Eventually(t, 3*time.Second, "idle flows removed", func() error {
		if n := testutil.ToFloat64(p.m.active.WithLabelValues("default/web:http")); n != 0 {
			return fmt.Errorf("%v flows active", n)
		}
		return nil
	})
}

func TestEndpointChangesKeepListenerAndDrain(t *testing.T) {
	p, _ := newProxy(t)
	a, b := harness.StartBackend(t, "a", "127.0.0.1:0"), harness.StartBackend(t, "b", "127.0.0.1:0")
	v := vs(frontendIP(), 8080, "TCP", a)
	syncOrFail(t, p, v)
	ln := p.frontends[v.Key()].ln
	// An established connection to a.
	held, err := net.Dial("tcp", v.Frontend.String())
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	rd := bufio.NewReader(held)
	if line, _ := rd.ReadString('\n'); !strings.HasPrefix(line, "a ") {
		t.Fatalf("got %q", line)
	}
	// Replace a with b: the listener stays, new connections go to b at once.
	syncOrFail(t, p, vs(v.Frontend.Addr(), 8080, "TCP", b))
	if p.frontends[v.Key()].ln != ln {
		t.Fatal("listener was replaced")
	}
	if got := ask(t, v.Frontend).Backend; got != "b" {
		t.Fatalf("after the change: %s", got)
	}
	// The old connection still works during the grace period...
	fmt.Fprintf(held, "still\n")
	if line, err := rd.ReadString('\n'); err != nil || line != "still\n" {
		t.Fatalf("drained too early: %q %v", line, err)
	}
	// ...and is closed after it.
	_ = held.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.ReadAll(rd); err != nil && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("not closed after grace: %v", err)
	}
}

func TestDeleteClosesPortWithoutDisturbingOthers(t *testing.T) {
	p, _ := newProxy(t)
	a := harness.StartBackend(t, "a", "127.0.0.1:0")
	keep := vs(frontendIP(), 8080, "TCP", a)
	gone := vs(frontendIP(), 8080, "TCP", a)
	gone.Service = "default/other"
	syncOrFail(t, p, keep, gone)
	held, err := net.Dial("tcp", keep.Frontend.String())
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	rd := bufio.NewReader(held)
	rd.ReadString('\n')
	syncOrFail(t, p, keep)
	if _, err := net.DialTimeout("tcp", gone.Frontend.String(), time.Second); err == nil {
		t.Fatal("deleted service still accepts connections")
	}
	fmt.Fprintf(held, "ok\n")
	if line, err := rd.ReadString('\n'); err != nil || line != "ok\n" {
		t.Fatalf("other service disturbed: %q %v", line, err)
	}
	if got := ask(t, keep.Frontend).Backend; got != "a" {
		t.Fatal(got)
	}
}

func TestBindFailureDoesNotBlockOthers(t *testing.T) {
	p, _ := newProxy(t)
	a := harness.StartBackend(t, "a", "127.0.0.1:0")
	taken := vs(a.Addr.Addr(), a.Addr.Port(), "TCP", a) // the backend holds this port
	ok := vs(frontendIP(), 8080, "TCP", a)
	err := p.Sync(context.Background(), &dataplane.Desired{Servers: []*dataplane.VirtualServer{taken, ok}})
	if err == nil || !strings.Contains(err.Error(), taken.Key()) {
		t.Fatalf("want an error naming %s, got %v", taken.Key(), err)
	}
	if got := ask(t, ok.Frontend).Backend; got != "a" {
		t.Fatal(got)
	}
}

// TestBulkTransferIntact pushes megabytes each way, so that both the
// read/write path and the splice path (after a full buffer) carry data.
func TestBulkTransferIntact(t *testing.T) {
	p, _ := newProxy(t)
	a := harness.StartBackend(t, "a", "127.0.0.1:0")
	v := vs(frontendIP(), 8080, "TCP", a)
	syncOrFail(t, p, v)
	c, err := net.Dial("tcp", v.Frontend.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rd := bufio.NewReader(c)
	if _, err := rd.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	payload := make([]byte, 8<<20)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	go func() {
		c.Write(payload)
		c.(*net.TCPConn).CloseWrite()
	}()
	back, err := io.ReadAll(rd)
	if err != nil {
		t.Fatal(err)
	}
	if len(back) != len(payload) || string(back) != string(payload) {
		t.Fatalf("echoed %d bytes, want %d intact", len(back), len(payload))
	}
	harness.Eventually(t, 2*time.Second, "bytes counted", func() error {
		in := testutil.ToFloat64(p.m.bytes.WithLabelValues("default/web:http", "in"))
		if in != float64(len(payload)) {
			return fmt.Errorf("bytes in %v", in)
		}
		return nil
	})
}

// TestUDPSteadyStateAllocatesNothing counts heap allocations (not time)
// across a thousand round trips through an established flow.
func TestUDPSteadyStateAllocatesNothing(t *testing.T) {
	p, _ := newProxy(t)
	// An echo backend that itself allocates nothing per datagram.
	be, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := be.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			be.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	v := &dataplane.VirtualServer{Service: "default/dns", Port: "dns", Kind: dataplane.KindClusterIP, Protocol: "UDP",
		Frontend: netip.AddrPortFrom(frontendIP(), 5353), Backends: []dataplane.Backend{{Addr: be.LocalAddr().(*net.UDPAddr).AddrPort()}}}
	syncOrFail(t, p, v)
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(v.Frontend))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg, buf := []byte("0123456789abcdef0123456789abcdef"), make([]byte, 2048)
	roundTrip := func() {
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Read(buf); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 100; i++ { // establish the flow and warm the pools
		roundTrip()
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	const n = 1000
	for i := 0; i < n; i++ {
		roundTrip()
	}
	runtime.ReadMemStats(&after)
	if per := float64(after.Mallocs-before.Mallocs) / n; per > 0.5 {
		t.Fatalf("%.2f allocations per round trip (client, proxy both ways, backend); want none in steady state", per)
	}
}
