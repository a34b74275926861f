package dataplane

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/portal-lb/portal/dataplane/healthcheck"
	"google.golang.org/protobuf/types/known/timestamppb"

	portalv1 "github.com/portal-lb/portal/proto/portal/v1"
)

// Source streams the replicated state (the store, or a remote API).
type Source interface {
	WatchServices(ctx context.Context, ns string, rv uint64, send func(*portalv1.WatchServicesResponse) error) error
	WatchEndpoints(ctx context.Context, ns string, rv uint64, send func(*portalv1.WatchEndpointsResponse) error) error
}

// AgentConfig configures an Agent.
type AgentConfig struct {
	Source    Source
	Dataplane Interface
	Node      Node
	// MinSyncInterval bounds how often Sync runs: changes arriving within it
	// are coalesced into one sync (default 10ms).
	MinSyncInterval time.Duration
	// ResyncInterval forces a full sync periodically (default 30s), which
	// repairs anything changed behind the dataplane's back.
	ResyncInterval time.Duration
	Logger         *slog.Logger
	Registerer     prometheus.Registerer
	// HealthChecks runs this node's prober for services with
	// spec.healthCheck, and leaves failing endpoints out.
	HealthChecks bool
}

// Agent is the node agent: it keeps a local copy of services and endpoints
// from the Source, and reconciles the dataplane with what Build makes of
// them: coalesced, rate-bounded, level-triggered, retried with backoff.
type Agent struct {
	cfg AgentConfig
	log *slog.Logger
	m   *agentMetrics

	mu        sync.Mutex
	services  map[string]*portalv1.Service
	endpoints map[string]*portalv1.Endpoints
	revision  uint64
	listed    int       // how many of the two watches have delivered their initial list
	pending   time.Time // oldest write not yet programmed
	trigger   chan struct{}

	syncedMu sync.Mutex
	synced   uint64 // revision of the last successful sync
	syncs    atomic.Uint64

	prober  *healthcheck.Prober // nil without health checks
	hcPorts *healthcheck.NodePortServer
}

// NewAgent returns an agent; Run starts it.
func NewAgent(cfg AgentConfig) *Agent {
	if cfg.MinSyncInterval <= 0 {
		cfg.MinSyncInterval = 10 * time.Millisecond
	}
	if cfg.ResyncInterval <= 0 {
		cfg.ResyncInterval = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	a := &Agent{
		cfg: cfg, log: cfg.Logger, m: newAgentMetrics(cfg.Registerer),
		services: map[string]*portalv1.Service{}, endpoints: map[string]*portalv1.Endpoints{},
		trigger: make(chan struct{}, 1),
	}
	a.hcPorts = healthcheck.NewNodePortServer(cfg.Logger)
	if cfg.HealthChecks {
		// A transition reconciles at once, not at the next resync.
		a.prober = healthcheck.New(healthcheck.Config{OnTransition: a.kick, Logger: cfg.Logger, Registerer: cfg.Registerer})
	}
	return a
}

// ServiceHealth is this node's view of a service's endpoints: one entry
// per probed endpoint (state Unknown when the service has no check or the
// endpoint has not been probed yet).
func (a *Agent) ServiceHealth(svc *portalv1.Service, eps *portalv1.Endpoints) []*portalv1.EndpointHealth {
	check, checked := healthcheck.CheckOf(svc.GetSpec().GetHealthCheck())
	var out []*portalv1.EndpointHealth
	seen := map[netip.AddrPort]bool{}
	for _, sp := range svc.GetSpec().GetPorts() {
		for _, b := range resolve(eps, sp, len(svc.GetSpec().GetPorts()) == 1, svc.GetSpec().GetPublishNotReadyAddresses()) {
			addr := probeAddr(b, svc.GetSpec().GetHealthCheck())
			if seen[addr] {
				continue
			}
			seen[addr] = true
			h := &portalv1.EndpointHealth{Ip: addr.Addr().String(), Port: int32(addr.Port()), Node: a.cfg.Node.Name, State: healthcheck.Unknown}
			if !checked {
				h.LastError = "the service has no health check"
			} else if a.prober != nil {
				if st, ok := a.prober.Status(addr, check); ok {
					h.State, h.ConsecutiveSuccesses, h.ConsecutiveFailures = st.State, int32(st.Successes), int32(st.Failures)
					h.LastError, h.LatencyMillis = st.LastError, float64(st.Latency.Microseconds())/1000
					if !st.LastProbe.IsZero() {
						h.LastProbeTime = timestamppb.New(st.LastProbe)
					}
				}
			}
			out = append(out, h)
		}
	}
	return out
}

// Prober is the agent's health prober (nil without health checks).
func (a *Agent) Prober() *healthcheck.Prober { return a.prober }

// Run watches and reconciles until ctx ends.
func (a *Agent) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); a.watchServices(ctx) }()
	go func() { defer wg.Done(); a.watchEndpoints(ctx) }()
	a.syncLoop(ctx)
	wg.Wait()
	if a.prober != nil {
		a.prober.Stop()
	}
	a.hcPorts.Close()
}

