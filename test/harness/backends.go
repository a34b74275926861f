package harness

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Backend is a small server that answers every TCP connection (and UDP
// datagram) with "NAME CLIENT-ADDRESS\n": which backend answered and the
// client address it saw. After that line a TCP connection echoes.
type Backend struct {
	Name  string
	Addr  netip.AddrPort
	Conns atomic.Int64 // TCP connections accepted so far

	tcp  net.Listener
	udp  net.PacketConn
	mu   sync.Mutex
	open map[net.Conn]struct{}
}

// StartBackend listens on addr ("127.0.0.1:0" for any port) for TCP and,
// on the same port, UDP. It stops when the test ends.
func StartBackend(t testing.TB, name, addr string) *Backend {
	t.Helper()
	b, err := NewBackend(name, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

// NewBackend is StartBackend for callers that manage its life themselves.
func NewBackend(name, addr string) (*Backend, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	b := &Backend{Name: name, tcp: ln, open: map[net.Conn]struct{}{}}
	b.Addr = ln.Addr().(*net.TCPAddr).AddrPort()
	b.Addr = netip.AddrPortFrom(b.Addr.Addr().Unmap(), b.Addr.Port())
	if pc, err := net.ListenPacket("udp", b.Addr.String()); err == nil {
		b.udp = pc
		go b.serveUDP()
	}
	go b.serveTCP()
	return b, nil
}

func (b *Backend) serveTCP() {
	for {
		c, err := b.tcp.Accept()
		if err != nil {
			return
		}
		b.Conns.Add(1)
		b.mu.Lock()
		b.open[c] = struct{}{}
		b.mu.Unlock()
		go func() {
			defer func() {
				b.mu.Lock()
				delete(b.open, c)
				b.mu.Unlock()
				c.Close()
			}()
			fmt.Fprintf(c, "%s %s\n", b.Name, c.RemoteAddr())
			buf := make([]byte, 32*1024)
			for {
				n, err := c.Read(buf)
				if n > 0 {
					if _, err := c.Write(buf[:n]); err != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}()
	}
}

func (b *Backend) serveUDP() {
	buf := make([]byte, 64*1024)
	for {
		n, from, err := b.udp.ReadFrom(buf)
		if err != nil {
			return
		}
		reply := fmt.Sprintf("%s %s %s\n", b.Name, from, buf[:n])
		_, _ = b.udp.WriteTo([]byte(reply), from)
	}
}

// Close stops the backend and closes its open connections (a dead host).
func (b *Backend) Close() {
	b.tcp.Close()
	if b.udp != nil {
		b.udp.Close()
	}
	b.mu.Lock()
	for c := range b.open {
		c.Close()
	}
	b.mu.Unlock()
}

// Reply is what a backend said.
type Reply struct {
	Backend string // which backend answered
	Client  string // the client address it saw (host:port)
}

// Ask opens a TCP connection to addr (from source when valid), reads the
// backend's line and closes. It fails fast: refused, reset or no answer
// within timeout return an error.
func Ask(addr string, source netip.Addr, timeout time.Duration) (Reply, error) {
	d := net.Dialer{Timeout: timeout}
	if source.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: source.AsSlice()}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return Reply{}, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return Reply{}, err
	}
	return parseReply(line)
}

// AskUDP sends one datagram to addr and waits for the reply.
func AskUDP(addr string, payload string, timeout time.Duration) (Reply, error) {
	c, err := net.Dial("udp", addr)
	if err != nil {
		return Reply{}, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte(payload)); err != nil {
		return Reply{}, err
	}
	buf := make([]byte, 64*1024)
	n, err := c.Read(buf)
	if err != nil {
		return Reply{}, err
	}
	return parseReply(string(buf[:n]))
}

func parseReply(line string) (Reply, error) {
	f := strings.Fields(line)
	if len(f) < 2 {
		return Reply{}, fmt.Errorf("unexpected reply %q", line)
	}
	return Reply{Backend: f[0], Client: f[1]}, nil
}

// Eventually retries f until it returns nil or timeout passes.
func Eventually(t testing.TB, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for {
		if err = f(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after %v: %v", what, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
