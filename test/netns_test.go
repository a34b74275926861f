package test

import (
	"bufio"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	portalv1 "github.com/portal-lb/portal/proto/portal/v1"
	"github.com/portal-lb/portal/test/harness"
)

// The netns topology (all on one bridge; the gateway routes between the
// client and backend subnets, so replies that are not masqueraded still
// return through it, as an appliance's backends route them):
//
//	client   198.18.1.10-13/24  routes 198.19.0.0/16, 198.18.2.0/24 via 198.18.1.1
//	gateway  198.18.1.1/24 + 198.18.2.1/24, ip_forward, portald
//	backends 198.18.2.11-40/24  routes 198.18.1.0/24, 198.19.0.0/16 via 198.18.2.1
//
// Service CIDR 198.19.0.0/24, LB pool 198.19.1.0/24, external IPs 198.19.2.0/24.
const (
	gwClientIP  = "198.18.1.1"
	gwBackendIP = "198.18.2.1"
)

type netnsEnv struct {
	dataplane string
	topo      *harness.Topology
	gw        *harness.Host
	client    *harness.Host
	backends  *harness.Host
	portald   *harness.Portald
	bin       string
	args      []string
	api       portalv1.LoadBalancerServiceClient

	mu       sync.Mutex
	nextAddr int
}

// newNetnsEnv builds the topology and starts portald in the gateway with
// the given dataplane.
func newNetnsEnv(t *testing.T, dataplane string, extra ...string) *netnsEnv {
	harness.RequireRoot(t, "iptables", "iptables-save", "iptables-restore")
	bin, _ := harness.Binaries(t)
	tp := harness.NewTopology(t)
	e := &netnsEnv{dataplane: dataplane, topo: tp, bin: bin}
	e.gw = tp.AddHost("gw", gwClientIP+"/24", gwBackendIP+"/24")
	e.gw.Sysctl("net.ipv4.ip_forward=1")
	if dataplane == "userspace" {
		// The proxy listens on the virtual IPs: deliver them locally.
		e.gw.IP("route", "add", "local", "198.19.0.0/16", "dev", "lo")
	}
	var clientAddrs, backendAddrs []string
	for i := 0; i < 4; i++ {
		clientAddrs = append(clientAddrs, fmt.Sprintf("198.18.1.%d/24", 10+i))
	}
	for i := 11; i <= 40; i++ {
		backendAddrs = append(backendAddrs, fmt.Sprintf("198.18.2.%d/24", i))
	}
	e.client = tp.AddHost("client", clientAddrs...)
	e.client.IP("route", "add", "198.19.0.0/16", "via", gwClientIP)
	e.client.IP("route", "add", "198.18.2.0/24", "via", gwClientIP)
	e.backends = tp.AddHost("backends", backendAddrs...)
	e.backends.IP("route", "add", "198.18.1.0/24", "via", gwBackendIP)
	e.backends.IP("route", "add", "198.19.0.0/16", "via", gwBackendIP)
	e.args = append([]string{
		"--dataplane", dataplane, "--node-id", "gw-1", "--data-dir", t.TempDir(),
		"--grpc-addr", "127.0.0.1:7400", "--http-addr", "127.0.0.1:7480", "--raft-addr", "127.0.0.1:7401",
		"--service-cidr", "198.19.0.0/24", "--lb-pool", "198.19.1.0/24",
		"--node-addresses", gwClientIP, "--allow-loopback-endpoints=false",
		"--drain-grace", "1s", "--resync-interval", "2s",
	}, extra...)
	e.start(t)
	return e
}

func (e *netnsEnv) start(t *testing.T) {
	e.portald = harness.StartPortald(t, e.bin, harness.Options{Host: e.gw, GRPC: "127.0.0.1:7400", HTTP: "127.0.0.1:7480", Args: e.args})
	conn, err := grpc.NewClient("passthrough:///127.0.0.1:7400", grpc.WithContextDialer(e.portald.Dialer()),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	e.api = portalv1.NewLoadBalancerServiceClient(conn)
}

func (e *netnsEnv) API() portalv1.LoadBalancerServiceClient { return e.api }

// Programmed polls portald's synced-revision metric.
func (e *netnsEnv) Programmed(t *testing.T, rv uint64) {
	t.Helper()
	harness.Eventually(t, 10*time.Second, "dataplane programmed", func() error {
		got, err := e.metric("portal_dataplane_synced_revision")
		if err != nil {
			return err
		}
		if uint64(got) < rv {
			return fmt.Errorf("programmed revision %v < %d", got, rv)
		}
		return nil
	})
}

func (e *netnsEnv) metric(name string) (float64, error) {
	resp, err := e.portald.HTTPClient().Get("http://127.0.0.1:7480/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	return 0, fmt.Errorf("no metric %s", name)
}

func (e *netnsEnv) Backend(t *testing.T, name string) *harness.Backend {
	e.mu.Lock()
	e.nextAddr++
	ip := fmt.Sprintf("198.18.2.%d", 10+e.nextAddr)
	e.mu.Unlock()
	return e.backends.StartBackend(t, name, ip+":8080")
}

func (e *netnsEnv) Client(i int) netip.Addr {
	return netip.MustParseAddr(fmt.Sprintf("198.18.1.%d", 10+i))
}

func (e *netnsEnv) NodeAddr() netip.Addr   { return netip.MustParseAddr(gwClientIP) }
func (e *netnsEnv) ExternalIP() netip.Addr { return netip.MustParseAddr("198.19.2.1") }

func (e *netnsEnv) Ask(t *testing.T, client int, addr netip.AddrPort) (harness.Reply, error) {
	return e.client.Ask(addr.String(), e.Client(client), 2*time.Second)
}

func (e *netnsEnv) AskUDP(t *testing.T, client int, addr netip.AddrPort) (harness.Reply, error) {
	return e.client.AskUDP(addr.String(), "ping", 2*time.Second)
}

// TestNetnsUserspaceBehaviour runs the behaviour table through a real
// portald with the userspace dataplane in a gateway namespace.
func TestNetnsUserspaceBehaviour(t *testing.T) {
	runBehaviour(t, "userspace", func(t *testing.T) Env { return newNetnsEnv(t, "userspace") })
}

// TestNetnsIPTablesBehaviour runs the behaviour table through a real
// portald with the iptables dataplane in a gateway namespace.
func TestNetnsIPTablesBehaviour(t *testing.T) {
	runBehaviour(t, "iptables", func(t *testing.T) Env { return newNetnsEnv(t, "iptables") })
}

func (e *netnsEnv) AskFromBackend(t *testing.T, b *harness.Backend, addr netip.AddrPort) (harness.Reply, error) {
	return e.backends.Ask(addr.String(), b.Addr.Addr(), 2*time.Second)
}

func (e *netnsEnv) Gateway(args ...string) (string, error) {
	return e.gw.Run(args[0], args[1:]...)
}

// Restart stops portald with SIGTERM and starts it again on the same data.
func (e *netnsEnv) Restart(t *testing.T) {
	e.portald.Stop(t)
	e.start(t)
}

// Dataplane names the dataplane under test.
func (e *netnsEnv) Dataplane() string { return e.dataplane }

// Client returns the client host (for long-lived connections).
func (e *netnsEnv) ClientHost() *harness.Host { return e.client }

// Portald is the running portald.
func (e *netnsEnv) Portald() (*harness.Portald, string) { return e.portald, e.bin }
