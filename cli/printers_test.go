package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	portalv1 "github.com/portal-lb/portal/proto/portal/v1"
)

var testNow = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func created(ago time.Duration) *timestamppb.Timestamp {
	return timestamppb.New(testNow.Add(-ago))
}

func svc(ns, name string, ago time.Duration, spec *portalv1.ServiceSpec, ingress ...string) *portalv1.Service {
	s := &portalv1.Service{
		Metadata: &portalv1.ObjectMeta{Name: name, Namespace: ns, CreationTimestamp: created(ago)},
		Spec:     spec,
	}
	if len(ingress) > 0 {
		s.Status = &portalv1.ServiceStatus{LoadBalancer: &portalv1.LoadBalancerStatus{}}
		for _, ip := range ingress {
			s.Status.LoadBalancer.Ingress = append(s.Status.LoadBalancer.Ingress, &portalv1.LoadBalancerIngress{Ip: ip})
		}
	}
	return s
}

func testServices() []*portalv1.Service {
	return []*portalv1.Service{
		svc("default", "web", 45*time.Second, &portalv1.ServiceSpec{
			ClusterIp: "10.96.0.10", Selector: map[string]string{"tier": "fe", "app": "web"},
			Ports: []*portalv1.ServicePort{{Port: 80, Protocol: "TCP"}},
		}),
		svc("shop", "lb", 12*time.Minute, &portalv1.ServiceSpec{
			Type: "LoadBalancer", ClusterIp: "10.96.0.11",
			Ports: []*portalv1.ServicePort{{Port: 80, NodePort: 30080}, {Port: 443, NodePort: 31443, Protocol: "TCP"}},
		}, "127.97.0.1", "127.97.0.2"),
		svc("shop", "pending", 3*time.Hour, &portalv1.ServiceSpec{
			Type: "LoadBalancer", ClusterIp: "10.96.0.12",
			Ports: []*portalv1.ServicePort{{Port: 53, NodePort: 30053, Protocol: "UDP"}},
		}),
		svc("default", "headless", 50*time.Hour, &portalv1.ServiceSpec{
			ClusterIp: "None", Ports: []*portalv1.ServicePort{{Port: 5432}},
		}),
		svc("default", "db", 400*24*time.Hour, &portalv1.ServiceSpec{
			Type: "ExternalName", ExternalName: "db.example.com",
		}),
		svc("default", "np", 5*time.Minute+10*time.Second, &portalv1.ServiceSpec{
			Type: "NodePort", ClusterIp: "10.96.0.13", ExternalIps: []string{"198.18.0.1", "198.18.0.2"},
			Ports: []*portalv1.ServicePort{{Port: 8080, NodePort: 30001}},
		}),
	}
}

func TestPrintServices(t *testing.T) {
	var buf bytes.Buffer
	if err := PrintServices(&buf, testServices(), TableOptions{Now: testNow}); err != nil {
		t.Fatal(err)
	}
	want := `NAME       TYPE           CLUSTER-IP   EXTERNAL-IP             PORT(S)                      AGE
web        ClusterIP      10.96.0.10   <none>                  80/TCP                       45s
lb         LoadBalancer   10.96.0.11   127.97.0.1,127.97.0.2   80:30080/TCP,443:31443/TCP   12m
pending    LoadBalancer   10.96.0.12   <pending>               53:30053/UDP                 3h
headless   ClusterIP      None         <none>                  5432/TCP                     2d2h
db         ExternalName   <none>       db.example.com          <none>                       400d
np         NodePort       10.96.0.13   198.18.0.1,198.18.0.2   8080:30001/TCP               5m10s
`
	if got := buf.String(); got != want {
		t.Errorf("table\n got:\n%s\nwant:\n%s", got, want)
	}
}

func TestPrintServicesWideAllNamespaces(t *testing.T) {
	var buf bytes.Buffer
	if err := PrintServices(&buf, testServices()[:2], TableOptions{Now: testNow, Wide: true, AllNamespaces: true}); err != nil {
		t.Fatal(err)
	}
	want := `NAMESPACE   NAME   TYPE           CLUSTER-IP   EXTERNAL-IP             PORT(S)                      AGE   SELECTOR
default     web    ClusterIP      10.96.0.10   <none>                  80/TCP                       45s   app=web,tier=fe
shop        lb     LoadBalancer   10.96.0.11   127.97.0.1,127.97.0.2   80:30080/TCP,443:31443/TCP   12m   <none>
`
	if got := buf.String(); got != want {
		t.Errorf("table\n got:\n%s\nwant:\n%s", got, want)
	}
}

