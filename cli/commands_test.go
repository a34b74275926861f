package cli

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	portalv1 "github.com/portal-lb/portal/proto/portal/v1"
)

// fakeServer is a small stateful stand-in for portald's API: services and
// endpoints in maps, ApplyService with created/configured/unchanged, simple
// allocation and validation.
type fakeServer struct {
	portalv1.UnimplementedLoadBalancerServiceServer
	portalv1.UnimplementedClusterServiceServer

	mu       sync.Mutex
	rev      uint64
	svcs     map[string]*portalv1.Service
	eps      map[string]*portalv1.Endpoints
	nextIP   int
	nextPort int32
	requests []proto.Message
}

func newFakeServer() *fakeServer {
	return &fakeServer{svcs: map[string]*portalv1.Service{}, eps: map[string]*portalv1.Endpoints{}, nextPort: 30000}
}

func key(ns, name string) string {
	if ns == "" {
		ns = "default"
	}
	return ns + "/" + name
}

func invalid(msg string, violations ...string) error {
	st := status.New(codes.InvalidArgument, msg)
	br := &errdetails.BadRequest{}
	for i := 0; i+1 < len(violations); i += 2 {
		br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{Field: violations[i], Description: violations[i+1]})
	}
	st, err := st.WithDetails(br)
	if err != nil {
		panic(err)
	}
	return st.Err()
}

func (f *fakeServer) ApplyService(_ context.Context, req *portalv1.ApplyServiceRequest) (*portalv1.ApplyServiceResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests = append(f.requests, proto.Clone(req))
	in := proto.Clone(req.GetService()).(*portalv1.Service)
	if in.GetMetadata().GetName() == "" {
		return nil, invalid("invalid service", "metadata.name", "required")
	}
	var violations []string
	for i, p := range in.GetSpec().GetPorts() {
		if p.GetPort() < 1 || p.GetPort() > 65535 {
			violations = append(violations, fmt.Sprintf("spec.ports[%d].port", i), "must be between 1 and 65535")
		}
	}
	if len(violations) > 0 {
		return nil, invalid("invalid service web: 1 field is invalid", violations...)
	}
	md := in.Metadata
	if md.Namespace == "" {
		md.Namespace = "default"
	}
	if in.Spec == nil {
		in.Spec = &portalv1.ServiceSpec{}
	}
	k := key(md.Namespace, md.Name)
	old := f.svcs[k]
	if old != nil && md.ResourceVersion != 0 && md.ResourceVersion != old.Metadata.ResourceVersion {
		return nil, status.Errorf(codes.Aborted, "service %s: resource version %d is stale (now %d)", k, md.ResourceVersion, old.Metadata.ResourceVersion)
	}
	// Keep the allocations the new spec leaves empty; allocate the rest.
	if in.Spec.ClusterIp == "" {
		if old != nil {
			in.Spec.ClusterIp = old.Spec.ClusterIp
		} else {
			f.nextIP++
			in.Spec.ClusterIp = fmt.Sprintf("127.96.0.%d", f.nextIP)
		}
	}
	for i, p := range in.Spec.Ports {
		if p.NodePort == 0 && (in.Spec.Type == "NodePort" || in.Spec.Type == "LoadBalancer") {
			if old != nil && i < len(old.Spec.Ports) && old.Spec.Ports[i].NodePort != 0 {
				p.NodePort = old.Spec.Ports[i].NodePort
			} else {
				f.nextPort++
				p.NodePort = f.nextPort
			}
		}
	}
	if old != nil && proto.Equal(old.Spec, in.Spec) && proto.Equal(
		&portalv1.ObjectMeta{Labels: old.Metadata.Labels, Annotations: old.Metadata.Annotations},
		&portalv1.ObjectMeta{Labels: md.Labels, Annotations: md.Annotations}) {
		return &portalv1.ApplyServiceResponse{Service: old, Result: "unchanged"}, nil
	}
	f.rev++
	result := "configured"
	if old == nil {
		result = "created"
		md.Uid = fmt.Sprintf("uid-%d", f.rev)
		md.CreationTimestamp = timestamppb.New(time.Now().Add(-time.Minute))
	} else {
		md.Uid = old.Metadata.Uid
		md.CreationTimestamp = old.Metadata.CreationTimestamp
	}
	md.ResourceVersion = f.rev
	in.Status = nil
	if in.Spec.Type == "LoadBalancer" {
		in.Status = &portalv1.ServiceStatus{LoadBalancer: &portalv1.LoadBalancerStatus{
			Ingress: []*portalv1.LoadBalancerIngress{{Ip: "127.97.0.1"}}}}
	}
	f.svcs[k] = in
	return &portalv1.ApplyServiceResponse{Service: in, Result: result}, nil
}

