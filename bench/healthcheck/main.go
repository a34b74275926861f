// Command healthcheck measures the prober: detection latency (a TCP
// backend stops accepting -> the prober reports it unhealthy) over many
// trials, and the CPU and memory cost of probing 10,000 endpoints every
// second. Run it through bench/healthcheck/run.sh (a fresh network
// namespace: the endpoints are 10,000 loopback addresses answered by one
// listener in a child process, so that accepting is not counted).
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/portal-lb/portal/dataplane/healthcheck"
)

var (
	mode      = flag.String("mode", "bench", "bench or sink (internal)")
	trials    = flag.Int("trials", 50, "detection trials")
	endpoints = flag.Int("endpoints", 10000, "endpoints for the cost phase")
	window    = flag.Duration("window", 30*time.Second, "cost phase measurement window")
)

const sinkPort = 18999

func main() {
	flag.Parse()
	if *mode == "sink" {
		sink()
		return
	}
	detection()
	cost()
}

// sink accepts and closes connections on every loopback address.
func sink() {
	ln, err := net.Listen("tcp", fmt.Sprintf("0.0.0.0:%d", sinkPort))
	if err != nil {
		log.Fatal(err)
	}
	for {
		c, err := ln.Accept()
		if err == nil {
			c.Close()
		}
	}
}

// detection: trials backends, all killed at once; each one's time from the
// kill to its Unhealthy transition.
func detection() {
	check := healthcheck.Check{Type: "TCP", Interval: 200 * time.Millisecond, Timeout: 100 * time.Millisecond, Rise: 2, Fall: 3}
	var mu sync.Mutex
	var killed time.Time
	var lat []time.Duration
	p := healthcheck.New(healthcheck.Config{OnTransition: func() {}})
	var lns []net.Listener
	var targets []healthcheck.Target
	for i := 0; i < *trials; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			log.Fatal(err)
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
		lns = append(lns, ln)
		targets = append(targets, healthcheck.Target{Addr: netip.MustParseAddrPort(ln.Addr().String()), Check: check, Service: "bench"})
	}
	p.Update(targets)
	waitAll(p, targets, healthcheck.Healthy)
	mu.Lock()
	killed = time.Now()
	mu.Unlock()
	for _, ln := range lns {
		ln.Close()
	}
	pending := map[netip.AddrPort]bool{}
	for _, t := range targets {
		pending[t.Addr] = true
	}
	for len(pending) > 0 && time.Since(killed) < 10*time.Second {
		for a := range pending {
			if p.State(a, check) == healthcheck.Unhealthy {
				lat = append(lat, time.Since(killed))
				delete(pending, a)
			}
		}
		time.Sleep(time.Millisecond)
	}
	p.Stop()
	slices.Sort(lat)
	bound := time.Duration(check.Fall)*check.Interval + check.Timeout + 200*time.Millisecond
	fmt.Printf("detection (TCP check, interval %v, timeout %v, unhealthyThreshold %d; %d backends stopped at once):\n\n",
		check.Interval, check.Timeout, check.Fall, len(lat))
	fmt.Println("| trials | p50 ms | p99 ms | max ms | bound (interval x threshold + timeout + 200 ms) |")
	fmt.Println("|---:|---:|---:|---:|---:|")
	fmt.Printf("| %d | %.0f | %.0f | %.0f | %.0f |\n\n", len(lat), ms(lat[len(lat)/2]), ms(lat[len(lat)*99/100]), ms(lat[len(lat)-1]), ms(bound))
}

func waitAll(p *healthcheck.Prober, targets []healthcheck.Target, state string) {
	deadline := time.Now().Add(30 * time.Second)
	for _, t := range targets {
		for p.State(t.Addr, t.Check) != state {
			if time.Now().After(deadline) {
				log.Fatalf("%s never %s", t.Addr, state)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func rss() (cur, peak string) {
	data, _ := os.ReadFile("/proc/self/status")
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			cur = strings.TrimSpace(v)
		}
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			peak = strings.TrimSpace(v)
		}
	}
	return
}

// cost: endpoints loopback addresses probed every second.
func cost() {
	child := exec.Command(os.Args[0], "-mode", "sink")
	if err := child.Start(); err != nil {
		log.Fatal(err)
	}
	defer child.Process.Kill()
	time.Sleep(300 * time.Millisecond)
	check := healthcheck.Check{Type: "TCP", Interval: time.Second, Timeout: 500 * time.Millisecond, Rise: 2, Fall: 3}
	var targets []healthcheck.Target
	for i := 0; i < *endpoints; i++ {
		a := netip.AddrFrom4([4]byte{127, 1 + byte(i/62500), byte(i / 250 % 250), byte(1 + i%250)})
		targets = append(targets, healthcheck.Target{Addr: netip.AddrPortFrom(a, sinkPort), Check: check, Service: "bench"})
	}
	p := healthcheck.New(healthcheck.Config{})
	p.Update(targets)
	waitAll(p, targets, healthcheck.Healthy)
	time.Sleep(2 * time.Second)
	var probes0 int
	for _, s := range p.Statuses() {
		probes0 += s.Successes
	}
	c0, t0 := cpuTime(), time.Now()
	time.Sleep(*window)
	c1, t1 := cpuTime(), time.Now()
	var probes1, unhealthy int
	for _, s := range p.Statuses() {
		probes1 += s.Successes
		if s.State != healthcheck.Healthy {
			unhealthy++
		}
	}
	cur, peak := rss()
	p.Stop()
	wall := t1.Sub(t0)
	fmt.Printf("cost (%d endpoints, TCP check every %v, %v window; the accepting side is another process):\n\n", *endpoints, check.Interval, *window)
	fmt.Println("| endpoints | probes/s | CPU (cores) | RSS | peak RSS | not healthy at the end |")
	fmt.Println("|---:|---:|---:|---:|---:|---:|")
	fmt.Printf("| %d | %.0f | %.2f | %s | %s | %d |\n", *endpoints, float64(probes1-probes0)/wall.Seconds(),
		float64(c1-c0)/float64(wall), cur, peak, unhealthy)
}
