package userspace

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// frontend is one listening (protocol, address).
type frontend struct {
	p   *Proxy
	key string
	svc atomic.Pointer[service]
	rr  atomic.Uint64

	ln *net.TCPListener
	pc *net.UDPConn

	mu    sync.Mutex // guards conns, flowSet and closed; per connection or flow, never per byte
	conns map[*tcpConn]struct{}
	// flowSet holds live UDP flows for control operations (drain,
	// shutdown). The per-datagram lookup uses udpLoop's own map instead.
	flowSet map[*udpFlow]struct{}
	closed  bool
	done    chan struct{}
}

type tcpConn struct {
	client, upstream *net.TCPConn
	backend          *backend
}

func (c *tcpConn) close() {
	c.client.Close()
	c.upstream.Close()
}

// update installs a new configuration. Connections to backends that left
// are drained: closed after grace unless the backend came back.
func (f *frontend) update(s *service, grace time.Duration) {
	old := f.svc.Swap(s)
	if old == nil {
		return
	}
	keep := map[*backend]bool{}
	for _, b := range s.backends {
		keep[b] = true
	}
	var gone []*backend
	for _, b := range old.backends {
		if !keep[b] {
			gone = append(gone, b)
		}
	}
	if len(gone) == 0 {
		return
	}
	// UDP flows to a removed backend end at once: a client must not keep
	// sending into a black hole; its next datagram picks a live backend.
	f.mu.Lock()
	for fl := range f.flowSet {
		for _, b := range gone {
			if fl.backend == b {
				fl.end()
			}
		}
	}
	f.mu.Unlock()
	time.AfterFunc(grace, func() {
		cur := f.svc.Load()
		back := map[*backend]bool{}
		for _, b := range cur.backends {
			back[b] = true
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		for c := range f.conns {
			for _, b := range gone {
				if c.backend == b && !back[b] {
					c.close()
				}
			}
		}
	})
}

// shutdown stops accepting at once and closes what remains after grace.
func (f *frontend) shutdown(grace time.Duration) {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return
	}
	f.closed = true
	close(f.done)
	f.mu.Unlock()
	if f.ln != nil {
		f.ln.Close()
	}
	if f.pc != nil {
		f.pc.Close()
	}
	closeAll := func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		for c := range f.conns {
			c.close()
		}
		for fl := range f.flowSet {
			fl.end()
		}
	}
	if grace <= 0 {
		closeAll()
		return
	}
	time.AfterFunc(grace, closeAll)
}

func (f *frontend) acceptLoop() {
	for {
		c, err := f.ln.AcceptTCP()
		if err != nil {
			select {
			case <-f.done:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			f.p.log.Warn("accept failed", "frontend", f.key, "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		go f.serveTCP(c)
	}
}

// reset closes c with an RST, so the client learns at once.
func reset(c *net.TCPConn) {
	_ = c.SetLinger(0)
	c.Close()
}

func (f *frontend) serveTCP(c *net.TCPConn) {
	s := f.svc.Load()
	client := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
	if !s.vs.Allowed(client) {
		s.m.refusedSource.Inc()
		reset(c)
		return
	}
	if len(s.backends) == 0 {
		s.m.refusedNoEndpoints.Inc()
		reset(c)
		return
	}
	up, b := f.dial(s, client)
	if up == nil {
		reset(c)
		return
	}
	tc := &tcpConn{client: c, upstream: up, backend: b}
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		reset(c)
		up.Close()
		return
	}
	f.conns[tc] = struct{}{}
	f.mu.Unlock()
	b.active.Add(1)
	s.m.active.Inc()
	s.m.total.Inc()
	defer func() {
		b.active.Add(-1)
		s.m.active.Dec()
		f.mu.Lock()
		delete(f.conns, tc)
		f.mu.Unlock()
	}()
	// Each direction half-closes the other side when it ends.
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		n, err := pipe(up, c)
		s.m.bytesIn.Add(float64(n))
		if err != nil {
			tc.close()
			return
		}
		_ = up.CloseWrite()
	}()
	n, err := pipe(c, up)
	s.m.bytesOut.Add(float64(n))
	if err != nil {
		tc.close()
	} else {
		_ = c.CloseWrite()
	}
	wg.Wait()
	tc.close()
}

// copyBufs holds the buffers of plain read/write copying.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32*1024); return &b }}

// pipe copies src to dst. Request/response traffic moves in small reads,
// for which read+write with a pooled buffer is cheapest (splice costs two
// calls and a pipe per chunk); once a read fills the whole buffer the flow
// is bulk, and the rest is spliced socket to socket (TCPConn.ReadFrom),
// so the bytes stay in the kernel.
func pipe(dst, src *net.TCPConn) (int64, error) {
	bp := copyBufs.Get().(*[]byte)
	buf := *bp
	var total int64
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			w, werr := dst.Write(buf[:n])
			total += int64(w)
			if werr != nil {
				copyBufs.Put(bp)
				return total, werr
			}
		}
		if rerr != nil {
			copyBufs.Put(bp)
			if rerr == io.EOF {
				return total, nil
			}
			return total, rerr
		}
		if n == len(buf) {
			copyBufs.Put(bp)
			m, err := dst.ReadFrom(src)
			return total + m, err
		}
	}
}

