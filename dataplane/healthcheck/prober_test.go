package healthcheck

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func fast(typ string) Check {
	return Check{Type: typ, Interval: 50 * time.Millisecond, Timeout: 40 * time.Millisecond, Rise: 2, Fall: 2, ExpectedCodes: "200-399"}
}

func waitState(t *testing.T, p *Prober, addr netip.AddrPort, c Check, want string) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < 5*time.Second {
		if p.State(addr, c) == want {
			return time.Since(start)
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("%s never became %s (is %s)", addr, want, p.State(addr, c))
	return 0
}

func addrOf(a net.Addr) netip.AddrPort {
	ap := netip.MustParseAddrPort(a.String())
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

func TestTCPDownAndUp(t *testing.T) {
	var transitions atomic.Int32
	p := New(Config{OnTransition: func() { transitions.Add(1) }})
	defer p.Stop()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	addr := addrOf(ln.Addr())
	c := fast("TCP")
	p.Update([]Target{{Addr: addr, Check: c, Service: "default/web"}})
	waitState(t, p, addr, c, Healthy)
	ln.Close()
	waitState(t, p, addr, c, Unhealthy)
	ln2, err := net.Listen("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer ln2.Close()
	go func() {
		for {
			c, err := ln2.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	waitState(t, p, addr, c, Healthy)
	if n := transitions.Load(); n != 2 {
		t.Fatalf("%d transitions reported, want 2 (down, up)", n)
	}
	st := p.Statuses()
	if len(st) != 1 || st[0].Successes < 2 || st[0].LastProbe.IsZero() {
		t.Fatalf("status %+v", st)
	}
	// Removing the target stops its loop.
	p.Update(nil)
	if len(p.Statuses()) != 0 || p.State(addr, c) != Unknown {
		t.Fatal("loop not stopped")
	}
}

func TestHTTPPathHostAndCodes(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if r.Host != "web.example" {
			http.Error(w, "wrong host", http.StatusMisdirectedRequest)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "no", http.StatusInternalServerError) })
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	defer srv.Close()
	addr := addrOf(ln.Addr())
	p := New(Config{})
	defer p.Stop()
	ok := fast("HTTP")
	ok.Path, ok.Host = "/healthz", "web.example"
	root := fast("HTTP") // "/" answers 500
	wrongHost := ok
	wrongHost.Host = "other.example"
	only200 := ok
	only200.ExpectedCodes = "200"
	p.Update([]Target{{Addr: addr, Check: ok}, {Addr: addr, Check: root}, {Addr: addr, Check: wrongHost}, {Addr: addr, Check: only200}})
	waitState(t, p, addr, ok, Healthy)
	waitState(t, p, addr, root, Unhealthy)
	waitState(t, p, addr, wrongHost, Unhealthy)
	waitState(t, p, addr, only200, Unhealthy)
}

func TestGRPCHealth(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	gs := grpc.NewServer()
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	go gs.Serve(ln)
	defer gs.Stop()
	hs.SetServingStatus("api", healthpb.HealthCheckResponse_SERVING)
	addr := addrOf(ln.Addr())
	p := New(Config{})
	defer p.Stop()
	c := fast("GRPC")
	c.Service = "api"
	c.Timeout = 45 * time.Millisecond
	p.Update([]Target{{Addr: addr, Check: c}})
	waitState(t, p, addr, c, Healthy)
	hs.SetServingStatus("api", healthpb.HealthCheckResponse_NOT_SERVING)
	waitState(t, p, addr, c, Unhealthy)
}

func TestUDPExpect(t *testing.T) {
	pc, _ := net.ListenPacket("udp", "127.0.0.1:0")
	defer pc.Close()
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo([]byte(fmt.Sprintf("pong %s", buf[:n])), from)
		}
	}()
	addr := addrOf(pc.LocalAddr())
	p := New(Config{})
	defer p.Stop()
	good := fast("UDP")
	good.Send, good.Expect = "ping", "pong ping"
	bad := good
	bad.Expect = "nope"
	p.Update([]Target{{Addr: addr, Check: good}, {Addr: addr, Check: bad}})
	waitState(t, p, addr, good, Healthy)
	waitState(t, p, addr, bad, Unhealthy)
}
