// Command iptables measures the iptables dataplane inside the network
// namespace it is started in (bench/iptables/run.sh gives each phase a
// fresh one):
//
//	-phase sync:    full sync, partial sync after one endpoint change, and
//	                the floor: iptables-restore alone on the identical text
//	-phase latency: API write -> rules programmed, through a real portald
package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"log"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/portal-lb/portal/dataplane"
	"github.com/portal-lb/portal/dataplane/iptables"
	portalv1 "github.com/portal-lb/portal/proto/portal/v1"
)

var (
	phase     = flag.String("phase", "sync", "sync or latency")
	services  = flag.Int("services", 1000, "services (one TCP port each)")
	endpoints = flag.Int("endpoints", 10, "endpoints per service")
	rounds    = flag.Int("rounds", 3, "rounds (median reported)")
	writes    = flag.Int("writes", 50, "latency phase: endpoint writes measured")
	portald   = flag.String("portald", "bin/portald", "latency phase: portald binary")
	command   = flag.String("iptables", "iptables", "iptables variant: iptables, iptables-nft or iptables-legacy")
)

func main() {
	flag.Parse()
	switch *phase {
	case "sync":
		syncPhase()
	case "latency":
		latencyPhase()
	default:
		log.Fatalf("unknown phase %q", *phase)
	}
}

// recorder keeps the text of the last restore.
type recorder struct {
	iptables.ExecRunner
	mu   sync.Mutex
	last []byte
}

func (r *recorder) Restore(ctx context.Context, input []byte) error {
	r.mu.Lock()
	r.last = slices.Clone(input)
	r.mu.Unlock()
	return r.ExecRunner.Restore(ctx, input)
}

func ip4(a, b, c, d int) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(a), byte(b), byte(c), byte(d)})
}

