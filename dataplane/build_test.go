package dataplane

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	portalv1 "github.com/portal-lb/portal/proto/portal/v1"
)

func servers(d *Desired) map[string]*VirtualServer {
	out := map[string]*VirtualServer{}
	for _, v := range d.Servers {
		out[v.Key()] = v
	}
	return out
}

func backends(v *VirtualServer) string {
	var s []string
	for _, b := range v.Backends {
		s = append(s, b.Addr.String())
	}
	return strings.Join(s, ",")
}

func TestBuildFrontendsAndTargetPorts(t *testing.T) {
	svc := &portalv1.Service{
		Metadata: &portalv1.ObjectMeta{Name: "web", Namespace: "default"},
		Spec: &portalv1.ServiceSpec{
			Type: "LoadBalancer", ClusterIp: "198.18.0.10", ExternalIps: []string{"198.18.0.20"},
			SessionAffinity: "ClientIP", SessionAffinityConfig: &portalv1.SessionAffinityConfig{ClientIp: &portalv1.ClientIPConfig{TimeoutSeconds: 60}},
			LoadBalancerSourceRanges: []string{"198.18.5.0/24"}, Scheduler: "lc",
			Ports: []*portalv1.ServicePort{
				{Name: "http", Protocol: "TCP", Port: 80, TargetPort: "web", NodePort: 30080},
				{Name: "dns", Protocol: "UDP", Port: 53, TargetPort: "5353", NodePort: 30053},
			},
		},
		Status: &portalv1.ServiceStatus{LoadBalancer: &portalv1.LoadBalancerStatus{Ingress: []*portalv1.LoadBalancerIngress{{Ip: "198.19.0.1"}}}},
	}
	ep := &portalv1.Endpoints{
		Metadata: &portalv1.ObjectMeta{Name: "web", Namespace: "default"},
		Subsets: []*portalv1.EndpointSubset{{
			Addresses:         []*portalv1.EndpointAddress{{Ip: "198.18.1.2"}, {Ip: "198.18.1.1"}},
			NotReadyAddresses: []*portalv1.EndpointAddress{{Ip: "198.18.1.9"}},
			// "web" is the named targetPort of http; "dns" matches by name.
			Ports: []*portalv1.EndpointPort{{Name: "web", Port: 8080, Protocol: "TCP"}, {Name: "dns", Port: 5353, Protocol: "UDP"}},
		}},
	}
	node := Node{Name: "gw-1", Addresses: []netip.Addr{netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("2001:db8::1")}}
	d := Build([]*portalv1.Service{svc}, map[string]*portalv1.Endpoints{"default/web": ep}, node, 7)
	got := servers(d)
	want := map[string]string{
		"TCP/198.18.0.10:80":      KindClusterIP,
		"TCP/198.18.0.20:80":      KindExternalIP,
		"TCP/198.19.0.1:80":       KindLoadBalancer,
		"TCP/198.18.0.1:30080":    KindNodePort,
		"TCP/[2001:db8::1]:30080": KindNodePort,
		"UDP/198.18.0.10:53":      KindClusterIP,
		"UDP/198.18.0.20:53":      KindExternalIP,
		"UDP/198.19.0.1:53":       KindLoadBalancer,
		"UDP/198.18.0.1:30053":    KindNodePort,
		"UDP/[2001:db8::1]:30053": KindNodePort,
	}
	if len(got) != len(want) || d.Revision != 7 {
		t.Fatalf("got %d servers, want %d: %v", len(got), len(want), got)
	}
	for k, kind := range want {
		v := got[k]
		if v == nil || v.Kind != kind {
			t.Fatalf("%s: %+v", k, v)
		}
		wantBackends := "198.18.1.1:8080,198.18.1.2:8080"
		if v.Protocol == "UDP" {
			wantBackends = "198.18.1.1:5353,198.18.1.2:5353"
		}
		if backends(v) != wantBackends {
			t.Fatalf("%s backends %s, want %s (not-ready excluded, sorted)", k, backends(v), wantBackends)
		}
		if v.Affinity != time.Minute || v.Scheduler != "lc" || v.Service != "default/web" {
			t.Fatalf("%s: %+v", k, v)
		}
		if (len(v.SourceRanges) > 0) != (kind == KindLoadBalancer) {
			t.Fatalf("%s: source ranges %v on kind %s", k, v.SourceRanges, kind)
		}
	}
	// publishNotReadyAddresses serves not-ready addresses too.
	svc.Spec.PublishNotReadyAddresses = true
	d = Build([]*portalv1.Service{svc}, map[string]*portalv1.Endpoints{"default/web": ep}, node, 7)
	if b := backends(servers(d)["TCP/198.18.0.10:80"]); !strings.Contains(b, "198.18.1.9:8080") {
		t.Fatalf("publishNotReadyAddresses: %s", b)
	}
}

func TestBuildLocalPolicyAndSkips(t *testing.T) {
	mk := func(name, typ, cip string, local bool) *portalv1.Service {
		s := &portalv1.Service{
			Metadata: &portalv1.ObjectMeta{Name: name, Namespace: "default"},
			Spec: &portalv1.ServiceSpec{Type: typ, ClusterIp: cip, Ports: []*portalv1.ServicePort{
				{Name: "http", Protocol: "TCP", Port: 80, TargetPort: "80", NodePort: 30080}}},
		}
		if local {
			s.Spec.ExternalTrafficPolicy = "Local"
		}
		return s
	}
	np := mk("np", "NodePort", "198.18.0.10", true)
	headless := mk("headless", "ClusterIP", "None", false)
	ext := &portalv1.Service{Metadata: &portalv1.ObjectMeta{Name: "ext", Namespace: "default"}, Spec: &portalv1.ServiceSpec{Type: "ExternalName", ExternalName: "example.com"}}
	dup := mk("a-dup", "ClusterIP", "198.18.0.10", false) // sorts first: keeps the shared ClusterIP:port
	// A single-port service matches a subset's only port even without a name.
	ep := &portalv1.Endpoints{Metadata: &portalv1.ObjectMeta{Name: "np", Namespace: "default"},
		Subsets: []*portalv1.EndpointSubset{{
			Addresses: []*portalv1.EndpointAddress{{Ip: "198.18.1.1", NodeName: "gw-1"}, {Ip: "198.18.1.2", NodeName: "gw-2"}},
			Ports:     []*portalv1.EndpointPort{{Port: 8080, Protocol: "TCP"}},
		}}}
	node := Node{Name: "gw-1", Addresses: []netip.Addr{netip.MustParseAddr("198.18.0.1")}}
	d := Build([]*portalv1.Service{np, headless, ext, dup}, map[string]*portalv1.Endpoints{"default/np": ep}, node, 1)
	got := servers(d)
	if len(got) != 2 {
		t.Fatalf("servers %v", got)
	}
	if v := got["TCP/198.18.0.10:80"]; v.Service != "default/a-dup" || len(v.Backends) != 0 {
		t.Fatalf("duplicate frontend: %+v", v)
	}
	v := got["TCP/198.18.0.1:30080"]
	if !v.Local || backends(v) != "198.18.1.1:8080" {
		t.Fatalf("Local NodePort keeps only this node's endpoints: %+v %s", v, backends(v))
	}
}
