// Command etcd compares write throughput and latency of a 3-node portal
// cluster with a 3-node etcd cluster on the same loopback, at the same
// client concurrency, fsync on in both, and the time from killing each
// leader to the first successful write. It is a separate module so that
// portal itself does not depend on etcd's client.
//
//	cd bench/etcd && go run . -portald ../../bin/portald
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	portalv1 "github.com/portal-lb/portal/proto/portal/v1"
)

var (
	portaldBin = flag.String("portald", "../../bin/portald", "portald binary")
	etcdBin    = flag.String("etcd", "etcd", "etcd binary")
	writes     = flag.Int("n", 3000, "writes per run")
	conc       = flag.String("c", "1,16,64", "client concurrencies")
	rounds     = flag.Int("rounds", 3, "rounds per concurrency (median reported)")
)

type proc struct {
	name string
	cmd  *exec.Cmd
}

type system interface {
	name() string
	write(ctx context.Context, client, i int) error
	leader() string
	kill(node string)
	close()
}

func main() {
	flag.Parse()
	dir, err := os.MkdirTemp("", "portal-bench-etcd-")
	must(err)
	defer os.RemoveAll(dir)
	p := startPortal(dir)
	defer p.close()
	e := startEtcd(dir)
	defer e.close()

	fmt.Printf("machine: %d CPUs; %s; portal %s\n", numCPU(), etcdVersion(), *portaldBin)
	fmt.Printf("command: cd bench/etcd && go run . -n %d -c %s -rounds %d\n\n", *writes, *conc, *rounds)
	fmt.Println("| clients | system | writes/s | p50 ms | p99 ms | portal/etcd writes/s | portal/etcd p99 |")
	fmt.Println("|---:|---|---:|---:|---:|---:|---:|")
	seq := 0
	for _, f := range strings.Split(*conc, ",") {
		c, _ := strconv.Atoi(f)
		res := map[string][]result{}
		for r := 0; r < *rounds; r++ {
			order := []system{p, e} // alternate who goes first
			if r%2 == 1 {
				order = []system{e, p}
			}
			for _, s := range order {
				seq++
				res[s.name()] = append(res[s.name()], run(s, c, *writes, seq))
			}
		}
		mp, me := median(res["portal"]), median(res["etcd"])
		fmt.Printf("| %d | portal | %.0f | %.2f | %.2f | %.2fx | %.2fx |\n", c, mp.rate, ms(mp.p50), ms(mp.p99), mp.rate/me.rate, float64(mp.p99)/float64(me.p99))
		fmt.Printf("| %d | etcd | %.0f | %.2f | %.2f | | |\n", c, me.rate, ms(me.p50), ms(me.p99))
	}
	fmt.Println()
	fmt.Println("| system | leader killed (SIGKILL) -> first successful write |")
	fmt.Println("|---|---:|")
	for _, s := range []system{p, e} {
		fmt.Printf("| %s | %s |\n", s.name(), outage(s).Round(time.Millisecond))
	}
}

func must(err error) {
	if err != nil {
		log.Fatal(err)
	}
}

func numCPU() int {
	out, _ := exec.Command("nproc").Output()
	n, _ := strconv.Atoi(strings.TrimSpace(string(out)))
	return n
}

func etcdVersion() string {
	out, _ := exec.Command(*etcdBin, "--version").Output()
	return strings.SplitN(strings.TrimSpace(string(out)), "\n", 2)[0]
}