func (f *fakeServer) GetService(_ context.Context, req *portalv1.GetServiceRequest) (*portalv1.GetServiceResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests = append(f.requests, proto.Clone(req))
	s := f.svcs[key(req.Namespace, req.Name)]
	if s == nil {
		return nil, status.Errorf(codes.NotFound, "services %q not found", req.Name)
	}
	return &portalv1.GetServiceResponse{Service: s}, nil
}

func (f *fakeServer) ListServices(_ context.Context, req *portalv1.ListServicesRequest) (*portalv1.ListServicesResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests = append(f.requests, proto.Clone(req))
	resp := &portalv1.ListServicesResponse{ResourceVersion: f.rev}
	for _, s := range f.svcs {
		if req.Namespace == "" || s.Metadata.Namespace == req.Namespace {
			resp.Services = append(resp.Services, s)
		}
	}
	return resp, nil
}

func (f *fakeServer) DeleteService(_ context.Context, req *portalv1.DeleteServiceRequest) (*portalv1.DeleteServiceResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := key(req.Namespace, req.Name)
	s := f.svcs[k]
	if s == nil {
		return nil, status.Errorf(codes.NotFound, "services %q not found", req.Name)
	}
	delete(f.svcs, k)
	f.rev++
	return &portalv1.DeleteServiceResponse{Service: s}, nil
}

func (f *fakeServer) PutEndpoints(_ context.Context, req *portalv1.PutEndpointsRequest) (*portalv1.PutEndpointsResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests = append(f.requests, proto.Clone(req))
	in := proto.Clone(req.GetEndpoints()).(*portalv1.Endpoints)
	md := in.GetMetadata()
	if md.GetName() == "" {
		return nil, invalid("invalid endpoints", "metadata.name", "required")
	}
	if md.Namespace == "" {
		md.Namespace = "default"
	}
	k := key(md.Namespace, md.Name)
	old := f.eps[k]
	if old != nil && md.ResourceVersion != 0 && md.ResourceVersion != old.Metadata.ResourceVersion {
		return nil, status.Errorf(codes.Aborted, "endpoints %s: stale resource version", k)
	}
	if old != nil && len(old.Subsets) == len(in.Subsets) {
		same := true
		for i := range in.Subsets {
			same = same && proto.Equal(old.Subsets[i], in.Subsets[i])
		}
		if same {
			return &portalv1.PutEndpointsResponse{Endpoints: old, Result: "unchanged"}, nil
		}
	}
	f.rev++
	result := "configured"
	if old == nil {
		result = "created"
		md.CreationTimestamp = timestamppb.Now()
	} else {
		md.CreationTimestamp = old.Metadata.CreationTimestamp
	}
	md.ResourceVersion = f.rev
	f.eps[k] = in
	return &portalv1.PutEndpointsResponse{Endpoints: in, Result: result}, nil
}

func (f *fakeServer) GetEndpoints(_ context.Context, req *portalv1.GetEndpointsRequest) (*portalv1.GetEndpointsResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e := f.eps[key(req.Namespace, req.Name)]
	if e == nil {
		return nil, status.Errorf(codes.NotFound, "endpoints %q not found", req.Name)
	}
	return &portalv1.GetEndpointsResponse{Endpoints: e}, nil
}

func (f *fakeServer) ListEndpoints(_ context.Context, req *portalv1.ListEndpointsRequest) (*portalv1.ListEndpointsResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	resp := &portalv1.ListEndpointsResponse{ResourceVersion: f.rev}
	for _, e := range f.eps {
		if req.Namespace == "" || e.Metadata.Namespace == req.Namespace {
			resp.Endpoints = append(resp.Endpoints, e)
		}
	}
	return resp, nil
}

