// Package server is portal's gRPC API: it defaults and validates requests,
// calls the store through the Store interface declared here, and maps
// errors to status codes. Reflection and grpc.health.v1 are always served.
package server

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"regexp"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	portalv1 "github.com/portal-lb/portal/proto/portal/v1"
)

// Store is what the API needs from the replicated store. Its errors are
// gRPC status errors and are returned to clients as they are.
type Store interface {
	CreateService(ctx context.Context, svc *portalv1.Service) (*portalv1.Service, error)
	UpdateService(ctx context.Context, svc *portalv1.Service, upsert bool) (*portalv1.Service, string, error)
	DeleteService(ctx context.Context, ns, name string, rv uint64) (*portalv1.Service, error)
	GetService(ctx context.Context, ns, name string, consistent bool) (*portalv1.Service, error)
	ListServices(ctx context.Context, ns string, consistent bool) ([]*portalv1.Service, uint64, error)
	WatchServices(ctx context.Context, ns string, rv uint64, send func(*portalv1.WatchServicesResponse) error) error

	PutEndpoints(ctx context.Context, ep *portalv1.Endpoints) (*portalv1.Endpoints, string, error)
	DeleteEndpoints(ctx context.Context, ns, name string, rv uint64) (*portalv1.Endpoints, error)
	GetEndpoints(ctx context.Context, ns, name string, consistent bool) (*portalv1.Endpoints, error)
	ListEndpoints(ctx context.Context, ns string, consistent bool) ([]*portalv1.Endpoints, uint64, error)
	WatchEndpoints(ctx context.Context, ns string, rv uint64, send func(*portalv1.WatchEndpointsResponse) error) error

	Cluster(ctx context.Context) (*portalv1.GetClusterResponse, error)
	Join(ctx context.Context, req *portalv1.JoinClusterRequest) (*portalv1.GetClusterResponse, error)
	RemoveNode(ctx context.Context, id string) error
	TransferLeadership(ctx context.Context, id string) (string, error)

	// IsLeader and LeaderAddress (the leader's gRPC address) route requests
	// that need the leader.
	IsLeader() bool
	LeaderAddress() string
}

// HealthSource reports this node's health checks of a service's endpoints.
type HealthSource interface {
	ServiceHealth(svc *portalv1.Service, eps *portalv1.Endpoints) []*portalv1.EndpointHealth
}

// Options configures the gRPC server.
type Options struct {
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// ServerOptions are added (for example TLS credentials).
	ServerOptions []grpc.ServerOption
	// NodeID names this node in forwarded requests.
	NodeID string
	// Health is this node's view of endpoint health (nil: all Unknown).
	Health HealthSource
	// ForwardDialOptions dial the leader when a follower forwards a request
	// (transport credentials: insecure when empty).
	ForwardDialOptions []grpc.DialOption
}

// New returns a gRPC server serving the portal API, reflection and health.
// The health service starts NOT_SERVING; call SetServing when ready.
func New(store Store, opts Options) (*grpc.Server, *health.Server) {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	m := newMetrics(opts.Registerer)
	dial := opts.ForwardDialOptions
	if len(dial) == 0 {
		dial = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	fw := newForwarder(store, opts.NodeID, dial)
	sopts := append([]grpc.ServerOption{
		grpc.ChainUnaryInterceptor(m.unary, recoverUnary(log), fw.unary),
		grpc.ChainStreamInterceptor(m.stream, recoverStream(log)),
	}, opts.ServerOptions...)
	gs := grpc.NewServer(sopts...)
	api := &api{store: store, health: opts.Health, nodeID: opts.NodeID, fw: fw}
	portalv1.RegisterLoadBalancerServiceServer(gs, api)
	portalv1.RegisterClusterServiceServer(gs, &clusterAPI{store: store})
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(gs, hs)
	reflection.Register(gs)
	return gs, hs
}

// SetServing marks the API (and each of its services) serving or not.
func SetServing(hs *health.Server, serving bool) {
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if serving {
		st = healthpb.HealthCheckResponse_SERVING
	}
	for _, name := range []string{"", portalv1.LoadBalancerService_ServiceDesc.ServiceName, portalv1.ClusterService_ServiceDesc.ServiceName} {
		hs.SetServingStatus(name, st)
	}
}

// invalid turns violations into INVALID_ARGUMENT with google.rpc.BadRequest.
func invalid(kind, name string, vs []Violation) error {
	if len(vs) == 0 {
		return nil
	}
	lines := make([]string, len(vs))
	br := &errdetails.BadRequest{}
	for i, v := range vs {
		lines[i] = v.Field + ": " + v.Reason
		br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{Field: v.Field, Description: v.Reason})
	}
	what := kind
	if name != "" {
		what = fmt.Sprintf("%s %q", kind, name)
	}
	st := status.New(codes.InvalidArgument, fmt.Sprintf("%s is invalid: %s", what, strings.Join(lines, "; ")))
	if d, err := st.WithDetails(br); err == nil {
		st = d
	}
	return st.Err()
}