// healthNodePorts derives the healthCheckNodePort listeners from desired:
// one per node address and port, counting the endpoints this node serves
// for the service's external traffic.
func (a *Agent) healthNodePorts(d *Desired) map[netip.AddrPort]healthcheck.NodePortEntry {
	out := map[netip.AddrPort]healthcheck.NodePortEntry{}
	for _, v := range d.Servers {
		if v.HealthCheckNodePort == 0 {
			continue
		}
		ns, name, _ := strings.Cut(v.Service, "/")
		for _, addr := range a.cfg.Node.Addresses {
			k := netip.AddrPortFrom(addr, v.HealthCheckNodePort)
			if e, ok := out[k]; !ok || len(v.Backends) < e.LocalEndpoints {
				out[k] = healthcheck.NodePortEntry{Namespace: ns, Name: name, LocalEndpoints: len(v.Backends)}
			}
		}
	}
	return out
}

// Syncs counts the dataplane syncs run so far.
func (a *Agent) Syncs() uint64 { return a.syncs.Load() }

// SyncedRevision is the state revision last programmed successfully.
func (a *Agent) SyncedRevision() uint64 {
	a.syncedMu.Lock()
	defer a.syncedMu.Unlock()
	return a.synced
}

func (a *Agent) kick() {
	select {
	case a.trigger <- struct{}{}:
	default:
	}
}

// changed records a write (its time, for latency) and triggers a sync.
func (a *Agent) changed(rv uint64, when time.Time) {
	if rv > a.revision {
		a.revision = rv
	}
	if !when.IsZero() && (a.pending.IsZero() || when.Before(a.pending)) {
		a.pending = when
	}
	a.kick()
}

// event is what the agent needs of a watch response of either kind.
type event[T any] struct {
	typ    string
	rv     uint64
	when   *timestamppb.Timestamp
	key    string
	object T
}

// apply folds one watch event into cache (*cache is replaced whole when
// the initial list completes). Called with a.mu held.
func apply[T any](a *Agent, cache *map[string]T, fresh map[string]T, listing *bool, e event[T]) {
	switch {
	case e.typ == portalv1.EventBookmark:
		if *listing {
			*listing = false
			*cache = fresh
			a.listed++
			a.changed(e.rv, time.Time{})
		}
	case *listing:
		fresh[e.key] = e.object
	case e.typ == portalv1.EventDeleted:
		delete(*cache, e.key)
		a.changed(e.rv, writeTime(e.when))
	default:
		(*cache)[e.key] = e.object
		a.changed(e.rv, writeTime(e.when))
	}
}

func (a *Agent) watchServices(ctx context.Context) {
	watchLoop(ctx, a.log, "services", func() error {
		fresh, listing := map[string]*portalv1.Service{}, true
		return a.cfg.Source.WatchServices(ctx, "", 0, func(r *portalv1.WatchServicesResponse) error {
			a.mu.Lock()
			defer a.mu.Unlock()
			apply(a, &a.services, fresh, &listing, event[*portalv1.Service]{typ: r.GetType(), rv: r.GetResourceVersion(),
				when: r.GetWriteTime(), key: key(r.GetService().GetMetadata()), object: r.GetService()})
			return nil
		})
	})
}

func (a *Agent) watchEndpoints(ctx context.Context) {
	watchLoop(ctx, a.log, "endpoints", func() error {
		fresh, listing := map[string]*portalv1.Endpoints{}, true
		return a.cfg.Source.WatchEndpoints(ctx, "", 0, func(r *portalv1.WatchEndpointsResponse) error {
			a.mu.Lock()
			defer a.mu.Unlock()
			apply(a, &a.endpoints, fresh, &listing, event[*portalv1.Endpoints]{typ: r.GetType(), rv: r.GetResourceVersion(),
				when: r.GetWriteTime(), key: key(r.GetEndpoints().GetMetadata()), object: r.GetEndpoints()})
			return nil
		})
	})
}

func writeTime(ts *timestamppb.Timestamp) time.Time {
	if ts == nil {
		return time.Time{}
	}
	return ts.AsTime()
}