func TestServiceExternalIP(t *testing.T) {
	tests := []struct {
		svc  *portalv1.Service
		want string
	}{
		{svc("", "a", 0, &portalv1.ServiceSpec{}), "<none>"},
		{svc("", "a", 0, &portalv1.ServiceSpec{ExternalIps: []string{"1.2.3.4"}}), "1.2.3.4"},
		{svc("", "a", 0, &portalv1.ServiceSpec{Type: "LoadBalancer"}), "<pending>"},
		{svc("", "a", 0, &portalv1.ServiceSpec{Type: "LoadBalancer"}, "5.6.7.8"), "5.6.7.8"},
		{svc("", "a", 0, &portalv1.ServiceSpec{Type: "LoadBalancer", ExternalIps: []string{"1.2.3.4"}}, "5.6.7.8"), "5.6.7.8,1.2.3.4"},
		{svc("", "a", 0, &portalv1.ServiceSpec{Type: "ExternalName", ExternalName: "x.example"}), "x.example"},
		{&portalv1.Service{Spec: &portalv1.ServiceSpec{Type: "LoadBalancer"}, Status: &portalv1.ServiceStatus{
			LoadBalancer: &portalv1.LoadBalancerStatus{Ingress: []*portalv1.LoadBalancerIngress{{Hostname: "lb.example"}}}}}, "lb.example"},
		{svc("", "a", 0, &portalv1.ServiceSpec{Type: "Weird"}), "<unknown>"},
	}
	for i, tt := range tests {
		if got := ServiceExternalIP(tt.svc); got != tt.want {
			t.Errorf("%d: got %q, want %q", i, got, tt.want)
		}
	}
}

func TestHumanDuration(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{-5 * time.Second, "<invalid>"},
		{-500 * time.Millisecond, "0s"},
		{0, "0s"},
		{45 * time.Second, "45s"},
		{119 * time.Second, "119s"},
		{2 * time.Minute, "2m"},
		{5*time.Minute + 10*time.Second, "5m10s"},
		{12 * time.Minute, "12m"},
		{179 * time.Minute, "179m"},
		{3 * time.Hour, "3h"},
		{5*time.Hour + 30*time.Minute, "5h30m"},
		{20 * time.Hour, "20h"},
		{48 * time.Hour, "2d"},
		{3*24*time.Hour + 4*time.Hour, "3d4h"},
		{30 * 24 * time.Hour, "30d"},
		{(2*365 + 10) * 24 * time.Hour, "2y10d"},
		{3 * 365 * 24 * time.Hour, "3y"},
		{9 * 365 * 24 * time.Hour, "9y"},
	}
	for _, tt := range tests {
		if got := HumanDuration(tt.d); got != tt.want {
			t.Errorf("HumanDuration(%v) = %q, want %q", tt.d, got, tt.want)
		}
	}
	if got := Age(nil, testNow); got != "<unknown>" {
		t.Errorf("Age(nil) = %q", got)
	}
}

func endpoints(name string, ago time.Duration, subsets ...*portalv1.EndpointSubset) *portalv1.Endpoints {
	return &portalv1.Endpoints{
		Metadata: &portalv1.ObjectMeta{Name: name, Namespace: "default", CreationTimestamp: created(ago)},
		Subsets:  subsets,
	}
}

func addrs(ips ...string) []*portalv1.EndpointAddress {
	var out []*portalv1.EndpointAddress
	for _, ip := range ips {
		out = append(out, &portalv1.EndpointAddress{Ip: ip})
	}
	return out
}