// dial connects to a backend, trying others when one refuses or times out;
// a failed backend is avoided for a while.
func (f *frontend) dial(s *service, client netip.Addr) (*net.TCPConn, *backend) {
	attempts := min(f.p.cfg.DialAttempts, len(s.backends))
	var exclude map[*backend]bool
	for i := 0; i < attempts; i++ {
		b := s.pick(&f.rr, client, exclude)
		if b == nil {
			break
		}
		// No TCP keep-alive probes (as HAProxy's default): they cost four
		// setsockopt calls per connection, and the client's own end-to-end
		// behaviour decides liveness.
		d := net.Dialer{Timeout: f.p.cfg.DialTimeout, KeepAlive: -1}
		c, err := d.Dial("tcp", b.addrText)
		if err == nil {
			if s.affinity != nil {
				s.affinity.set(client, b.addr, time.Now().UnixNano())
			}
			return c.(*net.TCPConn), b
		}
		s.m.dialFailures.Inc()
		b.avoidUntil.Store(time.Now().Add(f.p.cfg.AvoidFor).UnixNano())
		f.p.log.Debug("backend dial failed", "frontend", f.key, "backend", b.addr, "err", err)
		if exclude == nil {
			exclude = map[*backend]bool{}
		}
		exclude[b] = true
	}
	return nil, nil
}

// udpFlow is one client's association with one backend.
type udpFlow struct {
	client   netip.AddrPort
	up       *net.UDPConn // connected to the backend
	backend  *backend
	lastSeen atomic.Int64 // unix nanos of the last datagram either way
	dead     atomic.Bool
}

// end stops the flow; its next datagram from the client starts a new one.
func (fl *udpFlow) end() {
	fl.dead.Store(true)
	fl.up.Close()
}

// bufPool holds datagram buffers (one per flow's reply loop and one per
// frontend's read loop), so steady state allocates nothing per packet.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 64*1024); return &b }}

