// Package healthcheck probes endpoints from this node: one loop per
// (endpoint, check), shared by every service port that needs it, on a
// jittered schedule, with bounded concurrency. Transitions (healthy <->
// unhealthy) are reported at once so the dataplane can be reconciled.
package healthcheck

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	portalv1 "github.com/portal-lb/portal/proto/portal/v1"
)

// States of an endpoint as this node sees it.
const (
	Unknown   = "Unknown"
	Healthy   = "Healthy"
	Unhealthy = "Unhealthy"
)

// Check is a probe specification (defaults applied). It is comparable:
// targets with equal checks and addresses share one probe loop.
type Check struct {
	Type          string // TCP, HTTP, HTTPS, GRPC, UDP
	Path, Host    string
	ExpectedCodes string // "200-399"
	Service       string
	Send, Expect  string
	Interval      time.Duration
	Timeout       time.Duration
	Rise, Fall    int
}

// Target is one endpoint to probe with one check.
type Target struct {
	Addr  netip.AddrPort
	Check Check
	// Service labels the metrics (the first service port that asked).
	Service string
}

type key struct {
	addr  netip.AddrPort
	check Check
}

// Status is one probe loop's view.
type Status struct {
	Addr                netip.AddrPort
	Check               Check
	State               string
	Successes, Failures int
	LastProbe           time.Time
	LastError           string
	Latency             time.Duration
}

// Config configures a Prober.
type Config struct {
	// OnTransition is called (from the probe goroutine) after an endpoint
	// changes between healthy and unhealthy.
	OnTransition func()
	// MaxConcurrent bounds probes in flight (default 256).
	MaxConcurrent int
	Logger        *slog.Logger
	Registerer    prometheus.Registerer
}

// Prober runs the probe loops.
type Prober struct {
	cfg   Config
	log   *slog.Logger
	sem   chan struct{}
	m     *metrics
	mu    sync.Mutex
	loops map[key]*loop

	transitions atomic.Uint64
}

// Transitions counts healthy <-> unhealthy changes so far.
func (p *Prober) Transitions() uint64 { return p.transitions.Load() }

type loop struct {
	t      Target
	cancel context.CancelFunc
	mu     sync.Mutex
	st     Status
}