func (f *fakeServer) DeleteEndpoints(_ context.Context, req *portalv1.DeleteEndpointsRequest) (*portalv1.DeleteEndpointsResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := key(req.Namespace, req.Name)
	e := f.eps[k]
	if e == nil {
		return nil, status.Errorf(codes.NotFound, "endpoints %q not found", req.Name)
	}
	delete(f.eps, k)
	f.rev++
	return &portalv1.DeleteEndpointsResponse{Endpoints: e}, nil
}

func (f *fakeServer) GetCluster(context.Context, *portalv1.GetClusterRequest) (*portalv1.GetClusterResponse, error) {
	return &portalv1.GetClusterResponse{
		Nodes:  []*portalv1.Node{{Id: "node-1", Role: "leader", Ready: true}},
		Leader: "node-1", Term: 3, NodeId: "node-1",
	}, nil
}

// startFake serves a fake API on a loopback port for the test's lifetime.
func startFake(t *testing.T) (*fakeServer, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fake := newFakeServer()
	srv := grpc.NewServer()
	portalv1.RegisterLoadBalancerServiceServer(srv, fake)
	portalv1.RegisterClusterServiceServer(srv, fake)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return fake, lis.Addr().String()
}

type result struct {
	code           int
	stdout, stderr string
}

// run runs portalctl against addr.
func run(t *testing.T, addr, stdin string, args ...string) result {
	t.Helper()
	var out, errOut bytes.Buffer
	full := append([]string{"--server", addr, "--timeout", "5s"}, args...)
	code := Run(context.Background(), full, strings.NewReader(stdin), &out, &errOut)
	return result{code, out.String(), errOut.String()}
}

func expect(t *testing.T, r result, code int, stdout, stderr string) {
	t.Helper()
	if r.code != code || r.stdout != stdout || r.stderr != stderr {
		t.Errorf("got exit %d\nstdout:\n%s\nstderr:\n%s\nwant exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr, code, stdout, stderr)
	}
}

func writeFile(t *testing.T, dir, name, data string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

const webManifest = `apiVersion: v1
kind: Service
metadata:
  name: web
  labels: {app: web}
spec:
  type: LoadBalancer
  selector: {app: web}
  ports:
  - name: http
    port: 80
    targetPort: 8080
  ipFamilies: [IPv4]
---
apiVersion: v1
kind: Endpoints
metadata:
  name: web
subsets:
- addresses:
  - ip: 10.1.0.1
  - ip: 10.1.0.2
  ports:
  - name: http
    port: 8080
`

func TestApplyGetApplyUnchanged(t *testing.T) {
	fake, addr := startFake(t)
	dir := t.TempDir()
	web := writeFile(t, dir, "web.yaml", webManifest)

	r := run(t, addr, "", "apply", "-f", web)
	expect(t, r, 0, "service/web created\nendpoints/web created\n",
		"warning: service/web: ignoring unknown field spec.ipFamilies\n")

	// get -o yaml of the service (single object) and of all endpoints (List)
	// apply again unchanged.
	r = run(t, addr, "", "get", "svc", "web", "-o", "yaml")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "apiVersion: v1\nkind: Service\n") || !strings.Contains(r.stdout, "clusterIP: 127.96.0.1") {
		t.Fatalf("get -o yaml: %+v", r)
	}
	svcYAML := r.stdout
	r = run(t, addr, svcYAML, "apply", "-f", "-")
	expect(t, r, 0, "service/web unchanged\n", "")

	r = run(t, addr, "", "get", "ep", "-o", "yaml")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "apiVersion: v1\nkind: List\nitems:\n") {
		t.Fatalf("get ep -o yaml: %+v", r)
	}
	r = run(t, addr, r.stdout, "apply", "-f", "-")
	expect(t, r, 0, "endpoints/web unchanged\n", "")

	// The original manifest is unchanged too (allocations are kept).
	r = run(t, addr, "", "apply", "-f", web)
	expect(t, r, 0, "service/web unchanged\nendpoints/web unchanged\n",
		"warning: service/web: ignoring unknown field spec.ipFamilies\n")

	// The server never receives status, uid or creationTimestamp from apply.
	fake.mu.Lock()
	for _, req := range fake.requests {
		if a, ok := req.(*portalv1.ApplyServiceRequest); ok {
			if a.Service.Status != nil || a.Service.Metadata.Uid != "" || a.Service.Metadata.CreationTimestamp != nil {
				t.Errorf("apply sent server-owned fields: %v", a)
			}
			if a.Service.Metadata.Namespace != "default" {
				t.Errorf("apply sent namespace %q", a.Service.Metadata.Namespace)
			}
		}
	}
	fake.mu.Unlock()

	// A change is configured; the JSON output round-trips too.
	changed := strings.Replace(webManifest, "targetPort: 8080", "targetPort: http", 1)
	r = run(t, addr, changed, "apply", "-f", "-")
	expect(t, r, 0, "service/web configured\nendpoints/web unchanged\n",
		"warning: service/web: ignoring unknown field spec.ipFamilies\n")
	r = run(t, addr, "", "get", "svc", "web", "-o", "json")
	if !strings.Contains(r.stdout, `"targetPort": "http"`) || !strings.HasPrefix(r.stdout, "{\n    \"apiVersion\": \"v1\",\n    \"kind\": \"Service\",") {
		t.Errorf("get -o json:\n%s", r.stdout)
	}
	r = run(t, addr, r.stdout, "apply", "-f", "-")
	expect(t, r, 0, "service/web unchanged\n", "")

	// A stale copy (the first YAML, before the change) is refused.
	r = run(t, addr, svcYAML, "apply", "-f", "-")
	if r.code != 1 || !strings.HasPrefix(r.stderr, "Error from server (Aborted): error applying service/web from \"<stdin>\": ") {
		t.Errorf("stale apply: %+v", r)
	}
}