func desired(n, eps, moved int) *dataplane.Desired {
	d := &dataplane.Desired{}
	for s := 0; s < n; s++ {
		v := &dataplane.VirtualServer{Service: fmt.Sprintf("default/svc-%d", s), Port: "http", Kind: dataplane.KindClusterIP, Protocol: "TCP",
			Frontend: netip.AddrPortFrom(ip4(100, 64+s/65536, (s/256)%256, s%256), 80)}
		for e := 0; e < eps; e++ {
			addr := ip4(10, s/256%256, s%256, 10+e)
			if s == n/2 && e == 0 {
				addr = ip4(10, s/256%256, s%256, 100+moved)
			}
			v.Backends = append(v.Backends, dataplane.Backend{Addr: netip.AddrPortFrom(addr, 8080)})
		}
		d.Servers = append(d.Servers, v)
	}
	return d
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func ms(d time.Duration) string {
	return strconv.FormatFloat(float64(d.Microseconds())/1000, 'f', 1, 64)
}

func syncPhase() {
	ctx := context.Background()
	var full, resync, partial, floor []time.Duration
	rules := 0
	for r := 0; r < *rounds; r++ {
		rec := &recorder{ExecRunner: iptables.ExecRunner{Command: *command}}
		_ = iptables.Cleanup(ctx, rec.ExecRunner)
		p := iptables.New(iptables.Config{Runner: rec})
		t0 := time.Now()
		must(p.Sync(ctx, desired(*services, *endpoints, 0)))
		full = append(full, time.Since(t0))
		text := rec.last
		rules = bytes.Count(text, []byte("\n-A "))

		t0 = time.Now()
		must(p.Sync(ctx, desired(*services, *endpoints, r+1)))
		partial = append(partial, time.Since(t0))

		// A full resync over rules already present (what the periodic one does).
		q := iptables.New(iptables.Config{Runner: rec})
		t0 = time.Now()
		must(q.Sync(ctx, desired(*services, *endpoints, r+1)))
		resync = append(resync, time.Since(t0))

		// The floor: iptables-restore alone, same text, from the same start.
		must(iptables.Cleanup(ctx, rec.ExecRunner))
		t0 = time.Now()
		must(rec.ExecRunner.Restore(ctx, text))
		floor = append(floor, time.Since(t0))
		must(iptables.Cleanup(ctx, rec.ExecRunner))
	}
	f, fl, rs, pa := median(full), median(floor), median(resync), median(partial)
	fmt.Printf("| %s | %d | %d | %s | %s | %.2fx | %s | %s |\n", *command, *services, rules, ms(f), ms(fl), float64(f)/float64(fl), ms(rs), ms(pa))
}

func must(err error) {
	if err != nil {
		log.Fatal(err)
	}
}

// latencyPhase runs portald (iptables dataplane) here, creates the
// services, then times endpoint writes until the dataplane reports the
// write's revision programmed.
func latencyPhase() {
	dir, err := os.MkdirTemp("", "portal-bench-ipt-")
	must(err)
	defer os.RemoveAll(dir)
	cmd := exec.Command(*portald, "--dataplane", "iptables", "--data-dir", filepath.Join(dir, "data"), "--log-level", "warn",
		"--service-cidr", "100.64.0.0/16", "--lb-pool", "100.65.0.0/16", "--allow-loopback-endpoints=false")
	cmd.Stderr = os.Stderr
	must(cmd.Start())
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		_ = iptables.Cleanup(context.Background(), iptables.ExecRunner{})
	}()
	conn, err := grpc.NewClient("127.0.0.1:7400", grpc.WithTransportCredentials(insecure.NewCredentials()))
	must(err)
	c := portalv1.NewLoadBalancerServiceClient(conn)
	ctx := context.Background()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := c.ListServices(ctx, &portalv1.ListServicesRequest{}); err == nil {
			break
		}
		if time.Now().After(deadline) {
			log.Fatal("portald not ready")
		}
		time.Sleep(100 * time.Millisecond)
	}
	put := func(s, moved int) uint64 {
		ss := &portalv1.EndpointSubset{Ports: []*portalv1.EndpointPort{{Name: "http", Port: 8080}}}
		for e := 0; e < *endpoints; e++ {
			last := 10 + e
			if e == 0 {
				last += moved
			}
			ss.Addresses = append(ss.Addresses, &portalv1.EndpointAddress{Ip: fmt.Sprintf("10.%d.%d.%d", s/256%256, s%256, last)})
		}
		r, err := c.PutEndpoints(ctx, &portalv1.PutEndpointsRequest{Endpoints: &portalv1.Endpoints{
			Metadata: &portalv1.ObjectMeta{Name: fmt.Sprintf("svc-%d", s)}, Subsets: []*portalv1.EndpointSubset{ss}}})
		must(err)
		return r.GetEndpoints().GetMetadata().GetResourceVersion()
	}
	var rv uint64
	for s := 0; s < *services; s++ {
		_, err := c.CreateService(ctx, &portalv1.CreateServiceRequest{Service: &portalv1.Service{
			Metadata: &portalv1.ObjectMeta{Name: fmt.Sprintf("svc-%d", s)},
			Spec:     &portalv1.ServiceSpec{Ports: []*portalv1.ServicePort{{Name: "http", Port: 80, TargetPort: "8080"}}}}})
		must(err)
		rv = put(s, 0)
	}
	waitSynced(rv, 5*time.Minute)
	var lat []time.Duration
	for i := 0; i < *writes; i++ {
		t0 := time.Now()
		rv := put(i%*services, 100+i)
		waitSynced(rv, 30*time.Second)
		lat = append(lat, time.Since(t0))
		time.Sleep(50 * time.Millisecond) // separate writes: each its own sync
	}
	slices.Sort(lat)
	fmt.Printf("| %d | %d | %s | %s |\n", *services, *writes, ms(lat[len(lat)/2]), ms(lat[len(lat)*99/100]))
}

// waitSynced polls portald's synced-revision metric.
func waitSynced(rv uint64, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for {
		if v := metric("portal_dataplane_synced_revision"); uint64(v) >= rv {
			return
		}
		if time.Now().After(deadline) {
			log.Fatalf("revision %d not programmed within %v", rv, timeout)
		}
		time.Sleep(time.Millisecond)
	}
}

func metric(name string) float64 {
	resp, err := http.Get("http://127.0.0.1:7480/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}
