package server_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/portal-lb/portal/cluster"
	portalv1 "github.com/portal-lb/portal/proto/portal/v1"
	"github.com/portal-lb/portal/server"
)

var _ server.Store = (*cluster.Store)(nil)

type env struct {
	lb      portalv1.LoadBalancerServiceClient
	cluster portalv1.ClusterServiceClient
	conn    *grpc.ClientConn
	store   *cluster.Store
	reg     *prometheus.Registry
}

// start runs the real store and API on loopback.
func start(t *testing.T) *env {
	t.Helper()
	reg := prometheus.NewRegistry()
	st, err := cluster.Open(cluster.Config{
		NodeID: "n1", DataDir: t.TempDir(), RaftAddr: "127.0.0.1:0", Bootstrap: true, RaftLog: io.Discard, Registerer: reg,
		HeartbeatTimeout: 100 * time.Millisecond, ElectionTimeout: 100 * time.Millisecond,
		Cluster: &portalv1.ClusterConfig{ServiceCidr: "127.96.0.0/16", LbPool: "127.97.0.0/16", NodePortMin: 30000, NodePortMax: 32767, AllowLoopbackEndpoints: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := st.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	if err := st.EnsureConfig(ctx); err != nil {
		t.Fatal(err)
	}
	gs, hs := server.New(st, server.Options{Registerer: reg})
	server.SetServing(hs, true)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(lis)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		gs.Stop()
		st.Close()
	})
	return &env{lb: portalv1.NewLoadBalancerServiceClient(conn), cluster: portalv1.NewClusterServiceClient(conn), conn: conn, store: st, reg: reg}
}

func violations(err error) map[string]string {
	out := map[string]string{}
	for _, d := range status.Convert(err).Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				out[v.GetField()] = v.GetDescription()
			}
		}
	}
	return out
}

func TestInvalidRequestNamesFieldsAndWritesNothing(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	bad := &portalv1.Service{
		Metadata: &portalv1.ObjectMeta{Name: "web"},
		Spec: &portalv1.ServiceSpec{Ports: []*portalv1.ServicePort{
			{Name: "http", Port: 80},
			{Name: "admin", Port: 8080, TargetPort: "Bad Name"},
		}, SessionAffinity: "Sticky"},
	}
	for _, call := range []func() error{
		func() error {
			_, err := e.lb.CreateService(ctx, &portalv1.CreateServiceRequest{Service: bad})
			return err
		},
		func() error {
			_, err := e.lb.ApplyService(ctx, &portalv1.ApplyServiceRequest{Service: bad})
			return err
		},
		func() error {
			_, err := e.lb.UpdateService(ctx, &portalv1.UpdateServiceRequest{Service: bad})
			return err
		},
	} {
		err := call()
		if status.Code(err) != codes.InvalidArgument {
			t.Fatalf("got %v", err)
		}
		v := violations(err)
		if v["spec.ports[1].targetPort"] == "" || v["spec.sessionAffinity"] == "" {
			t.Fatalf("violations %v", v)
		}
	}
	list, err := e.lb.ListServices(ctx, &portalv1.ListServicesRequest{})
	if err != nil || len(list.GetServices()) != 0 {
		t.Fatalf("invalid request wrote something: %v %v", list, err)
	}
	_, err = e.lb.CreateService(ctx, &portalv1.CreateServiceRequest{})
	if status.Code(err) != codes.InvalidArgument || violations(err)["service"] == "" {
		t.Fatalf("missing service: %v", err)
	}
	_, err = e.lb.GetService(ctx, &portalv1.GetServiceRequest{Name: "No"})
	if status.Code(err) != codes.InvalidArgument || violations(err)["name"] == "" {
		t.Fatalf("bad name: %v", err)
	}
	_, err = e.lb.PutEndpoints(ctx, &portalv1.PutEndpointsRequest{Endpoints: &portalv1.Endpoints{
		Metadata: &portalv1.ObjectMeta{Name: "web"},
		Subsets: []*portalv1.EndpointSubset{{
			Addresses: []*portalv1.EndpointAddress{{Ip: "169.254.0.1"}},
			Ports:     []*portalv1.EndpointPort{{Port: 80}},
		}},
	}})
	if status.Code(err) != codes.InvalidArgument || violations(err)["subsets[0].addresses[0].ip"] == "" {
		t.Fatalf("link-local endpoint: %v", err)
	}
}

