// Package userspace is portal's userspace dataplane: a TCP and UDP proxy
// listening on every frontend, the proxy mode Kubernetes started with. It
// needs no privileges, and it can do what kernel NAT cannot: a backend that
// refuses or times out is skipped and the connection retried on another.
package userspace

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/portal-lb/portal/dataplane"
)

// Config tunes the proxy; zero values take the defaults.
type Config struct {
	// DialTimeout bounds one dial to a backend (default 1s).
	DialTimeout time.Duration
	// DialAttempts is how many backends one connection may try (default 3).
	DialAttempts int
	// AvoidFor keeps a backend that failed a dial out of rotation (default 5s).
	AvoidFor time.Duration
	// DrainGrace is how long established connections to a removed endpoint
	// or a deleted service keep running before they are closed (default 30s).
	DrainGrace time.Duration
	// UDPIdleTimeout ends a UDP flow without traffic (default 30s).
	UDPIdleTimeout time.Duration
	Logger         *slog.Logger
	Registerer     prometheus.Registerer
}

// Proxy is the userspace dataplane.
type Proxy struct {
	cfg Config
	log *slog.Logger
	m   *metrics

	mu        sync.Mutex // serialises Sync and Cleanup
	frontends map[string]*frontend
	backends  map[netip.AddrPort]*backend
	affinity  map[string]*affinityTable // by service port (shared by its frontends)
	warned    map[string]bool
}

var _ dataplane.Interface = (*Proxy)(nil)

// New returns a proxy serving nothing until the first Sync.
func New(cfg Config) *Proxy {
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = time.Second
	}
	if cfg.DialAttempts <= 0 {
		cfg.DialAttempts = 3
	}
	if cfg.AvoidFor <= 0 {
		cfg.AvoidFor = 5 * time.Second
	}
	if cfg.DrainGrace <= 0 {
		cfg.DrainGrace = 30 * time.Second
	}
	if cfg.UDPIdleTimeout <= 0 {
		cfg.UDPIdleTimeout = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Proxy{
		cfg: cfg, log: cfg.Logger, m: newMetrics(cfg.Registerer),
		frontends: map[string]*frontend{}, backends: map[netip.AddrPort]*backend{},
		affinity: map[string]*affinityTable{}, warned: map[string]bool{},
	}
}

// backend is the shared state of one backend address, across frontends.
type backend struct {
	addr       netip.AddrPort
	addrText   string
	active     atomic.Int64 // open connections (least-connections)
	avoidUntil atomic.Int64 // unix nanos; skip while in the future
}

func (b *backend) avoided(now int64) bool { return b.avoidUntil.Load() > now }

// service is a frontend's current configuration, swapped atomically by Sync;
// the hot path only loads it.
type service struct {
	vs       *dataplane.VirtualServer
	backends []*backend
	lc       bool
	affinity *affinityTable // nil without ClientIP affinity
	m        *svcMetrics
}

// Sync opens listeners for new frontends, closes those of removed ones, and
// swaps the configuration of the others in place (new connections see it
// at once; established ones are drained from removed backends).
func (p *Proxy) Sync(ctx context.Context, d *dataplane.Desired) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	want := map[string]*dataplane.VirtualServer{}
	for _, vs := range d.Servers {
		if vs.Protocol == "SCTP" {
			if !p.warned[vs.Key()] {
				p.warned[vs.Key()] = true
				p.log.Warn("the userspace dataplane does not proxy SCTP; use iptables or ipvs", "service", vs.Name(), "frontend", vs.Frontend)
			}
			continue
		}
		want[vs.Key()] = vs
	}
	for k, f := range p.frontends {
		if want[k] == nil {
			f.shutdown(p.cfg.DrainGrace)
			delete(p.frontends, k)
		}
	}
	usedBackends := map[netip.AddrPort]bool{}
	usedAffinity := map[string]bool{}
	var errs []error
	for k, vs := range want {
		svc := p.service(vs, usedBackends, usedAffinity)
		f := p.frontends[k]
		if f == nil {
			var err error
			f, err = p.open(vs)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s %s: %w", vs.Name(), k, err))
				continue
			}
			p.frontends[k] = f
		}
		f.update(svc, p.cfg.DrainGrace)
	}
	for a, b := range p.backends {
		if !usedBackends[a] && b.active.Load() == 0 {
			delete(p.backends, a)
		}
	}
	for k := range p.affinity {
		if !usedAffinity[k] {
			delete(p.affinity, k)
		}
	}
	p.m.frontends.Set(float64(len(p.frontends)))
	return errors.Join(errs...)
}