func TestPrintEndpoints(t *testing.T) {
	eps := []*portalv1.Endpoints{
		endpoints("web", 30*time.Second, &portalv1.EndpointSubset{
			Addresses:         addrs("10.0.0.1", "10.0.0.2"),
			NotReadyAddresses: addrs("10.0.0.9"),
			Ports:             []*portalv1.EndpointPort{{Port: 8080}},
		}),
		endpoints("many", 4*time.Hour, &portalv1.EndpointSubset{
			Addresses: addrs("10.0.0.1", "10.0.0.2", "10.0.0.3"),
			Ports:     []*portalv1.EndpointPort{{Name: "http", Port: 80}, {Name: "https", Port: 443}},
		}),
		endpoints("empty", time.Minute*3),
		endpoints("v6", 0, &portalv1.EndpointSubset{Addresses: addrs("2001:db8::1"), Ports: []*portalv1.EndpointPort{{Port: 80}}}),
		endpoints("headless", 0, &portalv1.EndpointSubset{Addresses: addrs("10.0.0.5")}),
	}
	var buf bytes.Buffer
	if err := PrintEndpoints(&buf, eps, TableOptions{Now: testNow}); err != nil {
		t.Fatal(err)
	}
	want := `NAME       ENDPOINTS                                         AGE
web        10.0.0.1:8080,10.0.0.2:8080                       30s
many       10.0.0.1:80,10.0.0.2:80,10.0.0.3:80 + 3 more...   4h
empty      <none>                                            3m
v6         [2001:db8::1]:80                                  0s
headless   10.0.0.5                                          0s
`
	if got := buf.String(); got != want {
		t.Errorf("table\n got:\n%s\nwant:\n%s", got, want)
	}
	// Describe lists the endpoints of one port.
	if got := FormatEndpoints(eps[1], map[string]bool{"https": true}); got != "10.0.0.1:443,10.0.0.2:443,10.0.0.3:443" {
		t.Errorf("FormatEndpoints(https) = %q", got)
	}
}

func TestWriteObjectsYAMLRoundTrip(t *testing.T) {
	s := testServices()[1]
	s.Metadata.Uid = "c0ffee"
	s.Metadata.ResourceVersion = 17
	s.Spec.Ports[0].TargetPort = "8080"
	s.Spec.Ports[1].TargetPort = "https"
	s.Spec.Selector = map[string]string{"app": "lb"}
	out, err := ManifestYAML(s)
	if err != nil {
		t.Fatal(err)
	}
	text := string(out)
	for _, want := range []string{"apiVersion: v1\nkind: Service\nmetadata:\n", "  resourceVersion: \"17\"\n", "targetPort: 8080\n", "targetPort: https\n", "nodePort: 31443\n", "    ingress:\n"} {
		if !strings.Contains(text, want) {
			t.Errorf("yaml lacks %q:\n%s", want, text)
		}
	}
	objs, err := ParseManifests("out.yaml", out)
	if err != nil {
		t.Fatalf("parse own output: %v\n%s", err, text)
	}
	want := proto.Clone(s).(*portalv1.Service)
	want.Status = nil
	if len(objs) != 1 || !proto.Equal(objs[0].Service, want) {
		t.Errorf("round trip:\n got %v\nwant %v", objs, want)
	}
	if len(objs[0].IgnoredFields) != 0 {
		t.Errorf("own output has unknown fields %v", objs[0].IgnoredFields)
	}

	// A list of both kinds in JSON.
	var buf bytes.Buffer
	ep := endpoints("lb", 0, &portalv1.EndpointSubset{Addresses: addrs("10.0.0.1"), Ports: []*portalv1.EndpointPort{{Port: 80}}})
	if err := WriteObjects(&buf, OutputJSON, []proto.Message{s, ep}, true); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(buf.String(), "{\n    \"apiVersion\": \"v1\",\n    \"kind\": \"List\",\n    \"items\": [\n") {
		t.Errorf("json list:\n%s", buf.String())
	}
	objs, err = ParseManifests("out.json", buf.Bytes())
	if err != nil || len(objs) != 2 || objs[1].Kind != KindEndpoints || !proto.Equal(objs[1].Endpoints, ep) {
		t.Errorf("parse json list: %v %v", objs, err)
	}
}