// udpLoop reads client datagrams. Its flow map belongs to this goroutine
// alone, so the per-datagram path takes no lock and allocates nothing.
func (f *frontend) udpLoop() {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	flows := map[netip.AddrPort]*udpFlow{}
	const sweepEvery = 10 * time.Second
	nextSweep := time.Now().Add(sweepEvery)
	for {
		_ = f.pc.SetReadDeadline(nextSweep)
		n, client, err := f.pc.ReadFromUDPAddrPort(buf)
		if now := time.Now(); now.After(nextSweep) {
			for k, fl := range flows {
				if fl.dead.Load() {
					delete(flows, k)
				}
			}
			nextSweep = now.Add(sweepEvery)
		}
		if err != nil {
			select {
			case <-f.done:
				return
			default:
			}
			continue
		}
		s := f.svc.Load()
		if !s.vs.Allowed(client.Addr().Unmap()) {
			s.m.refusedSource.Inc()
			continue
		}
		fl := flows[client]
		if fl == nil || fl.dead.Load() {
			if fl = f.newFlow(s, client); fl == nil {
				delete(flows, client)
				continue
			}
			flows[client] = fl
		}
		fl.lastSeen.Store(time.Now().UnixNano())
		if _, err := fl.up.Write(buf[:n]); err == nil {
			s.m.bytesIn.Add(float64(n))
		}
	}
}

func (f *frontend) newFlow(s *service, client netip.AddrPort) *udpFlow {
	if len(s.backends) == 0 {
		s.m.refusedNoEndpoints.Inc()
		return nil
	}
	b := s.pick(&f.rr, client.Addr().Unmap(), nil)
	up, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(b.addr))
	if err != nil {
		s.m.dialFailures.Inc()
		return nil
	}
	if s.affinity != nil {
		s.affinity.set(client.Addr().Unmap(), b.addr, time.Now().UnixNano())
	}
	fl := &udpFlow{client: client, up: up, backend: b}
	fl.lastSeen.Store(time.Now().UnixNano())
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		up.Close()
		return nil
	}
	f.flowSet[fl] = struct{}{}
	f.mu.Unlock()
	b.active.Add(1)
	s.m.active.Inc()
	s.m.total.Inc()
	go f.replies(s, fl)
	return fl
}

// replies copies the backend's datagrams back to the client until the flow
// is idle for UDPIdleTimeout or closed.
func (f *frontend) replies(s *service, fl *udpFlow) {
	bp := bufPool.Get().(*[]byte)
	buf := *bp
	idle := f.p.cfg.UDPIdleTimeout
	defer func() {
		fl.dead.Store(true)
		fl.up.Close()
		bufPool.Put(bp)
		fl.backend.active.Add(-1)
		s.m.active.Dec()
		f.mu.Lock()
		delete(f.flowSet, fl)
		f.mu.Unlock()
	}()
	for {
		last := time.Unix(0, fl.lastSeen.Load())
		if time.Since(last) >= idle {
			return
		}
		_ = fl.up.SetReadDeadline(last.Add(idle))
		n, err := fl.up.Read(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue // re-check: the client may have sent meanwhile
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // e.g. ECONNREFUSED from an ICMP error: keep the flow
		}
		fl.lastSeen.Store(time.Now().UnixNano())
		if _, err := f.pc.WriteToUDPAddrPort(buf[:n], fl.client); err == nil {
			s.m.bytesOut.Add(float64(n))
		} else if errors.Is(err, net.ErrClosed) {
			return
		}
	}
}

// affinityTable maps client IPs to backends for ClientIP session affinity.
type affinityTable struct {
	timeout time.Duration
	mu      sync.Mutex
	m       map[netip.Addr]affinityEntry
	sweep   int64
}

type affinityEntry struct {
	backend netip.AddrPort
	expires int64
}

func newAffinityTable(timeout time.Duration) *affinityTable {
	return &affinityTable{timeout: timeout, m: map[netip.Addr]affinityEntry{}}
}

func (t *affinityTable) get(client netip.Addr, now int64) (netip.AddrPort, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.m[client]
	if !ok || e.expires <= now {
		return netip.AddrPort{}, false
	}
	return e.backend, true
}

func (t *affinityTable) set(client netip.Addr, b netip.AddrPort, now int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.m[client] = affinityEntry{backend: b, expires: now + int64(t.timeout)}
	// Sweep expired entries now and then, so the table stays bounded.
	if now > t.sweep {
		for k, e := range t.m {
			if e.expires <= now {
				delete(t.m, k)
			}
		}
		t.sweep = now + int64(time.Minute)
	}
}
