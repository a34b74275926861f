// Command createsvc measures CreateService throughput and latency of one
// portal node (real raft store with fsync, real gRPC over loopback) at
// several client concurrencies, and prints a markdown table.
//
//	go run ./bench/createsvc -n 2000 -c 1,16,64
package main

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/portal-lb/portal/cluster"
	portalv1 "github.com/portal-lb/portal/proto/portal/v1"
	"github.com/portal-lb/portal/server"
)

func main() {
	n := flag.Int("n", 2000, "services created per concurrency level")
	conc := flag.String("c", "1,16,64", "client concurrencies")
	rounds := flag.Int("rounds", 3, "rounds per level (median reported)")
	flag.Parse()

	fmt.Printf("machine: %d CPUs, %s/%s, %s\n", runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version())
	fmt.Printf("command: go run ./bench/createsvc -n %d -c %s -rounds %d\n\n", *n, *conc, *rounds)
	fmt.Println("| clients | creates/s (median) | p50 ms | p99 ms | rounds |")
	fmt.Println("|---:|---:|---:|---:|---:|")
	for _, f := range strings.Split(*conc, ",") {
		c, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || c < 1 {
			log.Fatalf("bad concurrency %q", f)
		}
		var results []result
		for r := 0; r < *rounds; r++ {
			results = append(results, runOnce(*n, c))
		}
		slices.SortFunc(results, func(a, b result) int { return cmp.Compare(a.rate, b.rate) })
		m := results[len(results)/2]
		fmt.Printf("| %d | %.0f | %.2f | %.2f | %d |\n", c, m.rate, ms(m.p50), ms(m.p99), *rounds)
	}
}

type result struct {
	rate     float64
	p50, p99 time.Duration
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// runOnce starts a fresh node in a temp dir and creates n services with c
// concurrent clients (a fresh node per round keeps rounds independent).
func runOnce(n, c int) result {
	dir, err := os.MkdirTemp("", "portal-bench-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	st, err := cluster.Open(cluster.Config{
		NodeID: "bench", DataDir: dir, RaftAddr: "127.0.0.1:0", Bootstrap: true, RaftLog: io.Discard,
		Cluster: &portalv1.ClusterConfig{ServiceCidr: "127.96.0.0/16", LbPool: "127.97.0.0/16", NodePortMin: 30000, NodePortMax: 32767},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := st.WaitLeader(wctx); err != nil {
		log.Fatal(err)
	}
	if err := st.EnsureConfig(wctx); err != nil {
		log.Fatal(err)
	}
	gs, _ := server.New(st, server.Options{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go gs.Serve(lis)
	defer gs.Stop()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	cl := portalv1.NewLoadBalancerServiceClient(conn)

	lat := make([]time.Duration, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < c; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				svc := &portalv1.Service{
					Metadata: &portalv1.ObjectMeta{Name: fmt.Sprintf("svc-%d", i)},
					Spec:     &portalv1.ServiceSpec{Type: "NodePort", Ports: []*portalv1.ServicePort{{Port: 80, TargetPort: "8080"}}},
				}
				t0 := time.Now()
				if _, err := cl.CreateService(ctx, &portalv1.CreateServiceRequest{Service: svc}); err != nil {
					log.Fatalf("create %d: %v", i, err)
				}
				lat[i] = time.Since(t0)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	slices.Sort(lat)
	return result{rate: float64(n) / elapsed.Seconds(), p50: lat[n/2], p99: lat[n*99/100]}
}