func TestDescribeService(t *testing.T) {
	s := &portalv1.Service{
		Metadata: &portalv1.ObjectMeta{Name: "web", Namespace: "shop", Labels: map[string]string{"app": "web", "tier": "fe"},
			ResourceVersion: 12, CreationTimestamp: created(5 * time.Hour)},
		Spec: &portalv1.ServiceSpec{
			Type: "LoadBalancer", ClusterIp: "10.96.0.10", Selector: map[string]string{"app": "web"},
			Ports:                    []*portalv1.ServicePort{{Name: "http", Port: 80, TargetPort: "8080", NodePort: 30080}},
			SessionAffinity:          "ClientIP",
			ExternalTrafficPolicy:    "Local",
			HealthCheckNodePort:      32000,
			LoadBalancerSourceRanges: []string{"10.0.0.0/8"},
		},
		Status: &portalv1.ServiceStatus{LoadBalancer: &portalv1.LoadBalancerStatus{Ingress: []*portalv1.LoadBalancerIngress{{Ip: "127.97.0.1"}}}},
	}
	ep := endpoints("web", 0, &portalv1.EndpointSubset{Addresses: addrs("10.1.0.1"), Ports: []*portalv1.EndpointPort{{Name: "http", Port: 8080}}})
	var buf bytes.Buffer
	if err := DescribeService(&buf, s, ep, testNow); err != nil {
		t.Fatal(err)
	}
	want := `Name:                        web
Namespace:                   shop
Labels:                      app=web
                             tier=fe
Annotations:                 <none>
Selector:                    app=web
Type:                        LoadBalancer
IP:                          10.96.0.10
LoadBalancer Ingress:        127.97.0.1
Port:                        http  80/TCP
TargetPort:                  8080/TCP
NodePort:                    http  30080/TCP
Endpoints:                   10.1.0.1:8080
Session Affinity:            ClientIP
Session Affinity Timeout:    10800s
External Traffic Policy:     Local
HealthCheck NodePort:        32000
LoadBalancer Source Ranges:  10.0.0.0/8
Resource Version:            12
Created:                     Sat, 01 Mar 2025 07:00:00 +0000 (5h ago)
`
	if got := buf.String(); got != want {
		t.Errorf("describe\n got:\n%s\nwant:\n%s", got, want)
	}
}

func oddService(key, val, targetPort string) *portalv1.Service {
	return &portalv1.Service{
		Metadata: &portalv1.ObjectMeta{Name: "a",
			Labels: map[string]string{"<<": "x", "null": "~", "a: b": "#c", "": "", "yes": "no", "k": "0123", "t": "2024-01-01", key: val},
			Annotations: map[string]string{"multi": "line1\nline2\n", "trail": "x  \n  y", "tab": "\tz", "lead": "\n\nx",
				"crlf": "a\r\nb", "u": "\u00e9\u2028", "nul": "a\x00b", "html": "<a&b>", "quotes": "\u201cx\u201d\n\u00bb", key: val}},
		Spec: &portalv1.ServiceSpec{Ports: []*portalv1.ServicePort{
			{TargetPort: "0123"}, {TargetPort: "-1"}, {TargetPort: "1e3"}, {TargetPort: "8080"}, {TargetPort: targetPort}}},
	}
}

func checkRoundTrip(t *testing.T, s *portalv1.Service) {
	t.Helper()
	for _, render := range []func(proto.Message) ([]byte, error){ManifestYAML, ManifestJSON} {
		out, err := render(s)
		if err != nil {
			t.Fatal(err)
		}
		objs, err := ParseManifests("out", out)
		if err != nil {
			t.Fatalf("parse of\n%s\nfailed: %v", out, err)
		}
		if len(objs) != 1 || !proto.Equal(objs[0].Service, s) {
			t.Fatalf("round trip of\n%s\n got %v\nwant %v", out, objs, s)
		}
	}
}

func TestManifestRoundTripOddStrings(t *testing.T) {
	checkRoundTrip(t, oddService("k2", "v2", "http"))
}

func FuzzManifestRoundTrip(f *testing.F) {
	f.Add("app", "web", "8080")
	f.Add("<<", "\n\n x ", "0x10")
	f.Add("- a", "'\"", "")
	f.Add("\u201cq\u201d", "\u2018a\u2019 \u00ab\n", "\u2033")
	f.Fuzz(func(t *testing.T, key, val, targetPort string) {
		if !utf8.ValidString(key) || !utf8.ValidString(val) || !utf8.ValidString(targetPort) {
			return // proto strings are UTF-8
		}
		s := oddService(key, val, targetPort)
		checkRoundTrip(t, s)
	})
}