type result struct {
	rate     float64
	p50, p99 time.Duration
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func median(rs []result) result {
	slices.SortFunc(rs, func(a, b result) int {
		switch {
		case a.rate < b.rate:
			return -1
		case a.rate > b.rate:
			return 1
		}
		return 0
	})
	m := rs[len(rs)/2]
	p50s, p99s := []time.Duration{}, []time.Duration{}
	for _, r := range rs {
		p50s, p99s = append(p50s, r.p50), append(p99s, r.p99)
	}
	slices.Sort(p50s)
	slices.Sort(p99s)
	m.p50, m.p99 = p50s[len(rs)/2], p99s[len(rs)/2]
	return m
}

func run(s system, c, n, seq int) result {
	lat := make([]time.Duration, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < c; w++ {
		wg.Add(1)
		go func(client int) {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				t0 := time.Now()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				err := s.write(ctx, client, seq*1000000+i)
				cancel()
				if err != nil {
					log.Fatalf("%s write: %v", s.name(), err)
				}
				lat[i] = time.Since(t0)
			}
		}(w)
	}
	wg.Wait()
	el := time.Since(start)
	slices.Sort(lat)
	return result{rate: float64(n) / el.Seconds(), p50: lat[n/2], p99: lat[n*99/100]}
}

// outage kills the leader and measures until a write succeeds again.
func outage(s system) time.Duration {
	leader := s.leader()
	t0 := time.Now()
	s.kill(leader)
	for i := 0; ; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		err := s.write(ctx, 0, 900000000+i)
		cancel()
		if err == nil {
			return time.Since(t0)
		}
		if time.Since(t0) > 30*time.Second {
			log.Fatalf("%s: no write 30s after killing the leader: %v", s.name(), err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func start(dir, name string, bin string, args ...string) *proc {
	cmd := exec.Command(bin, args...)
	f, _ := os.Create(filepath.Join(dir, name+".log"))
	cmd.Stdout, cmd.Stderr = f, f
	must(cmd.Start())
	return &proc{name: name, cmd: cmd}
}

// --- portal ---

type portalSys struct {
	procs   map[string]*proc
	addrs   map[string]string
	clients map[string]portalv1.LoadBalancerServiceClient
	cluster portalv1.ClusterServiceClient
	conns   []*grpc.ClientConn
	alive   []string
	mu      sync.Mutex
}

func startPortal(dir string) *portalSys {
	p := &portalSys{procs: map[string]*proc{}, addrs: map[string]string{}, clients: map[string]portalv1.LoadBalancerServiceClient{}}
	for i := 1; i <= 3; i++ {
		id := fmt.Sprintf("p%d", i)
		grpcAddr := fmt.Sprintf("127.0.0.1:%d", 27400+10*i)
		args := []string{"--node-id", id, "--data-dir", filepath.Join(dir, id), "--grpc-addr", grpcAddr,
			"--raft-addr", fmt.Sprintf("127.0.0.1:%d", 27401+10*i), "--http-addr", fmt.Sprintf("127.0.0.1:%d", 27402+10*i),
			"--dataplane", "none", "--log-level", "warn", "--service-cidr", "10.96.0.0/12"}
		if i == 1 {
			args = append(args, "--bootstrap")
		} else {
			args = append(args, "--join", "127.0.0.1:27410")
		}
		p.procs[id] = start(dir, id, *portaldBin, args...)
		p.addrs[id] = grpcAddr
		conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		must(err)
		p.conns = append(p.conns, conn)
		p.clients[id] = portalv1.NewLoadBalancerServiceClient(conn)
		if i == 1 {
			p.cluster = portalv1.NewClusterServiceClient(conn)
		}
		p.alive = append(p.alive, id)
		time.Sleep(1500 * time.Millisecond)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := p.cluster.GetCluster(context.Background(), &portalv1.GetClusterRequest{})
		if err == nil && len(c.GetNodes()) == 3 {
			ready := 0
			for _, n := range c.GetNodes() {
				if n.GetReady() {
					ready++
				}
			}
			if ready == 3 {
				break
			}
		}
		if time.Now().After(deadline) {
			log.Fatalf("portal cluster not ready: %v %v", c, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return p
}

func (p *portalSys) name() string { return "portal" }

func (p *portalSys) leader() string {
	for _, id := range p.alive {
		conn, _ := grpc.NewClient(p.addrs[id], grpc.WithTransportCredentials(insecure.NewCredentials()))
		c, err := portalv1.NewClusterServiceClient(conn).GetCluster(context.Background(), &portalv1.GetClusterRequest{})
		conn.Close()
		if err == nil && c.GetLeader() != "" {
			return c.GetLeader()
		}
	}
	log.Fatal("portal: no leader")
	return ""
}

// write goes to the leader when it is alive (as etcd's client does after
// its first redirect), otherwise to any live node (which forwards).
func (p *portalSys) write(ctx context.Context, client, i int) error {
	p.mu.Lock()
	target := p.alive[client%len(p.alive)]
	if len(p.alive) == 3 {
		target = "p1"
	}
	c := p.clients[target]
	p.mu.Unlock()
	_, err := c.CreateService(ctx, &portalv1.CreateServiceRequest{Service: &portalv1.Service{
		Metadata: &portalv1.ObjectMeta{Name: fmt.Sprintf("s-%d", i)},
		Spec:     &portalv1.ServiceSpec{Ports: []*portalv1.ServicePort{{Port: 80}}},
	}})
	return err
}

func (p *portalSys) kill(node string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	_ = p.procs[node].cmd.Process.Signal(syscall.SIGKILL)
	p.alive = slices.DeleteFunc(p.alive, func(id string) bool { return id == node })
}

func (p *portalSys) close() {
	for _, c := range p.conns {
		c.Close()
	}
	for _, pr := range p.procs {
		_ = pr.cmd.Process.Kill()
		_ = pr.cmd.Wait()
	}
}

// --- etcd ---

type etcdSys struct {
	procs  map[string]*proc
	client *clientv3.Client
	val    string
}

func startEtcd(dir string) *etcdSys {
	e := &etcdSys{procs: map[string]*proc{}, val: strings.Repeat("x", 100)}
	var initial []string
	for i := 1; i <= 3; i++ {
		initial = append(initial, fmt.Sprintf("e%d=http://127.0.0.1:%d", i, 23800+i))
	}
	var endpoints []string
	for i := 1; i <= 3; i++ {
		id := fmt.Sprintf("e%d", i)
		client := fmt.Sprintf("http://127.0.0.1:%d", 23790+i)
		endpoints = append(endpoints, client)
		e.procs[id] = start(dir, id, *etcdBin, "--name", id, "--data-dir", filepath.Join(dir, id),
			"--listen-client-urls", client, "--advertise-client-urls", client,
			"--listen-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", 23800+i),
			"--initial-advertise-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", 23800+i),
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new",
			"--heartbeat-interval", "100", "--election-timeout", "500")
	}
	c, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	must(err)
	e.client = c
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := c.Put(ctx, "warmup", "1")
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			log.Fatalf("etcd not ready: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return e
}

func (e *etcdSys) name() string { return "etcd" }

func (e *etcdSys) write(ctx context.Context, _ int, i int) error {
	_, err := e.client.Put(ctx, fmt.Sprintf("k-%d", i), e.val)
	return err
}

func (e *etcdSys) leader() string {
	for i := 1; i <= 3; i++ {
		st, err := e.client.Status(context.Background(), fmt.Sprintf("http://127.0.0.1:%d", 23790+i))
		if err == nil && st.Leader == st.Header.MemberId {
			return fmt.Sprintf("e%d", i)
		}
	}
	log.Fatal("etcd: no leader")
	return ""
}

func (e *etcdSys) kill(node string) { _ = e.procs[node].cmd.Process.Signal(syscall.SIGKILL) }

func (e *etcdSys) close() {
	e.client.Close()
	for _, pr := range e.procs {
		_ = pr.cmd.Process.Kill()
		_ = pr.cmd.Wait()
	}
}