func TestGetTables(t *testing.T) {
	_, addr := startFake(t)
	dir := t.TempDir()
	writeFile(t, dir, "a-web.yaml", webManifest)
	writeFile(t, dir, "b-api.json", `{"kind":"Service","metadata":{"name":"api","namespace":"shop"},"spec":{"ports":[{"port":81}],"selector":{"app":"api"}}}`)
	writeFile(t, dir, "ignored.txt", "not a manifest")
	r := run(t, addr, "", "apply", "-f", dir)
	expect(t, r, 0, "service/web created\nendpoints/web created\nservice/api created\n",
		"warning: service/web: ignoring unknown field spec.ipFamilies\n")

	r = run(t, addr, "", "get", "services")
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	if r.code != 0 || len(lines) != 2 {
		t.Fatalf("get services: %+v", r)
	}
	if !strings.HasPrefix(lines[0], "NAME   TYPE           CLUSTER-IP   EXTERNAL-IP   PORT(S)        AGE") {
		t.Errorf("header %q", lines[0])
	}
	if !strings.HasPrefix(lines[1], "web    LoadBalancer   127.96.0.1   127.97.0.1    80:30001/TCP   ") {
		t.Errorf("row %q", lines[1])
	}

	r = run(t, addr, "", "get", "svc", "-A", "-o", "wide")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "NAMESPACE   NAME   TYPE") || !strings.Contains(r.stdout, "shop        api    ClusterIP") ||
		!strings.Contains(r.stdout, "app=api") {
		t.Errorf("get -A -o wide:\n%s", r.stdout)
	}

	r = run(t, addr, "", "get", "ep", "web")
	if r.code != 0 || !strings.Contains(r.stdout, "web    10.1.0.1:8080,10.1.0.2:8080   ") {
		t.Errorf("get ep web:\n%s", r.stdout)
	}

	r = run(t, addr, "", "get", "svc,ep", "--no-headers")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "web   LoadBalancer") || !strings.Contains(r.stdout, "\n\nweb   10.1.0.1:8080,10.1.0.2:8080") {
		t.Errorf("get svc,ep:\n%s", r.stdout)
	}

	r = run(t, addr, "", "-n", "empty", "get", "svc")
	expect(t, r, 0, "", "No resources found in empty namespace.\n")

	r = run(t, addr, "", "get", "svc", "nope")
	expect(t, r, 1, "", "Error from server (NotFound): services \"nope\" not found\n")

	r = run(t, addr, "", "get", "pods")
	if r.code != 1 || !strings.Contains(r.stderr, `error: unknown resource type "pods"`) || !strings.Contains(r.stderr, "See 'portalctl get --help' for usage.") {
		t.Errorf("get pods: %+v", r)
	}

	r = run(t, addr, "", "describe", "svc", "web")
	for _, want := range []string{"Name:", "web\n", "Type:", "LoadBalancer", "Endpoints:", "10.1.0.1:8080,10.1.0.2:8080", "LoadBalancer Ingress:", "127.97.0.1"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("describe lacks %q:\n%s", want, r.stdout)
		}
	}
}