func required(field string) error {
	return invalid("request", "", []Violation{{Field: field, Reason: "required"}})
}

type api struct {
	portalv1.UnimplementedLoadBalancerServiceServer
	store  Store
	health HealthSource
	nodeID string
	fw     *forwarder
}

// GetServiceHealth answers this node's view and gathers every other
// node's (asked with local_only, in parallel, 2 s each).
func (a *api) GetServiceHealth(ctx context.Context, req *portalv1.GetServiceHealthRequest) (*portalv1.GetServiceHealthResponse, error) {
	ns, err := ref(req.GetNamespace(), req.GetName())
	if err != nil {
		return nil, err
	}
	svc, err := a.store.GetService(ctx, ns, req.GetName(), false)
	if err != nil {
		return nil, err
	}
	eps, err := a.store.GetEndpoints(ctx, ns, req.GetName(), false)
	if err != nil && status.Code(err) != codes.NotFound {
		return nil, err
	}
	out := &portalv1.GetServiceHealthResponse{}
	if a.health != nil {
		out.Endpoints = a.health.ServiceHealth(svc, eps)
	}
	if req.GetLocalOnly() {
		return out, nil
	}
	cl, err := a.store.Cluster(ctx)
	if err != nil {
		return out, nil
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, n := range cl.GetNodes() {
		if n.GetId() == cl.GetNodeId() {
			continue // this node: answered above
		}
		if n.GetGrpcAddress() == "" {
			out.UnreachableNodes = append(out.UnreachableNodes, n.GetId()+": no API address recorded")
			continue
		}
		wg.Add(1)
		go func(n *portalv1.Node) {
			defer wg.Done()
			var resp *portalv1.GetServiceHealthResponse
			conn, err := a.fw.conn(n.GetGrpcAddress())
			if err == nil {
				cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				resp, err = portalv1.NewLoadBalancerServiceClient(conn).GetServiceHealth(cctx,
					&portalv1.GetServiceHealthRequest{Namespace: ns, Name: req.GetName(), LocalOnly: true})
				cancel()
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				out.UnreachableNodes = append(out.UnreachableNodes, fmt.Sprintf("%s: %v", n.GetId(), status.Convert(err).Message()))
				return
			}
			out.Endpoints = append(out.Endpoints, resp.GetEndpoints()...)
		}(n)
	}
	wg.Wait()
	sort.SliceStable(out.Endpoints, func(i, j int) bool {
		x, y := out.Endpoints[i], out.Endpoints[j]
		if x.GetIp() != y.GetIp() {
			return x.GetIp() < y.GetIp()
		}
		if x.GetPort() != y.GetPort() {
			return x.GetPort() < y.GetPort()
		}
		return x.GetNode() < y.GetNode()
	})
	return out, nil
}

// prepareService copies, defaults and validates a service from a request.
func prepareService(in *portalv1.Service) (*portalv1.Service, error) {
	if in == nil {
		return nil, required("service")
	}
	svc := proto.Clone(in).(*portalv1.Service)
	DefaultService(svc)
	if err := invalid("Service", svc.GetMetadata().GetName(), ValidateService(svc)); err != nil {
		return nil, err
	}
	return svc, nil
}

func prepareEndpoints(in *portalv1.Endpoints) (*portalv1.Endpoints, error) {
	if in == nil {
		return nil, required("endpoints")
	}
	ep := proto.Clone(in).(*portalv1.Endpoints)
	DefaultEndpoints(ep)
	if err := invalid("Endpoints", ep.GetMetadata().GetName(), ValidateEndpoints(ep)); err != nil {
		return nil, err
	}
	return ep, nil
}

func ref(ns, name string) (string, error) {
	if err := invalid("request", "", validateRef(ns, name)); err != nil {
		return "", err
	}
	if ns == "" {
		ns = portalv1.DefaultNamespace
	}
	return ns, nil
}

func listNamespace(ns string) error {
	if ns == "" {
		return nil
	}
	var v violations
	checkDNS1123Label(&v, "namespace", ns)
	return invalid("request", "", v)
}

func (a *api) CreateService(ctx context.Context, req *portalv1.CreateServiceRequest) (*portalv1.CreateServiceResponse, error) {
	svc, err := prepareService(req.GetService())
	if err != nil {
		return nil, err
	}
	out, err := a.store.CreateService(ctx, svc)
	if err != nil {
		return nil, err
	}
	return &portalv1.CreateServiceResponse{Service: out}, nil
}

func (a *api) UpdateService(ctx context.Context, req *portalv1.UpdateServiceRequest) (*portalv1.UpdateServiceResponse, error) {
	svc, err := prepareService(req.GetService())
	if err != nil {
		return nil, err
	}
	out, _, err := a.store.UpdateService(ctx, svc, false)
	if err != nil {
		return nil, err
	}
	return &portalv1.UpdateServiceResponse{Service: out}, nil
}

func (a *api) ApplyService(ctx context.Context, req *portalv1.ApplyServiceRequest) (*portalv1.ApplyServiceResponse, error) {
	svc, err := prepareService(req.GetService())
	if err != nil {
		return nil, err
	}
	out, result, err := a.store.UpdateService(ctx, svc, true)
	if err != nil {
		return nil, err
	}
	return &portalv1.ApplyServiceResponse{Service: out, Result: result}, nil
}

func (a *api) GetService(ctx context.Context, req *portalv1.GetServiceRequest) (*portalv1.GetServiceResponse, error) {
	ns, err := ref(req.GetNamespace(), req.GetName())
	if err != nil {
		return nil, err
	}
	svc, err := a.store.GetService(ctx, ns, req.GetName(), req.GetConsistent())
	if err != nil {
		return nil, err
	}
	return &portalv1.GetServiceResponse{Service: svc}, nil
}

func (a *api) ListServices(ctx context.Context, req *portalv1.ListServicesRequest) (*portalv1.ListServicesResponse, error) {
	if err := listNamespace(req.GetNamespace()); err != nil {
		return nil, err
	}
	svcs, rev, err := a.store.ListServices(ctx, req.GetNamespace(), req.GetConsistent())
	if err != nil {
		return nil, err
	}
	return &portalv1.ListServicesResponse{Services: svcs, ResourceVersion: rev}, nil
}

func (a *api) DeleteService(ctx context.Context, req *portalv1.DeleteServiceRequest) (*portalv1.DeleteServiceResponse, error) {
	ns, err := ref(req.GetNamespace(), req.GetName())
	if err != nil {
		return nil, err
	}
	svc, err := a.store.DeleteService(ctx, ns, req.GetName(), req.GetResourceVersion())
	if err != nil {
		return nil, err
	}
	return &portalv1.DeleteServiceResponse{Service: svc}, nil
}

func (a *api) WatchServices(req *portalv1.WatchServicesRequest, stream grpc.ServerStreamingServer[portalv1.WatchServicesResponse]) error {
	if err := listNamespace(req.GetNamespace()); err != nil {
		return err
	}
	return a.store.WatchServices(stream.Context(), req.GetNamespace(), req.GetResourceVersion(), stream.Send)
}

func (a *api) PutEndpoints(ctx context.Context, req *portalv1.PutEndpointsRequest) (*portalv1.PutEndpointsResponse, error) {
	ep, err := prepareEndpoints(req.GetEndpoints())
	if err != nil {
		return nil, err
	}
	out, result, err := a.store.PutEndpoints(ctx, ep)
	if err != nil {
		return nil, err
	}
	return &portalv1.PutEndpointsResponse{Endpoints: out, Result: result}, nil
}

func (a *api) GetEndpoints(ctx context.Context, req *portalv1.GetEndpointsRequest) (*portalv1.GetEndpointsResponse, error) {
	ns, err := ref(req.GetNamespace(), req.GetName())
	if err != nil {
		return nil, err
	}
	ep, err := a.store.GetEndpoints(ctx, ns, req.GetName(), req.GetConsistent())
	if err != nil {
		return nil, err
	}
	return &portalv1.GetEndpointsResponse{Endpoints: ep}, nil
}

func (a *api) ListEndpoints(ctx context.Context, req *portalv1.ListEndpointsRequest) (*portalv1.ListEndpointsResponse, error) {
	if err := listNamespace(req.GetNamespace()); err != nil {
		return nil, err
	}
	eps, rev, err := a.store.ListEndpoints(ctx, req.GetNamespace(), req.GetConsistent())
	if err != nil {
		return nil, err
	}
	return &portalv1.ListEndpointsResponse{Endpoints: eps, ResourceVersion: rev}, nil
}

func (a *api) DeleteEndpoints(ctx context.Context, req *portalv1.DeleteEndpointsRequest) (*portalv1.DeleteEndpointsResponse, error) {
	ns, err := ref(req.GetNamespace(), req.GetName())
	if err != nil {
		return nil, err
	}
	ep, err := a.store.DeleteEndpoints(ctx, ns, req.GetName(), req.GetResourceVersion())
	if err != nil {
		return nil, err
	}
	return &portalv1.DeleteEndpointsResponse{Endpoints: ep}, nil
}

func (a *api) WatchEndpoints(req *portalv1.WatchEndpointsRequest, stream grpc.ServerStreamingServer[portalv1.WatchEndpointsResponse]) error {
	if err := listNamespace(req.GetNamespace()); err != nil {
		return err
	}
	return a.store.WatchEndpoints(stream.Context(), req.GetNamespace(), req.GetResourceVersion(), stream.Send)
}

var nodeIDRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$`)

type clusterAPI struct {
	portalv1.UnimplementedClusterServiceServer
	store Store
}

func (c *clusterAPI) GetCluster(ctx context.Context, _ *portalv1.GetClusterRequest) (*portalv1.GetClusterResponse, error) {
	return c.store.Cluster(ctx)
}

func (c *clusterAPI) JoinCluster(ctx context.Context, req *portalv1.JoinClusterRequest) (*portalv1.JoinClusterResponse, error) {
	var v violations
	if !nodeIDRe.MatchString(req.GetNodeId()) {
		v.add("nodeId", "%q must be 1-253 letters, digits, '.', '_' or '-', starting with a letter or digit", req.GetNodeId())
	}
	for _, f := range []struct{ name, addr string }{{"raftAddress", req.GetRaftAddress()}, {"grpcAddress", req.GetGrpcAddress()}} {
		if _, port, err := net.SplitHostPort(f.addr); err != nil || port == "" || port == "0" {
			v.add(f.name, "%q must be a host:port address", f.addr)
		}
	}
	for i, a := range req.GetAddresses() {
		if _, err := netip.ParseAddr(a); err != nil {
			v.add(fmt.Sprintf("addresses[%d]", i), "%q must be an IP address", a)
		}
	}
	checkLabels(&v, "labels", req.GetLabels())
	if err := invalid("JoinClusterRequest", req.GetNodeId(), v); err != nil {
		return nil, err
	}
	out, err := c.store.Join(ctx, req)
	if err != nil {
		return nil, err
	}
	return &portalv1.JoinClusterResponse{Cluster: out}, nil
}

func (c *clusterAPI) RemoveNode(ctx context.Context, req *portalv1.RemoveNodeRequest) (*portalv1.RemoveNodeResponse, error) {
	if req.GetNodeId() == "" {
		return nil, required("nodeId")
	}
	if err := c.store.RemoveNode(ctx, req.GetNodeId()); err != nil {
		return nil, err
	}
	return &portalv1.RemoveNodeResponse{}, nil
}

func (c *clusterAPI) TransferLeadership(ctx context.Context, req *portalv1.TransferLeadershipRequest) (*portalv1.TransferLeadershipResponse, error) {
	leader, err := c.store.TransferLeadership(ctx, req.GetNodeId())
	if err != nil {
		return nil, err
	}
	return &portalv1.TransferLeadershipResponse{Leader: leader}, nil
}

// metrics counts requests and their latency per RPC.
type metrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

func newMetrics(r prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portal_grpc_requests_total", Help: "gRPC requests handled, by method and status code.",
		}, []string{"method", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "portal_grpc_request_duration_seconds", Help: "gRPC request latency by method (streams: their lifetime).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18),
		}, []string{"method"}),
	}
	if r != nil {
		r.MustRegister(m.requests, m.latency)
	}
	return m
}

func shortMethod(full string) string {
	if i := strings.LastIndex(full, "/"); i >= 0 {
		return full[i+1:]
	}
	return full
}

func (m *metrics) observe(method string, start time.Time, err error) {
	name := shortMethod(method)
	m.requests.WithLabelValues(name, status.Code(err).String()).Inc()
	m.latency.WithLabelValues(name).Observe(time.Since(start).Seconds())
}

func (m *metrics) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := h(ctx, req)
	m.observe(info.FullMethod, start, err)
	return resp, err
}

func (m *metrics) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	start := time.Now()
	err := h(srv, ss)
	m.observe(info.FullMethod, start, err)
	return err
}

// recoverUnary turns a handler panic into INTERNAL instead of a crash.
func recoverUnary(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (resp any, err error) {
		defer func() {
			if r := recover(); r != nil {
				log.Error("panic in handler", "method", info.FullMethod, "panic", r, "stack", string(debug.Stack()))
				err = status.Errorf(codes.Internal, "internal error in %s", info.FullMethod)
			}
		}()
		return h(ctx, req)
	}
}

func recoverStream(log *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) (err error) {
		defer func() {
			if r := recover(); r != nil {
				log.Error("panic in handler", "method", info.FullMethod, "panic", r, "stack", string(debug.Stack()))
				err = status.Errorf(codes.Internal, "internal error in %s", info.FullMethod)
			}
		}()
		return h(srv, ss)
	}
}