// watchLoop re-runs a watch (from a fresh list) until ctx ends.
func watchLoop(ctx context.Context, log *slog.Logger, what string, watch func() error) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		start := time.Now()
		err := watch()
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) > 10*time.Second {
			backoff = 100 * time.Millisecond
		}
		log.Warn("watch ended; listing again", "what", what, "err", err, "retry", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (a *Agent) syncLoop(ctx context.Context) {
	resync := time.NewTimer(a.cfg.ResyncInterval)
	defer resync.Stop()
	var retry <-chan time.Time
	var last time.Time
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.trigger:
		case <-resync.C:
		case <-retry:
		}
		retry = nil
		// Bound the frequency: what arrives meanwhile joins this sync.
		if wait := a.cfg.MinSyncInterval - time.Since(last); wait > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
		select {
		case <-a.trigger:
		default:
		}
		a.mu.Lock()
		if a.listed < 2 {
			a.mu.Unlock()
			continue // never program a half-listed state
		}
		services := make([]*portalv1.Service, 0, len(a.services))
		for _, s := range a.services {
			services = append(services, s)
		}
		endpoints := make(map[string]*portalv1.Endpoints, len(a.endpoints))
		for k, e := range a.endpoints {
			endpoints[k] = e
		}
		rev, pending := a.revision, a.pending
		a.pending = time.Time{}
		a.mu.Unlock()

		var desired *Desired
		if a.prober != nil {
			a.prober.Update(ProbeTargets(services, endpoints))
			desired = BuildWithHealth(services, endpoints, a.cfg.Node, rev, a.prober)
		} else {
			desired = Build(services, endpoints, a.cfg.Node, rev)
		}
		start := time.Now()
		err := a.cfg.Dataplane.Sync(ctx, desired)
		a.syncs.Add(1)
		last = time.Now()
		a.m.syncDuration.Observe(last.Sub(start).Seconds())
		resync.Reset(a.cfg.ResyncInterval)
		if err != nil {
			if errors.Is(err, context.Canceled) && ctx.Err() != nil {
				return
			}
			failures++
			a.m.syncErrors.Inc()
			backoff := min(100*time.Millisecond<<min(failures-1, 8), 30*time.Second)
			a.log.Error("dataplane sync failed", "err", err, "failures", failures, "retry", backoff)
			a.mu.Lock()
			if !pending.IsZero() && (a.pending.IsZero() || pending.Before(a.pending)) {
				a.pending = pending
			}
			a.mu.Unlock()
			retry = time.After(backoff)
			continue
		}
		if failures > 0 {
			a.log.Info("dataplane sync recovered", "after_failures", failures)
		}
		failures = 0
		if !pending.IsZero() {
			a.m.writeToProgrammed.Observe(last.Sub(pending).Seconds())
		}
		if err := a.hcPorts.Update(a.healthNodePorts(desired)); err != nil {
			a.log.Warn("health check node ports", "err", err)
		}
		a.m.servers.Set(float64(len(desired.Servers)))
		a.m.lastSync.Set(float64(last.Unix()))
		a.m.syncedRevision.Set(float64(rev))
		a.syncedMu.Lock()
		a.synced = rev
		a.syncedMu.Unlock()
	}
}

type agentMetrics struct {
	syncDuration      prometheus.Histogram
	writeToProgrammed prometheus.Histogram
	syncErrors        prometheus.Counter
	servers           prometheus.Gauge
	lastSync          prometheus.Gauge
	syncedRevision    prometheus.Gauge
}

func newAgentMetrics(r prometheus.Registerer) *agentMetrics {
	m := &agentMetrics{
		syncDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "portal_dataplane_sync_duration_seconds", Help: "Duration of one dataplane Sync.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18),
		}),
		writeToProgrammed: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "portal_dataplane_write_to_programmed_seconds", Help: "Time from an API write to the dataplane programmed with it on this node.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		syncErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "portal_dataplane_sync_errors_total", Help: "Failed dataplane syncs."}),
		servers:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "portal_dataplane_virtual_servers", Help: "Virtual servers programmed on this node."}),
		lastSync:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "portal_dataplane_last_sync_timestamp_seconds", Help: "Unix time of the last successful sync."}),
		syncedRevision: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "portal_dataplane_synced_revision", Help: "State revision the dataplane was last programmed with.",
		}),
	}
	if r != nil {
		r.MustRegister(m.syncDuration, m.writeToProgrammed, m.syncErrors, m.servers, m.lastSync, m.syncedRevision)
	}
	return m
}
