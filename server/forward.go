package server

import (
	"context"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// forwardedKey marks a request a node forwarded, so that it is never
// forwarded twice (a node that is not the leader answers UNAVAILABLE).
const forwardedKey = "x-portal-forwarded-by"

// leaderMethods must run on the leader: writes, membership changes, and
// (for the leader's view of peers) GetCluster.
var leaderMethods = map[string]bool{
	"/portal.v1.LoadBalancerService/CreateService":   true,
	"/portal.v1.LoadBalancerService/UpdateService":   true,
	"/portal.v1.LoadBalancerService/ApplyService":    true,
	"/portal.v1.LoadBalancerService/DeleteService":   true,
	"/portal.v1.LoadBalancerService/PutEndpoints":    true,
	"/portal.v1.LoadBalancerService/DeleteEndpoints": true,
	"/portal.v1.ClusterService/JoinCluster":          true,
	"/portal.v1.ClusterService/RemoveNode":           true,
	"/portal.v1.ClusterService/TransferLeadership":   true,
	"/portal.v1.ClusterService/GetCluster":           true,
}

// forwarder sends requests that need the leader to the leader, over one
// cached connection per leader address. Deadlines travel with the context.
type forwarder struct {
	store  Store
	nodeID string
	opts   []grpc.DialOption

	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

func newForwarder(store Store, nodeID string, opts []grpc.DialOption) *forwarder {
	return &forwarder{store: store, nodeID: nodeID, opts: opts, conns: map[string]*grpc.ClientConn{}}
}

func (f *forwarder) conn(addr string) (*grpc.ClientConn, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c := f.conns[addr]; c != nil {
		return c, nil
	}
	c, err := grpc.NewClient(addr, f.opts...)
	if err != nil {
		return nil, err
	}
	f.conns[addr] = c
	return c, nil
}

// needsLeader reports whether req must run on the leader: writes, and
// reads that ask for linearizability.
func needsLeader(method string, req any) bool {
	if leaderMethods[method] {
		return true
	}
	m, ok := req.(proto.Message)
	if !ok {
		return false
	}
	fd := m.ProtoReflect().Descriptor().Fields().ByName("consistent")
	return fd != nil && fd.Kind() == protoreflect.BoolKind && m.ProtoReflect().Get(fd).Bool()
}

// unary forwards leader-only requests received by a follower.
func (f *forwarder) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if f.store.IsLeader() || !needsLeader(info.FullMethod, req) {
		return h(ctx, req)
	}
	md, _ := metadata.FromIncomingContext(ctx)
	if len(md.Get(forwardedKey)) > 0 {
		// Leadership moved while the request travelled: let the client retry.
		return nil, status.Errorf(codes.Unavailable, "node %s is not the leader (forwarded by %s)", f.nodeID, md.Get(forwardedKey)[0])
	}
	addr := f.store.LeaderAddress()
	if addr == "" {
		if info.FullMethod == "/portal.v1.ClusterService/GetCluster" {
			return h(ctx, req) // no leader: this node's own view is better than nothing
		}
		return nil, status.Error(codes.Unavailable, "no raft leader known; retry")
	}
	resp, err := newResponse(info.FullMethod)
	if err != nil {
		return nil, err
	}
	conn, err := f.conn(addr)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "forwarding to the leader at %s: %v", addr, err)
	}
	out := metadata.AppendToOutgoingContext(ctx, forwardedKey, f.nodeID)
	if err := conn.Invoke(out, info.FullMethod, req, resp); err != nil {
		return nil, err // the leader's status, unchanged
	}
	return resp, nil
}

// newResponse makes an empty response message of a method.
func newResponse(fullMethod string) (proto.Message, error) {
	svc, method, ok := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	if !ok {
		return nil, status.Errorf(codes.Internal, "bad method %q", fullMethod)
	}
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(svc))
	if err != nil {
		return nil, status.Errorf(codes.Internal, "method %s: %v", fullMethod, err)
	}
	sd, ok := d.(protoreflect.ServiceDescriptor)
	if !ok {
		return nil, status.Errorf(codes.Internal, "%s is not a service", svc)
	}
	md := sd.Methods().ByName(protoreflect.Name(method))
	if md == nil {
		return nil, status.Errorf(codes.Internal, "no method %s", fullMethod)
	}
	mt, err := protoregistry.GlobalTypes.FindMessageByName(md.Output().FullName())
	if err != nil {
		return nil, status.Errorf(codes.Internal, "method %s: %v", fullMethod, err)
	}
	return mt.New().Interface(), nil
}
