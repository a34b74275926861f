package test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	portalv1 "github.com/portal-lb/portal/proto/portal/v1"
	"github.com/portal-lb/portal/test/harness"
)

// healthy is a backend's switchable HTTP health endpoint on its own
// loopback address (the check port is per service, so every backend gets
// an address of its own).
type healthy struct {
	ok atomic.Bool
}

func healthServer(t *testing.T, ip string, port int) *healthy {
	h := &healthy{}
	h.ok.Store(true)
	ln, err := net.Listen("tcp", fmt.Sprintf("%s:%d", ip, port))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" || !h.ok.Load() {
			http.Error(w, "unhealthy", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return h
}

const healthPort = 18880

// healthEnv starts a service whose two backends (on their own loopback
// addresses) are health-checked over HTTP, and returns its ClusterIP.
func healthEnv(t *testing.T, name string, allUnhealthy string, n int) (Env, []*harness.Backend, []*healthy, func() string) {
	e := newUserspaceEnv(t)
	var bs []*harness.Backend
	var hs []*healthy
	for i := 0; i < n; i++ {
		ip := fmt.Sprintf("127.0.%d.%d", 100+int(envSeq.Load()), 10+i)
		bs = append(bs, harness.StartBackend(t, string(rune('a'+i)), ip+":0"))
		hs = append(hs, healthServer(t, ip, healthPort))
	}
	svc := service(name, "ClusterIP", tcpPort("http", 8200))
	svc.Spec.HealthCheck = &portalv1.HealthCheck{Type: "HTTP", Port: healthPort, Path: "/healthz",
		IntervalMillis: 100, TimeoutMillis: 50, HealthyThreshold: 2, UnhealthyThreshold: 2, AllUnhealthy: allUnhealthy}
	s := applyService(t, e, svc)
	putEndpoints(t, e, name, backendsSubsets("http", bs...)...)
	addr := clusterAddr(s, 0)
	ask := func() string {
		r, err := e.Ask(t, 0, addr)
		if err != nil {
			return "error: " + err.Error()
		}
		return r.Backend
	}
	return e, bs, hs, ask
}

// TestHealthCheckRemovesAndRestoresEndpoint: an endpoint failing its check
// stops receiving new connections within interval x unhealthyThreshold +
// timeout + 200 ms, and comes back after healthyThreshold successes.
func TestHealthCheckRemovesAndRestoresEndpoint(t *testing.T) {
	e, bs, hs, ask := healthEnv(t, "checked", "FailOpen", 2)
	// Both serve once both are healthy.
	harness.Eventually(t, 3*time.Second, "both backends serve", func() error {
		seen := map[string]bool{}
		for i := 0; i < 10; i++ {
			seen[ask()] = true
		}
		if !seen["a"] || !seen["b"] {
			return fmt.Errorf("served by %v", seen)
		}
		return nil
	})
	bound := 2*100*time.Millisecond + 50*time.Millisecond + 200*time.Millisecond
	hs[1].ok.Store(false)
	failed := time.Now()
	var lastB time.Duration // when b last answered after its check started failing
	for streak := 0; streak < 30; {
		if ask() == "b" {
			lastB, streak = time.Since(failed), 0
		} else {
			streak++
		}
		if time.Since(failed) > 5*time.Second {
			t.Fatal("the failing endpoint kept receiving connections")
		}
	}
	if lastB > bound {
		t.Fatalf("the failing endpoint received a new connection %v after its check failed; want at most %v", lastB, bound)
	}
	t.Logf("last connection to the failing endpoint %v after it failed (bound %v)", lastB, bound)
	// GetServiceHealth shows this node's view, naming the failure.
	h, err := e.API().GetServiceHealth(context.Background(), &portalv1.GetServiceHealthRequest{Name: "checked"})
	if err != nil {
		t.Fatal(err)
	}
	states := map[string]*portalv1.EndpointHealth{}
	for _, eh := range h.GetEndpoints() {
		states[eh.GetIp()] = eh
		if eh.GetNode() != "gw-1" || eh.GetPort() != healthPort || eh.GetLastProbeTime() == nil {
			t.Fatalf("endpoint health %v", eh)
		}
	}
	if a, b := states[bs[0].Addr.Addr().String()], states[bs[1].Addr.Addr().String()]; len(states) != 2 ||
		a.GetState() != "Healthy" || b.GetState() != "Unhealthy" || b.GetConsecutiveFailures() < 2 || !strings.Contains(b.GetLastError(), "503") {
		t.Fatalf("health %v", h.GetEndpoints())
	}
	hs[1].ok.Store(true)
	harness.Eventually(t, 3*time.Second, "the endpoint returns", func() error {
		for i := 0; i < 10; i++ {
			if ask() == "b" {
				return nil
			}
		}
		return fmt.Errorf("b not back")
	})
}

// TestAllUnhealthyFailOpenAndRefuse: when every endpoint fails, FailOpen
// keeps serving them all and Refuse refuses at once.
func TestAllUnhealthyFailOpenAndRefuse(t *testing.T) {
	for _, mode := range []string{"FailOpen", "Refuse"} {
		t.Run(mode, func(t *testing.T) {
			_, _, hs, ask := healthEnv(t, "all-"+map[string]string{"FailOpen": "open", "Refuse": "refuse"}[mode], mode, 2)
			harness.Eventually(t, 3*time.Second, "served", func() error {
				if got := ask(); got != "a" && got != "b" {
					return fmt.Errorf("%s", got)
				}
				return nil
			})
			for _, h := range hs {
				h.ok.Store(false)
			}
			time.Sleep(600 * time.Millisecond) // > interval x unhealthyThreshold + timeout
			seen := map[string]bool{}
			for i := 0; i < 10; i++ {
				seen[ask()] = true
			}
			switch mode {
			case "FailOpen":
				if !seen["a"] || !seen["b"] {
					t.Fatalf("FailOpen: served by %v", seen)
				}
			case "Refuse":
				if seen["a"] || seen["b"] {
					t.Fatalf("Refuse: still served by %v", seen)
				}
			}
		})
	}
}

// TestHealthCheckNodePort: a LoadBalancer service with
// externalTrafficPolicy Local answers on its healthCheckNodePort with the
// count of endpoints this node serves, 503 when none.
func TestHealthCheckNodePort(t *testing.T) {
	e := newUserspaceEnv(t)
	here, there := e.Backend(t, "here"), e.Backend(t, "there")
	svc := service("hcnp", "LoadBalancer", tcpPort("http", 8210))
	svc.Spec.ExternalTrafficPolicy = "Local"
	s := applyService(t, e, svc)
	hc := s.GetSpec().GetHealthCheckNodePort()
	if hc == 0 {
		t.Fatal("no healthCheckNodePort allocated")
	}
	sub := func(bs map[*harness.Backend]string) []*portalv1.EndpointSubset {
		var out []*portalv1.EndpointSubset
		for b, node := range bs {
			out = append(out, &portalv1.EndpointSubset{
				Addresses: []*portalv1.EndpointAddress{{Ip: b.Addr.Addr().String(), NodeName: node}},
				Ports:     []*portalv1.EndpointPort{{Name: "http", Port: int32(b.Addr.Port())}}})
		}
		return out
	}
	get := func() (int, string) {
		resp, err := http.Get(fmt.Sprintf("http://%s:%d/healthz", e.NodeAddr(), hc))
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		var body strings.Builder
		_, _ = io.Copy(&body, resp.Body)
		return resp.StatusCode, body.String()
	}
	putEndpoints(t, e, "hcnp", sub(map[*harness.Backend]string{here: "gw-1", there: "gw-2"})...)
	if code, body := get(); code != 200 || !strings.Contains(body, `"localEndpoints":1`) || !strings.Contains(body, `"name":"hcnp"`) {
		t.Fatalf("with a local endpoint: %d %s", code, body)
	}
	putEndpoints(t, e, "hcnp", sub(map[*harness.Backend]string{there: "gw-2"})...)
	if code, body := get(); code != 503 || !strings.Contains(body, `"localEndpoints":0`) {
		t.Fatalf("without local endpoints: %d %s", code, body)
	}
}

// TestFlappingCausesNoMoreReconcilesThanTransitions: an endpoint whose
// check flaps triggers at most one dataplane sync per transition.
func TestFlappingCausesNoMoreReconcilesThanTransitions(t *testing.T) {
	e, _, hs, _ := healthEnv(t, "flappy", "FailOpen", 2)
	agent := e.(*userspaceEnv).agent
	time.Sleep(300 * time.Millisecond) // settle: both healthy
	syncs0, trans0 := agent.Syncs(), agent.Prober().Transitions()
	// Each state lasts long enough (> unhealthyThreshold x interval) to be
	// noticed even on a loaded machine, so the endpoint does flap.
	stop := time.After(4 * time.Second)
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for flip := false; ; flip = !flip {
		select {
		case <-stop:
			time.Sleep(300 * time.Millisecond)
			syncs, trans := agent.Syncs()-syncs0, agent.Prober().Transitions()-trans0
			if trans < 3 {
				t.Fatalf("only %d transitions: the endpoint did not flap", trans)
			}
			if syncs > trans {
				t.Fatalf("%d syncs for %d transitions", syncs, trans)
			}
			t.Logf("%d transitions, %d syncs", trans, syncs)
			return
		case <-tick.C:
			hs[1].ok.Store(flip)
		}
	}
}