func TestConsistentFlag(t *testing.T) {
	fake, addr := startFake(t)
	run(t, addr, webManifest, "apply", "-f", "-")
	run(t, addr, "", "--consistent", "get", "svc")
	run(t, addr, "", "get", "svc", "web", "--consistent")
	fake.mu.Lock()
	defer fake.mu.Unlock()
	var list, get bool
	for _, req := range fake.requests {
		switch r := req.(type) {
		case *portalv1.ListServicesRequest:
			list = r.Consistent
		case *portalv1.GetServiceRequest:
			get = r.Consistent
		}
	}
	if !list || !get {
		t.Errorf("consistent not sent: list %v get %v", list, get)
	}
}

func TestDelete(t *testing.T) {
	_, addr := startFake(t)
	dir := t.TempDir()
	web := writeFile(t, dir, "web.yaml", webManifest)
	run(t, addr, "", "apply", "-f", web)

	r := run(t, addr, "", "delete", "svc", "web")
	expect(t, r, 0, "service/web deleted\n", "")
	r = run(t, addr, "", "delete", "svc", "web")
	expect(t, r, 1, "", "Error from server (NotFound): services \"web\" not found\n")
	r = run(t, addr, "", "delete", "svc", "web", "--ignore-not-found")
	expect(t, r, 0, "", "")

	// delete -f: the service is gone already; the endpoints are deleted and
	// the NotFound makes the command fail.
	r = run(t, addr, "", "delete", "-f", web)
	expect(t, r, 1, "endpoints/web deleted\n", "Error from server (NotFound): services \"web\" not found\n")

	run(t, addr, "", "apply", "-f", web)
	r = run(t, addr, "", "delete", "-f", web)
	expect(t, r, 0, "service/web deleted\nendpoints/web deleted\n", "")
	r = run(t, addr, "", "delete", "-f", web, "--ignore-not-found")
	expect(t, r, 0, "", "")

	run(t, addr, "", "apply", "-f", web)
	r = run(t, addr, "", "delete", "service/web", "ep/web")
	expect(t, r, 0, "service/web deleted\nendpoints/web deleted\n", "")

	r = run(t, addr, "", "delete", "svc")
	if r.code != 1 || !strings.Contains(r.stderr, "no name was specified") {
		t.Errorf("delete svc: %+v", r)
	}
}

func TestApplyInvalidArgument(t *testing.T) {
	_, addr := startFake(t)
	bad := "kind: Service\nmetadata: {name: web}\nspec:\n  ports:\n  - port: 0\n  - port: 70000\n---\nkind: Service\nmetadata: {name: ok}\nspec: {ports: [{port: 80}]}\n"
	r := run(t, addr, bad, "apply", "-f", "-")
	expect(t, r, 1, "service/ok created\n",
		"Error from server (InvalidArgument): error applying service/web from \"<stdin>\": invalid service web: 1 field is invalid\n"+
			"  spec.ports[0].port: must be between 1 and 65535\n"+
			"  spec.ports[1].port: must be between 1 and 65535\n")
}