func TestLoadBalancerLifecycleOverGRPC(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	svc := &portalv1.Service{
		Metadata: &portalv1.ObjectMeta{Name: "web"},
		Spec:     &portalv1.ServiceSpec{Type: "LoadBalancer", Ports: []*portalv1.ServicePort{{Port: 80, TargetPort: "8080"}}},
	}
	resp, err := e.lb.ApplyService(ctx, &portalv1.ApplyServiceRequest{Service: svc})
	if err != nil || resp.GetResult() != "created" {
		t.Fatalf("%v %v", resp, err)
	}
	got := resp.GetService()
	if !strings.HasPrefix(got.GetSpec().GetClusterIp(), "127.96.") || got.GetSpec().GetPorts()[0].GetNodePort() < 30000 ||
		!strings.HasPrefix(got.GetStatus().GetLoadBalancer().GetIngress()[0].GetIp(), "127.97.") || got.GetMetadata().GetNamespace() != "default" ||
		got.GetMetadata().GetUid() == "" || got.GetMetadata().GetCreationTimestamp() == nil {
		t.Fatalf("allocations %v", got)
	}
	again, err := e.lb.ApplyService(ctx, &portalv1.ApplyServiceRequest{Service: svc})
	if err != nil || again.GetResult() != "unchanged" || again.GetService().GetMetadata().GetResourceVersion() != got.GetMetadata().GetResourceVersion() {
		t.Fatalf("re-apply %v %v", again, err)
	}
	ep, err := e.lb.PutEndpoints(ctx, &portalv1.PutEndpointsRequest{Endpoints: &portalv1.Endpoints{
		Metadata: &portalv1.ObjectMeta{Name: "web"},
		Subsets: []*portalv1.EndpointSubset{{
			Addresses: []*portalv1.EndpointAddress{{Ip: "127.0.0.1"}}, // loopback allowed by the embedded setting
			Ports:     []*portalv1.EndpointPort{{Port: 8080}},
		}},
	}})
	if err != nil || ep.GetResult() != "created" {
		t.Fatalf("%v %v", ep, err)
	}
	eps, err := e.lb.ListEndpoints(ctx, &portalv1.ListEndpointsRequest{Namespace: "default", Consistent: true})
	if err != nil || len(eps.GetEndpoints()) != 1 || eps.GetResourceVersion() < ep.GetEndpoints().GetMetadata().GetResourceVersion() {
		t.Fatalf("list endpoints %v %v", eps, err)
	}
	_, err = e.lb.DeleteService(ctx, &portalv1.DeleteServiceRequest{Name: "web", ResourceVersion: 1})
	if status.Code(err) != codes.Aborted {
		t.Fatalf("stale delete: %v", err)
	}
	if _, err := e.lb.DeleteService(ctx, &portalv1.DeleteServiceRequest{Name: "web"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.lb.GetService(ctx, &portalv1.GetServiceRequest{Name: "web"}); status.Code(err) != codes.NotFound {
		t.Fatalf("after delete: %v", err)
	}
	if _, err := e.lb.DeleteEndpoints(ctx, &portalv1.DeleteEndpointsRequest{Name: "web"}); err != nil {
		t.Fatal(err)
	}
}

func TestWatchOverGRPC(t *testing.T) {
	e := start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := e.lb.WatchServices(ctx, &portalv1.WatchServicesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil || first.GetType() != "BOOKMARK" {
		t.Fatalf("%v %v", first, err)
	}
	if _, err := e.lb.CreateService(ctx, &portalv1.CreateServiceRequest{Service: &portalv1.Service{
		Metadata: &portalv1.ObjectMeta{Name: "a"}, Spec: &portalv1.ServiceSpec{Ports: []*portalv1.ServicePort{{Port: 80}}},
	}}); err != nil {
		t.Fatal(err)
	}
	ev, err := stream.Recv()
	if err != nil || ev.GetType() != "ADDED" || ev.GetService().GetMetadata().GetName() != "a" {
		t.Fatalf("%v %v", ev, err)
	}
	old, err := e.lb.WatchServices(ctx, &portalv1.WatchServicesRequest{ResourceVersion: 1})
	if err != nil {
		t.Fatal(err)
	}
	// Revision 1 precedes the config write and is still in history here.
	if ev, err := old.Recv(); err != nil || ev.GetService().GetMetadata().GetName() != "a" {
		t.Fatalf("resume: %v %v", ev, err)
	}
}

func TestReflectionHealthClusterAndMetrics(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	h, err := healthpb.NewHealthClient(e.conn).Check(ctx, &healthpb.HealthCheckRequest{Service: "portal.v1.LoadBalancerService"})
	if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health %v %v", h, err)
	}
	rs, err := rpb.NewServerReflectionClient(e.conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.Send(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	r, err := rs.Recv()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, s := range r.GetListServicesResponse().GetService() {
		names[s.GetName()] = true
	}
	for _, want := range []string{"portal.v1.LoadBalancerService", "portal.v1.ClusterService", "grpc.health.v1.Health"} {
		if !names[want] {
			t.Fatalf("reflection lists %v, missing %s", names, want)
		}
	}
	c, err := e.cluster.GetCluster(ctx, &portalv1.GetClusterRequest{})
	if err != nil || c.GetLeader() != "n1" || len(c.GetNodes()) != 1 {
		t.Fatalf("cluster %v %v", c, err)
	}
	_, _ = e.lb.GetService(ctx, &portalv1.GetServiceRequest{Name: "missing"})

	srv := httptest.NewServer(server.NewHTTPHandler(e.store.Ready, e.reg, false))
	defer srv.Close()
	for path, want := range map[string]string{
		"/healthz": "ok",
		"/readyz":  "ok",
		"/metrics": `portal_grpc_requests_total{code="NotFound",method="GetService"} 1`,
	} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), want) {
			t.Fatalf("%s: %d %q", path, resp.StatusCode, body)
		}
	}
	resp, _ := http.Get(srv.URL + "/metrics")
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, m := range []string{"portal_raft_apply_duration_seconds_bucket", `portal_objects{kind="service"}`, "portal_grpc_request_duration_seconds_bucket"} {
		if !strings.Contains(string(body), m) {
			t.Fatalf("metrics lack %s", m)
		}
	}
}