// New returns a prober with no targets.
func New(cfg Config) *Prober {
	if cfg.MaxConcurrent <= 0 {
		cfg.MaxConcurrent = 256
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Prober{cfg: cfg, log: cfg.Logger, sem: make(chan struct{}, cfg.MaxConcurrent), m: newMetrics(cfg.Registerer), loops: map[key]*loop{}}
}

// Update makes the probe loops match targets: new ones start (state
// Unknown), gone ones stop, the others keep their state.
func (p *Prober) Update(targets []Target) {
	p.mu.Lock()
	defer p.mu.Unlock()
	want := map[key]Target{}
	for _, t := range targets {
		k := key{t.Addr, t.Check}
		if _, ok := want[k]; !ok {
			want[k] = t
		}
	}
	for k, l := range p.loops {
		if _, ok := want[k]; !ok {
			l.cancel()
			delete(p.loops, k)
		}
	}
	for k, t := range want {
		if p.loops[k] != nil {
			continue
		}
		ctx, cancel := context.WithCancel(context.Background())
		l := &loop{t: t, cancel: cancel, st: Status{Addr: t.Addr, Check: t.Check, State: Unknown}}
		p.loops[k] = l
		go p.run(ctx, l)
	}
	p.m.targets.Set(float64(len(p.loops)))
}

// Stop ends every loop.
func (p *Prober) Stop() { p.Update(nil) }

// State is the state of addr under check (Unknown when not probed).
func (p *Prober) State(addr netip.AddrPort, check Check) string {
	p.mu.Lock()
	l := p.loops[key{addr, check}]
	p.mu.Unlock()
	if l == nil {
		return Unknown
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.st.State
}

// Status returns the status of addr under check, if it is probed.
func (p *Prober) Status(addr netip.AddrPort, check Check) (Status, bool) {
	p.mu.Lock()
	l := p.loops[key{addr, check}]
	p.mu.Unlock()
	if l == nil {
		return Status{}, false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.st, true
}

// Statuses returns every loop's status.
func (p *Prober) Statuses() []Status {
	p.mu.Lock()
	loops := make([]*loop, 0, len(p.loops))
	for _, l := range p.loops {
		loops = append(loops, l)
	}
	p.mu.Unlock()
	out := make([]Status, 0, len(loops))
	for _, l := range loops {
		l.mu.Lock()
		out = append(out, l.st)
		l.mu.Unlock()
	}
	return out
}

func (p *Prober) run(ctx context.Context, l *loop) {
	c := l.t.Check
	// Start at a random point of the first interval, so that thousands of
	// loops created together do not probe in step.
	next := time.Duration(rand.Int64N(int64(c.Interval)))
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(next):
		}
		start := time.Now()
		select {
		case p.sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		err := p.probe(ctx, l.t)
		<-p.sem
		if ctx.Err() != nil {
			return
		}
		p.record(l, start, err)
		// Keep the period, with ±10% jitter.
		jitter := time.Duration(rand.Int64N(int64(c.Interval)/5+1)) - c.Interval/10
		next = max(c.Interval+jitter-time.Since(start), 0)
	}
}

func (p *Prober) record(l *loop, start time.Time, err error) {
	l.mu.Lock()
	st := &l.st
	st.LastProbe, st.Latency = start, time.Since(start)
	from := st.State
	p.m.probes.WithLabelValues(l.t.Service).Inc()
	if err == nil {
		st.Successes++
		st.Failures = 0
		st.LastError = ""
		if st.State != Healthy && (st.Successes >= l.t.Check.Rise || st.State == Unknown) {
			st.State = Healthy
		}
	} else {
		p.m.failures.WithLabelValues(l.t.Service).Inc()
		st.Failures++
		st.Successes = 0
		st.LastError = err.Error()
		if st.State != Unhealthy && st.Failures >= l.t.Check.Fall {
			st.State = Unhealthy
		}
	}
	to := st.State
	l.mu.Unlock()
	// Unknown -> Healthy is not a transition worth a reconcile: Unknown
	// endpoints are already served.
	if from != to && !(from == Unknown && to == Healthy) {
		p.m.transitions.WithLabelValues(l.t.Service, to).Inc()
		p.transitions.Add(1)
		p.log.Info("endpoint health changed", "service", l.t.Service, "endpoint", l.t.Addr, "check", l.t.Check.Type, "from", from, "to", to, "error", errOr(err))
		if p.cfg.OnTransition != nil {
			p.cfg.OnTransition()
		}
	}
}

func errOr(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// probe runs one check against t.
func (p *Prober) probe(ctx context.Context, t Target) error {
	ctx, cancel := context.WithTimeout(ctx, t.Check.Timeout)
	defer cancel()
	addr := t.Addr.String()
	switch t.Check.Type {
	case "TCP", "":
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		return c.Close()
	case "HTTP", "HTTPS":
		return probeHTTP(ctx, t)
	case "GRPC":
		conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return err
		}
		defer conn.Close()
		resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: t.Check.Service})
		if err != nil {
			return err
		}
		if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("grpc health: %s", resp.GetStatus())
		}
		return nil
	case "UDP":
		return probeUDP(ctx, t)
	}
	return fmt.Errorf("unknown check type %q", t.Check.Type)
}

func probeHTTP(ctx context.Context, t Target) error {
	scheme := "http"
	tr := &http.Transport{DisableKeepAlives: true}
	if t.Check.Type == "HTTPS" {
		scheme = "https"
		// A health check asks whether the backend answers, not who it is.
		tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec
	}
	path := t.Check.Path
	if path == "" {
		path = "/"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+t.Addr.String()+path, nil)
	if err != nil {
		return err
	}
	if t.Check.Host != "" {
		req.Host = t.Check.Host
	}
	req.Header.Set("User-Agent", "portal-healthcheck")
	resp, err := (&http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if !portalv1.CodeAccepted(t.Check.ExpectedCodes, resp.StatusCode) {
		return fmt.Errorf("HTTP status %d not in %s", resp.StatusCode, t.Check.ExpectedCodes)
	}
	return nil
}

func probeUDP(ctx context.Context, t Target) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "udp", t.Addr.String())
	if err != nil {
		return err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	if _, err := c.Write([]byte(t.Check.Send)); err != nil {
		return err
	}
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		return err
	}
	if t.Check.Expect != "" && !bytes.Contains(buf[:n], []byte(t.Check.Expect)) {
		return fmt.Errorf("UDP reply does not contain %q", t.Check.Expect)
	}
	return nil
}

type metrics struct {
	probes, failures *prometheus.CounterVec
	transitions      *prometheus.CounterVec
	targets          prometheus.Gauge
}

func newMetrics(r prometheus.Registerer) *metrics {
	m := &metrics{
		probes:      prometheus.NewCounterVec(prometheus.CounterOpts{Name: "portal_healthcheck_probes_total", Help: "Health probes by service."}, []string{"service"}),
		failures:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "portal_healthcheck_failures_total", Help: "Failed health probes by service."}, []string{"service"}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "portal_healthcheck_transitions_total", Help: "Endpoint health transitions by service and new state."}, []string{"service", "state"}),
		targets:     prometheus.NewGauge(prometheus.GaugeOpts{Name: "portal_healthcheck_targets", Help: "Probe loops running on this node."}),
	}
	if r != nil {
		r.MustRegister(m.probes, m.failures, m.transitions, m.targets)
	}
	return m
}