func TestApplyManifestErrors(t *testing.T) {
	fake, addr := startFake(t)
	dir := t.TempDir()
	quotes := writeFile(t, dir, "web.yaml", "kind: Service\nmetadata:\n  name: web\nspec:\n  selector:\n    app: web\n  type: \u201cLoadBalancer\u201d\n")
	good := writeFile(t, dir, "good.yaml", "kind: Service\nmetadata: {name: good}\n")
	r := run(t, addr, "", "apply", "-f", good, "-f", quotes)
	expect(t, r, 1, "", "error: "+quotes+":7: typographic quote \u201c (U+201C) found; use plain ASCII quotes (\")\n")
	fake.mu.Lock()
	if len(fake.svcs) != 0 {
		t.Errorf("something was applied before the manifests were all read: %v", fake.svcs)
	}
	fake.mu.Unlock()

	r = run(t, addr, "", "apply")
	if r.code != 1 || !strings.Contains(r.stderr, "must specify one of -f") {
		t.Errorf("apply without -f: %+v", r)
	}
	r = run(t, addr, "", "apply", "-f", filepath.Join(dir, "missing.yaml"))
	if r.code != 1 || !strings.Contains(r.stderr, "does not exist") {
		t.Errorf("apply missing: %+v", r)
	}
	r = run(t, addr, "", "apply", "--bogus")
	if r.code != 1 || r.stderr != "error: unknown flag: --bogus\nSee 'portalctl apply --help' for usage.\n" {
		t.Errorf("apply --bogus: %+v", r)
	}
}

func TestApplyNamespace(t *testing.T) {
	fake, addr := startFake(t)
	r := run(t, addr, "kind: Service\nmetadata: {name: a}\n", "-n", "shop", "apply", "-f", "-")
	expect(t, r, 0, "service/a created\n", "")
	fake.mu.Lock()
	_, ok := fake.svcs["shop/a"]
	fake.mu.Unlock()
	if !ok {
		t.Errorf("service not in namespace shop")
	}
	r = run(t, addr, "kind: Service\nmetadata: {name: a, namespace: other}\n", "apply", "-n", "shop", "-f", "-")
	if r.code != 1 || !strings.Contains(r.stderr, `the namespace of service/a is "other", not "shop"`) {
		t.Errorf("namespace mismatch: %+v", r)
	}
}

func TestVersion(t *testing.T) {
	_, addr := startFake(t)
	r := run(t, addr, "", "version")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "Client Version: dev\n") || !strings.Contains(r.stdout, "Cluster Leader: node-1\n") {
		t.Errorf("version: %+v", r)
	}

	// An address nothing listens on: client version, a warning, exit 0.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := lis.Addr().String()
	lis.Close()
	r = run(t, dead, "", "version")
	if r.code != 0 || r.stdout != "Client Version: dev\n" || !strings.HasPrefix(r.stderr, "warning: cannot reach server "+dead+": Unavailable") ||
		strings.Count(r.stderr, "\n") != 1 {
		t.Errorf("version with no server: %+v", r)
	}

	// Other commands fail with the connection error.
	r = run(t, dead, "", "get", "svc")
	if r.code != 1 || !strings.HasPrefix(r.stderr, "Error from server (Unavailable): ") {
		t.Errorf("get with no server: %+v", r)
	}
}

func TestPrintError(t *testing.T) {
	st := status.New(codes.InvalidArgument, "invalid service web")
	st, err := st.WithDetails(&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
		{Field: "spec.ports[0].port", Description: "must be between 1 and 65535"},
		{Field: "metadata.name", Description: "must be a DNS-1035 label"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	PrintError(&buf, st.Err())
	want := "Error from server (InvalidArgument): invalid service web\n" +
		"  spec.ports[0].port: must be between 1 and 65535\n" +
		"  metadata.name: must be a DNS-1035 label\n"
	if buf.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", buf.String(), want)
	}

	buf.Reset()
	PrintError(&buf, status.Error(codes.NotFound, `services "web" not found`))
	if buf.String() != "Error from server (NotFound): services \"web\" not found\n" {
		t.Errorf("got %q", buf.String())
	}

	buf.Reset()
	PrintError(&buf, fmt.Errorf("plain failure"))
	if buf.String() != "error: plain failure\n" {
		t.Errorf("got %q", buf.String())
	}

	buf.Reset()
	PrintError(&buf, &reportedError{n: 2})
	if buf.String() != "" {
		t.Errorf("reported error printed again: %q", buf.String())
	}
}
