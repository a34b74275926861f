// Command userspace compares, in one run, HTTP through portal's userspace
// proxy with HTTP through HAProxy (mode tcp) and directly to nginx, using
// wrk, with and without keep-alive. Run it through bench/userspace/run.sh,
// which gives it a fresh network namespace (its own loopback, conntrack
// table and TIME_WAIT space).
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	portalv1 "github.com/portal-lb/portal/proto/portal/v1"
)

var (
	portald  = flag.String("portald", "bin/portald", "portald binary")
	rounds   = flag.Int("rounds", 3, "rounds (contenders alternate; medians reported)")
	duration = flag.Duration("d", 5*time.Second, "wrk duration per run")
	conns    = flag.Int("c", 32, "wrk connections")
	threads  = flag.Int("t", 1, "wrk threads")
)

const (
	backendA   = "127.0.0.1:18081"
	backendB   = "127.0.0.1:18082"
	haproxyFE  = "127.0.0.1:18090"
	portalGRPC = "127.0.0.1:17400"
	portalPort = 18100
)

type target struct {
	name string
	addr string
	pid  int
}

type sample struct {
	rps      float64
	p50, p99 time.Duration
}

func main() {
	flag.Parse()
	dir, err := os.MkdirTemp("", "portal-bench-us-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	var procs []*exec.Cmd
	defer func() {
		for _, p := range procs {
			_ = p.Process.Kill()
			_ = p.Wait()
		}
	}()
	start := func(name string, args ...string) *exec.Cmd {
		cmd := exec.Command(name, args...)
		logf, _ := os.Create(filepath.Join(dir, filepath.Base(name)+".log"))
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			log.Fatalf("%s: %v", name, err)
		}
		procs = append(procs, cmd)
		return cmd
	}

	nginxConf := filepath.Join(dir, "nginx.conf")
	must(os.WriteFile(nginxConf, []byte(fmt.Sprintf(`worker_processes 1;
daemon off;
pid %[1]s/nginx.pid;
error_log %[1]s/nginx-error.log;
events { worker_connections 8192; }
http {
  access_log off;
  keepalive_requests 1000000;
  server { listen %[2]s reuseport; location / { return 200 "a\n"; } }
  server { listen %[3]s reuseport; location / { return 200 "b\n"; } }
}
`, dir, backendA, backendB)), 0o644))
	start("nginx", "-c", nginxConf, "-p", dir)

	haCfg := filepath.Join(dir, "haproxy.cfg")
	must(os.WriteFile(haCfg, []byte(fmt.Sprintf(`global
  maxconn 8000
defaults
  mode tcp
  timeout connect 2s
  timeout client 60s
  timeout server 60s
frontend fe
  bind %s
  default_backend be
backend be
  balance roundrobin
  server a %s
  server b %s
`, haproxyFE, backendA, backendB)), 0o644))
	ha := start("haproxy", "-db", "-f", haCfg)

	pd := start(*portald, "--data-dir", filepath.Join(dir, "portal-data"), "--grpc-addr", portalGRPC,
		"--http-addr", "127.0.0.1:17480", "--raft-addr", "127.0.0.1:17401", "--log-level", "warn")
	portalAddr := configurePortal()

	for _, a := range []string{backendA, backendB, haproxyFE, portalAddr} {
		waitTCP(a)
	}
	targets := []target{
		{name: "nginx direct", addr: backendA},
		{name: "portal userspace", addr: portalAddr, pid: pd.Process.Pid},
		{name: "HAProxy tcp", addr: haproxyFE, pid: ha.Process.Pid},
	}
	modes := []string{"keep-alive", "close"}
	results := map[string][]sample{}
	for r := 0; r < *rounds; r++ {
		for i := range targets {
			tg := targets[(i+r)%len(targets)] // alternate the order every round
			for _, mode := range modes {
				s := runWrk(tg.addr, mode == "close")
				results[tg.name+"/"+mode] = append(results[tg.name+"/"+mode], s)
				fmt.Fprintf(os.Stderr, "round %d %-17s %-10s %8.0f req/s p50 %v p99 %v\n", r+1, tg.name, mode, s.rps, s.p50, s.p99)
			}
		}
	}

	fmt.Printf("wrk -t%d -c%d -d%s --latency, %d rounds, medians; nginx: 1 worker, 2 backends (direct: one)\n\n", *threads, *conns, *duration, *rounds)
	fmt.Println("| target | mode | req/s | p50 ms | p99 ms | req/s vs HAProxy | p99 vs HAProxy |")
	fmt.Println("|---|---|---:|---:|---:|---:|---:|")
	for _, mode := range modes {
		ha := median(results["HAProxy tcp/"+mode])
		for _, tg := range targets {
			m := median(results[tg.name+"/"+mode])
			fmt.Printf("| %s | %s | %.0f | %.2f | %.2f | %.2fx | %.2fx |\n", tg.name, mode, m.rps, ms(m.p50), ms(m.p99),
				m.rps/ha.rps, float64(m.p99)/float64(ha.p99))
		}
	}
	fmt.Println()
	fmt.Println("| proxy | peak RSS (VmHWM) |")
	fmt.Println("|---|---:|")
	for _, tg := range targets[1:] {
		fmt.Printf("| %s | %s |\n", tg.name, peakRSS(tg.pid))
	}
}

