package harness

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

// RequireRoot skips a root-only suite, except under CI=true where missing
// privileges or tools are a failure: CI must never skip silently.
func RequireRoot(t testing.TB, tools ...string) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	for _, tool := range append([]string{"ip"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("this suite needs %s (CI=true: not skipping)", strings.Join(missing, ", "))
	}
	t.Skipf("needs %s", strings.Join(missing, ", "))
}

// Topology is a set of network namespaces joined by veth pairs to one
// bridge (in a "switch" namespace of its own). Names carry the test
// process's pid, so a later run can remove what a killed run left behind.
type Topology struct {
	t      testing.TB
	prefix string
	sw     string
	mu     sync.Mutex
	hosts  []*Host
	ports  int
}

var topoSeq atomic.Int32

// NewTopology makes the switch namespace; everything is deleted when the
// test ends, whatever its outcome.
func NewTopology(t testing.TB) *Topology {
	t.Helper()
	RequireRoot(t)
	sweepStale()
	tp := &Topology{t: t, prefix: fmt.Sprintf("pt%d-%d-", os.Getpid(), topoSeq.Add(1))}
	tp.sw = tp.prefix + "sw"
	t.Cleanup(tp.Close)
	tp.must("ip", "netns", "add", tp.sw)
	tp.must("ip", "-n", tp.sw, "link", "set", "lo", "up")
	tp.must("ip", "-n", tp.sw, "link", "add", "br0", "type", "bridge")
	tp.must("ip", "-n", tp.sw, "link", "set", "br0", "up")
	return tp
}

// sweepStale deletes namespaces of earlier test processes that died.
func sweepStale() {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], "pt") {
			continue
		}
		name := f[0]
		if false {
			continue
		}
		pidText, _, ok := strings.Cut(strings.TrimPrefix(name, "pt"), "-")
		pid, err := strconv.Atoi(pidText)
		if !ok || err != nil || pid == os.Getpid() {
			continue
		}
		if syscall.Kill(pid, 0) == syscall.ESRCH {
			_ = exec.Command("ip", "netns", "del", name).Run()
		}
	}
}

func (tp *Topology) must(name string, args ...string) {
	tp.t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		tp.t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// Close deletes every namespace of the topology (their veths go with them).
func (tp *Topology) Close() {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	for _, h := range tp.hosts {
		h.stopAll()
		_ = exec.Command("ip", "netns", "del", h.NS).Run()
	}
	_ = exec.Command("ip", "netns", "del", tp.sw).Run()
	tp.hosts = nil
}

// Host is one namespace on the topology's bridge, interface eth0.
type Host struct {
	Name string
	NS   string
	topo *Topology

	mu    sync.Mutex
	procs []*exec.Cmd
}

// AddHost creates a namespace with eth0 on the bridge holding addrs (CIDRs).
func (tp *Topology) AddHost(name string, addrs ...string) *Host {
	tp.t.Helper()
	tp.mu.Lock()
	tp.ports++
	port := fmt.Sprintf("v%d", tp.ports)
	tp.mu.Unlock()
	h := &Host{Name: name, NS: tp.prefix + name, topo: tp}
	tp.must("ip", "netns", "add", h.NS)
	tp.mu.Lock()
	tp.hosts = append(tp.hosts, h)
	tp.mu.Unlock()
	tp.must("ip", "-n", h.NS, "link", "set", "lo", "up")
	tp.must("ip", "-n", h.NS, "link", "add", "eth0", "type", "veth", "peer", "name", port, "netns", tp.sw)
	tp.must("ip", "-n", tp.sw, "link", "set", port, "master", "br0", "up")
	for _, a := range addrs {
		family := "-4"
		if strings.Contains(a, ":") {
			family = "-6"
		}
		args := []string{family, "-n", h.NS, "addr", "add", a, "dev", "eth0"}
		if family == "-6" {
			args = append(args, "nodad")
		}
		tp.must("ip", args...)
	}
	tp.must("ip", "-n", h.NS, "link", "set", "eth0", "up")
	return h
}

// IP runs `ip -n NS args...`.
func (h *Host) IP(args ...string) {
	h.topo.t.Helper()
	h.topo.must("ip", append([]string{"-n", h.NS}, args...)...)
}

// Sysctl sets a sysctl inside the namespace.
func (h *Host) Sysctl(kv ...string) {
	h.topo.t.Helper()
	h.topo.must("ip", append([]string{"netns", "exec", h.NS, "sysctl", "-qw"}, kv...)...)
}

// Command returns a command that runs inside the namespace.
func (h *Host) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", h.NS, name}, args...)...)
}

// Run runs a command inside the namespace and returns its output.
func (h *Host) Run(name string, args ...string) (string, error) {
	out, err := h.Command(name, args...).CombinedOutput()
	return string(out), err
}

// Track registers a process started in this host, killed at cleanup.
func (h *Host) Track(cmd *exec.Cmd) {
	h.mu.Lock()
	h.procs = append(h.procs, cmd)
	h.mu.Unlock()
}

func (h *Host) stopAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, p := range h.procs {
		if p.Process != nil {
			_ = p.Process.Kill()
		}
	}
	h.procs = nil
}

// Do runs f on an OS thread switched into the namespace. Sockets f creates
// belong to the namespace for their whole life, on any thread.
func (h *Host) Do(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// The thread is not unlocked: it dies with this goroutine rather
		// than return to the pool in a foreign namespace.
		target, err := netns.GetFromName(h.NS)
		if err != nil {
			errc <- err
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			errc <- err
			return
		}
		errc <- f()
	}()
	return <-errc
}

// DialContext dials from inside the namespace (for gRPC and HTTP clients).
func (h *Host) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := h.Do(func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// Ask is harness.Ask from inside the namespace.
func (h *Host) Ask(addr string, source netip.Addr, timeout time.Duration) (r Reply, err error) {
	_ = h.Do(func() error { r, err = Ask(addr, source, timeout); return nil })
	return r, err
}

// AskUDP is harness.AskUDP from inside the namespace.
func (h *Host) AskUDP(addr, payload string, timeout time.Duration) (r Reply, err error) {
	_ = h.Do(func() error { r, err = AskUDP(addr, payload, timeout); return nil })
	return r, err
}

// StartBackend starts a Backend listening inside the namespace.
func (h *Host) StartBackend(t testing.TB, name, addr string) *Backend {
	t.Helper()
	var b *Backend
	err := h.Do(func() (err error) { b, err = NewBackend(name, addr); return err })
	if err != nil {
		t.Fatalf("backend %s in %s: %v", name, h.Name, err)
	}
	t.Cleanup(b.Close)
	return b
}