func (p *Proxy) service(vs *dataplane.VirtualServer, usedBackends map[netip.AddrPort]bool, usedAffinity map[string]bool) *service {
	s := &service{vs: vs, lc: vs.Scheduler == "lc" || vs.Scheduler == "wlc", m: p.m.forService(vs.Name())}
	for _, b := range vs.Backends {
		be := p.backends[b.Addr]
		if be == nil {
			be = &backend{addr: b.Addr, addrText: b.Addr.String()}
			p.backends[b.Addr] = be
		}
		usedBackends[b.Addr] = true
		s.backends = append(s.backends, be)
	}
	if vs.Affinity > 0 {
		k := vs.Protocol + "/" + vs.Name()
		t := p.affinity[k]
		if t == nil || t.timeout != vs.Affinity {
			t = newAffinityTable(vs.Affinity)
			p.affinity[k] = t
		}
		usedAffinity[k] = true
		s.affinity = t
	}
	return s
}

func (p *Proxy) open(vs *dataplane.VirtualServer) (*frontend, error) {
	f := &frontend{p: p, key: vs.Key(), conns: map[*tcpConn]struct{}{}, flowSet: map[*udpFlow]struct{}{}, done: make(chan struct{})}
	lc := net.ListenConfig{Control: freebind, KeepAlive: -1}
	switch vs.Protocol {
	case "TCP":
		ln, err := lc.Listen(context.Background(), "tcp", vs.Frontend.String())
		if err != nil {
			return nil, err
		}
		f.ln = ln.(*net.TCPListener)
		go f.acceptLoop()
	case "UDP":
		pc, err := lc.ListenPacket(context.Background(), "udp", vs.Frontend.String())
		if err != nil {
			return nil, err
		}
		f.pc = pc.(*net.UDPConn)
		go f.udpLoop()
	default:
		return nil, fmt.Errorf("unsupported protocol %q", vs.Protocol)
	}
	return f, nil
}

// freebind lets a frontend bind a virtual IP this node does not hold (yet):
// the VIP may arrive later, and nothing else needs to change then.
func freebind(network, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		if network == "tcp6" || network == "udp6" {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_IPV6, 78 /* IPV6_FREEBIND */, 1)
		} else {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_IP, syscall.IP_FREEBIND, 1)
		}
	})
	if err != nil {
		return err
	}
	return serr
}

// Cleanup closes every listener and connection at once.
func (p *Proxy) Cleanup(context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, f := range p.frontends {
		f.shutdown(0)
		delete(p.frontends, k)
	}
	p.m.frontends.Set(0)
	return nil
}

// pick chooses a backend for client, skipping excluded and (while others
// remain) avoided ones. ClientIP affinity wins while its backend is usable.
func (s *service) pick(rr *atomic.Uint64, client netip.Addr, exclude map[*backend]bool) *backend {
	n := len(s.backends)
	if n == 0 {
		return nil
	}
	now := time.Now().UnixNano()
	if s.affinity != nil {
		if addr, ok := s.affinity.get(client, now); ok {
			for _, b := range s.backends {
				if b.addr == addr && !exclude[b] && !b.avoided(now) {
					return b
				}
			}
		}
	}
	start := int(rr.Add(1) % uint64(n))
	var best *backend
	for pass := 0; pass < 2 && best == nil; pass++ {
		for i := 0; i < n; i++ {
			b := s.backends[(start+i)%n]
			if exclude[b] || (pass == 0 && b.avoided(now)) {
				continue
			}
			if !s.lc {
				return b
			}
			if best == nil || b.active.Load() < best.active.Load() {
				best = b
			}
		}
	}
	return best
}