func must(err error) {
	if err != nil {
		log.Fatal(err)
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func median(s []sample) sample {
	rps := make([]float64, len(s))
	p50 := make([]time.Duration, len(s))
	p99 := make([]time.Duration, len(s))
	for i, x := range s {
		rps[i], p50[i], p99[i] = x.rps, x.p50, x.p99
	}
	slices.Sort(rps)
	slices.Sort(p50)
	slices.Sort(p99)
	return sample{rps: rps[len(s)/2], p50: p50[len(s)/2], p99: p99[len(s)/2]}
}

// configurePortal creates the service and its two endpoints through the API
// and returns the ClusterIP frontend.
func configurePortal() string {
	var conn *grpc.ClientConn
	var err error
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err = grpc.NewClient(portalGRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
	must(err)
	defer conn.Close()
	c := portalv1.NewLoadBalancerServiceClient(conn)
	var svc *portalv1.ApplyServiceResponse
	for {
		svc, err = c.ApplyService(ctx, &portalv1.ApplyServiceRequest{Service: &portalv1.Service{
			Metadata: &portalv1.ObjectMeta{Name: "bench"},
			Spec:     &portalv1.ServiceSpec{Ports: []*portalv1.ServicePort{{Name: "http", Port: portalPort}}},
		}})
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			log.Fatalf("portald: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	sub := func(addr string) *portalv1.EndpointSubset {
		host, port, _ := net.SplitHostPort(addr)
		p, _ := strconv.Atoi(port)
		return &portalv1.EndpointSubset{Addresses: []*portalv1.EndpointAddress{{Ip: host}}, Ports: []*portalv1.EndpointPort{{Name: "http", Port: int32(p)}}}
	}
	_, err = c.PutEndpoints(ctx, &portalv1.PutEndpointsRequest{Endpoints: &portalv1.Endpoints{
		Metadata: &portalv1.ObjectMeta{Name: "bench"}, Subsets: []*portalv1.EndpointSubset{sub(backendA), sub(backendB)},
	}})
	must(err)
	return net.JoinHostPort(svc.GetService().GetSpec().GetClusterIp(), strconv.Itoa(portalPort))
}

func waitTCP(addr string) {
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			log.Fatalf("%s not reachable: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

var (
	rpsRe = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	pctRe = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([0-9.]+)(us|ms|s)\s*$`)
)

func runWrk(addr string, closeConn bool) sample {
	args := []string{fmt.Sprintf("-t%d", *threads), fmt.Sprintf("-c%d", *conns), "-d" + duration.String(), "--latency"}
	if closeConn {
		args = append(args, "-H", "Connection: close")
	}
	args = append(args, "http://"+addr+"/")
	out, err := exec.Command("wrk", args...).CombinedOutput()
	if err != nil {
		log.Fatalf("wrk %v: %v\n%s", args, err, out)
	}
	text := string(out)
	if strings.Contains(text, "Non-2xx") {
		log.Fatalf("wrk saw errors against %s:\n%s", addr, text)
	}
	m := rpsRe.FindStringSubmatch(text)
	if m == nil {
		log.Fatalf("cannot parse wrk output:\n%s", text)
	}
	var s sample
	s.rps, _ = strconv.ParseFloat(m[1], 64)
	for _, p := range pctRe.FindAllStringSubmatch(text, -1) {
		v, _ := strconv.ParseFloat(p[2], 64)
		unit := map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second}[p[3]]
		d := time.Duration(v * float64(unit))
		if p[1] == "50" {
			s.p50 = d
		} else {
			s.p99 = d
		}
	}
	return s
}

func peakRSS(pid int) string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "?"
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			return strings.TrimSpace(strings.TrimPrefix(line, "VmHWM:"))
		}
	}
	return "?"
}
