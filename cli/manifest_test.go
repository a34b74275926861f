package cli

import (
	"errors"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	portalv1 "github.com/portal-lb/portal/proto/portal/v1"
)

const webService = `apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
  labels:
    app: web
spec:
  type: LoadBalancer
  selector:
    app: web
    tier: fe
  ports:
  - name: http
    port: 80
    targetPort: 8080
    nodePort: 30080
  - name: https
    protocol: TCP
    port: 443
    targetPort: https
  sessionAffinity: ClientIP
  sessionAffinityConfig:
    clientIP:
      timeoutSeconds: 600
  loadBalancerIP: 127.97.0.10
  loadBalancerSourceRanges:
  - 10.0.0.0/8
  - 192.168.0.0/16
  externalIPs:
  - 198.18.0.1
  externalTrafficPolicy: Local
  healthCheckNodePort: 32000
`

const webEndpoints = `apiVersion: v1
kind: Endpoints
metadata:
  name: web
subsets:
- addresses:
  - ip: 10.1.0.1
    nodeName: node-a
  - ip: 10.1.0.2
    hostname: web-2
  notReadyAddresses:
  - ip: 10.1.0.3
  ports:
  - name: http
    port: 8080
    protocol: TCP
  - name: https
    port: 8443
`

func mustParse(t *testing.T, name, data string) []Object {
	t.Helper()
	objs, err := ParseManifests(name, []byte(data))
	if err != nil {
		t.Fatalf("ParseManifests(%s): %v", name, err)
	}
	return objs
}

func TestParseServiceFull(t *testing.T) {
	objs := mustParse(t, "web.yaml", webService)
	if len(objs) != 1 {
		t.Fatalf("got %d objects, want 1", len(objs))
	}
	o := objs[0]
	if o.Kind != KindService || o.Service == nil || o.Endpoints != nil {
		t.Fatalf("kind %q service %v endpoints %v", o.Kind, o.Service, o.Endpoints)
	}
	if o.Ref() != "service/web" || o.Namespace() != "shop" || o.Line != 1 || o.Document != 1 || o.Source != "web.yaml" {
		t.Errorf("ref %q ns %q line %d doc %d source %q", o.Ref(), o.Namespace(), o.Line, o.Document, o.Source)
	}
	want := &portalv1.Service{
		Metadata: &portalv1.ObjectMeta{Name: "web", Namespace: "shop", Labels: map[string]string{"app": "web"}},
		Spec: &portalv1.ServiceSpec{
			Type:     "LoadBalancer",
			Selector: map[string]string{"app": "web", "tier": "fe"},
			Ports: []*portalv1.ServicePort{
				{Name: "http", Port: 80, TargetPort: "8080", NodePort: 30080},
				{Name: "https", Protocol: "TCP", Port: 443, TargetPort: "https"},
			},
			SessionAffinity:          "ClientIP",
			SessionAffinityConfig:    &portalv1.SessionAffinityConfig{ClientIp: &portalv1.ClientIPConfig{TimeoutSeconds: 600}},
			LoadBalancerIp:           "127.97.0.10",
			LoadBalancerSourceRanges: []string{"10.0.0.0/8", "192.168.0.0/16"},
			ExternalIps:              []string{"198.18.0.1"},
			ExternalTrafficPolicy:    "Local",
			HealthCheckNodePort:      32000,
		},
	}
	if !proto.Equal(o.Service, want) {
		t.Errorf("service\n got %v\nwant %v", o.Service, want)
	}
	if len(o.IgnoredFields) != 0 {
		t.Errorf("ignored %v", o.IgnoredFields)
	}
}

func TestParseServiceVariants(t *testing.T) {
	tests := []struct {
		name  string
		input string
		check func(t *testing.T, s *portalv1.Service)
	}{
		{
			name:  "int targetPort",
			input: "kind: Service\nmetadata: {name: a}\nspec:\n  ports:\n  - port: 80\n    targetPort: 9376\n",
			check: func(t *testing.T, s *portalv1.Service) {
				if got := s.GetSpec().GetPorts()[0].GetTargetPort(); got != "9376" {
					t.Errorf("targetPort %q", got)
				}
			},
		},
		{
			name:  "named targetPort",
			input: "kind: Service\nmetadata: {name: a}\nspec:\n  ports:\n  - port: 80\n    targetPort: http-web\n",
			check: func(t *testing.T, s *portalv1.Service) {
				if got := s.GetSpec().GetPorts()[0].GetTargetPort(); got != "http-web" {
					t.Errorf("targetPort %q", got)
				}
			},
		},
		{
			name:  "quoted numbers and resourceVersion string",
			input: "kind: Service\nmetadata: {name: a, resourceVersion: \"42\", creationTimestamp: null, uid: u-1}\nspec:\n  ports:\n  - port: \"80\"\n    nodePort: 30001\n",
			check: func(t *testing.T, s *portalv1.Service) {
				if s.GetMetadata().GetResourceVersion() != 42 || s.GetMetadata().GetCreationTimestamp() != nil || s.GetMetadata().GetUid() != "u-1" {
					t.Errorf("metadata %v", s.GetMetadata())
				}
				if p := s.GetSpec().GetPorts()[0]; p.GetPort() != 80 || p.GetNodePort() != 30001 {
					t.Errorf("port %v", p)
				}
			},
		},
		{
			name:  "multi-port NodePort",
			input: "kind: Service\nmetadata: {name: a}\nspec:\n  type: NodePort\n  ports:\n  - {name: dns, port: 53, protocol: UDP, nodePort: 30053}\n  - {name: dns-tcp, port: 53, protocol: TCP, nodePort: 30054}\n",
			check: func(t *testing.T, s *portalv1.Service) {
				ps := s.GetSpec().GetPorts()
				if s.GetSpec().GetType() != "NodePort" || len(ps) != 2 || ps[0].GetProtocol() != "UDP" || ps[1].GetNodePort() != 30054 {
					t.Errorf("spec %v", s.GetSpec())
				}
			},
		},
		{
			name:  "ExternalName",
			input: "kind: Service\nmetadata: {name: db}\nspec:\n  type: ExternalName\n  externalName: db.example.com\n",
			check: func(t *testing.T, s *portalv1.Service) {
				if s.GetSpec().GetType() != "ExternalName" || s.GetSpec().GetExternalName() != "db.example.com" {
					t.Errorf("spec %v", s.GetSpec())
				}
			},
		},
		{
			name:  "headless and creationTimestamp",
			input: "kind: Service\nmetadata: {name: h, creationTimestamp: \"2024-01-02T03:04:05Z\"}\nspec: {clusterIP: None, publishNotReadyAddresses: true}\n",
			check: func(t *testing.T, s *portalv1.Service) {
				if s.GetSpec().GetClusterIp() != "None" || !s.GetSpec().GetPublishNotReadyAddresses() {
					t.Errorf("spec %v", s.GetSpec())
				}
				if s.GetMetadata().GetCreationTimestamp().GetSeconds() != 1704164645 {
					t.Errorf("creationTimestamp %v", s.GetMetadata().GetCreationTimestamp())
				}
			},
		},
		{
			name:  "status is never sent",
			input: "kind: Service\nmetadata: {name: a}\nspec: {type: LoadBalancer}\nstatus:\n  loadBalancer:\n    ingress: [{ip: 1.2.3.4}]\n  conditions: [{type: X, foo: bar}]\n",
			check: func(t *testing.T, s *portalv1.Service) {
				if s.Status != nil {
					t.Errorf("status %v", s.Status)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs := mustParse(t, "x.yaml", tt.input)
			if len(objs) != 1 || objs[0].Service == nil {
				t.Fatalf("objects %v", objs)
			}
			if len(objs[0].IgnoredFields) != 0 {
				t.Errorf("ignored %v", objs[0].IgnoredFields)
			}
			tt.check(t, objs[0].Service)
		})
	}
}

func TestParseEndpoints(t *testing.T) {
	objs := mustParse(t, "ep.yaml", webEndpoints)
	if len(objs) != 1 || objs[0].Kind != KindEndpoints || objs[0].Endpoints == nil {
		t.Fatalf("objects %v", objs)
	}
	want := &portalv1.Endpoints{
		Metadata: &portalv1.ObjectMeta{Name: "web"},
		Subsets: []*portalv1.EndpointSubset{{
			Addresses: []*portalv1.EndpointAddress{
				{Ip: "10.1.0.1", NodeName: "node-a"},
				{Ip: "10.1.0.2", Hostname: "web-2"},
			},
			NotReadyAddresses: []*portalv1.EndpointAddress{{Ip: "10.1.0.3"}},
			Ports: []*portalv1.EndpointPort{
				{Name: "http", Port: 8080, Protocol: "TCP"},
				{Name: "https", Port: 8443},
			},
		}},
	}
	if !proto.Equal(objs[0].Endpoints, want) {
		t.Errorf("endpoints\n got %v\nwant %v", objs[0].Endpoints, want)
	}
	if objs[0].Ref() != "endpoints/web" {
		t.Errorf("ref %q", objs[0].Ref())
	}
}

func TestParseList(t *testing.T) {
	input := `apiVersion: v1
kind: List
metadata:
  resourceVersion: ""
items:
- apiVersion: v1
  kind: Service
  metadata:
    name: web
  spec:
    ports:
    - port: 80
- apiVersion: v1
  kind: Endpoints
  metadata:
    name: web
  subsets:
  - addresses:
    - ip: 10.0.0.1
    ports:
    - port: 80
`
	objs := mustParse(t, "list.yaml", input)
	if len(objs) != 2 {
		t.Fatalf("got %d objects", len(objs))
	}
	if objs[0].Kind != KindService || objs[1].Kind != KindEndpoints {
		t.Errorf("kinds %s %s", objs[0].Kind, objs[1].Kind)
	}
	if objs[0].Line != 6 || objs[1].Line != 13 {
		t.Errorf("lines %d %d, want 6 13", objs[0].Line, objs[1].Line)
	}
}

func TestParseMultiDocument(t *testing.T) {
	input := "# leading comment\n---\n" + webService + "---\n---\n# only a comment\n---\n" + webEndpoints + "...\n"
	objs := mustParse(t, "all.yaml", input)
	if len(objs) != 2 {
		t.Fatalf("got %d objects", len(objs))
	}
	if objs[0].Document != 1 || objs[1].Document != 2 {
		t.Errorf("documents %d %d", objs[0].Document, objs[1].Document)
	}
	if objs[0].Line != 3 {
		t.Errorf("first object line %d, want 3", objs[0].Line)
	}
	if want := 3 + strings.Count(webService, "\n") + 4; objs[1].Line != want {
		t.Errorf("second object line %d, want %d", objs[1].Line, want)
	}
}

func TestParseJSON(t *testing.T) {
	single := `{"apiVersion":"v1","kind":"Service","metadata":{"name":"web","resourceVersion":"7"},
 "spec":{"ports":[{"port":80,"targetPort":8080,"protocol":"TCP"}],"selector":{"app":"web"}}}`
	objs := mustParse(t, "web.json", single)
	if len(objs) != 1 || objs[0].Service.GetSpec().GetPorts()[0].GetTargetPort() != "8080" || objs[0].Service.GetMetadata().GetResourceVersion() != 7 {
		t.Fatalf("objects %v", objs)
	}

	stream := single + "\n" + `{"kind":"Endpoints","metadata":{"name":"web"},"subsets":[{"addresses":[{"ip":"10.0.0.1"}],"ports":[{"port":8080}]}]}` +
		"\n\n" + `{"kind":"Service","metadata":{"name":"api"},"spec":{"ports":[{"port":81,"targetPort":"api"}]}}`
	objs = mustParse(t, "stream.json", stream)
	if len(objs) != 3 {
		t.Fatalf("got %d objects", len(objs))
	}
	if objs[1].Kind != KindEndpoints || objs[2].Name() != "api" || objs[2].Service.GetSpec().GetPorts()[0].GetTargetPort() != "api" {
		t.Errorf("objects %v", objs)
	}
	if objs[1].Line != 3 || objs[2].Line != 5 || objs[2].Document != 3 {
		t.Errorf("lines %d %d doc %d", objs[1].Line, objs[2].Line, objs[2].Document)
	}

	// A List in JSON, as kubectl get -o json prints it.
	list := `{"apiVersion":"v1","kind":"List","items":[` + single + `]}`
	if objs := mustParse(t, "list.json", list); len(objs) != 1 || objs[0].Name() != "web" {
		t.Errorf("list objects %v", objs)
	}
}

func TestParseTypographicQuotes(t *testing.T) {
	tests := []struct {
		input, want string
	}{
		{"kind: Service\nmetadata:\n  name: web\n  labels:\n    app: \u201cweb\u201d\n",
			"web.yaml:5: typographic quote \u201c (U+201C) found; use plain ASCII quotes (\")"},
		{"kind: Service\nmetadata:\n  name: \u2018web\u2019\n", "web.yaml:3: typographic quote \u2018 (U+2018) found; use plain ASCII quotes (')"},
		{"kind: Service\n\n\nmetadata: {name: \u201eweb\u201c}\n", "web.yaml:4: typographic quote \u201e (U+201E)"},
		{"kind: Service\nmetadata: {name: web\u2033}\n", "web.yaml:2: typographic quote \u2033 (U+2033)"},
		{`{"kind": "Service", "metadata": {"name": "web"}, "spec": {"type": ` + "\u201dLoadBalancer\u201d}}", "web.yaml:1: typographic quote"},
	}
	for _, tt := range tests {
		_, err := ParseManifests("web.yaml", []byte(tt.input))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("input %q: error %v, want it to contain %q", tt.input, err, tt.want)
		}
		var me *ManifestError
		if !errors.As(err, &me) || me.File != "web.yaml" || me.Line == 0 {
			t.Errorf("error %#v is not a ManifestError with a line", err)
		}
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, input, want string
	}{
		{"unknown kind", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n", `x.yaml:1: document 1: unsupported apiVersion "apps/v1"`},
		{"unknown kind v1", "---\napiVersion: v1\nkind: Pod\nmetadata: {name: x}\n", `x.yaml:3: document 1: unsupported kind "Pod" (portal accepts Service, Endpoints and List)`},
		{"kind in second document", webService + "---\nkind: ConfigMap\n", `x.yaml:` + strconv.Itoa(strings.Count(webService, "\n")+2) + `: document 2: unsupported kind "ConfigMap"`},
		{"unknown kind in list", "kind: List\nitems:\n- kind: Service\n  metadata: {name: a}\n- kind: Secret\n  metadata: {name: b}\n", `x.yaml:5: document 1: items[1]: unsupported kind "Secret"`},
		{"missing kind", "metadata: {name: a}\n", "x.yaml:1: document 1: missing kind"},
		{"not an object", "- a\n- b\n", "x.yaml:1: document 1: expected an object"},
		{"scalar document", "just a string\n", "x.yaml:1: document 1: expected an object"},
		{"missing name", "kind: Service\nspec: {}\n", "x.yaml:1: document 1: Service has no metadata.name"},
		{"yaml error line", "kind: Service\nmetadata:\n  name: a\nspec:\n  ports:\n  - port: 80\n   targetPort: 8080\n", "x.yaml:7: invalid YAML"},
		{"yaml error parser line", "kind: Service\nmetadata:\n  name: a\n labels: {}\n", "x.yaml:4: invalid YAML: did not find expected key"},
		{"yaml error first line", "kind: Service: x\n", "x.yaml:1: invalid YAML"},
		{"yaml error later document", "kind: Service\nmetadata: {name: a}\n---\nkind: Service\nmetadata: {name: [\n", "x.yaml:5: invalid YAML"},
		{"yaml tab", "kind: Service\nmetadata:\n\tname: a\n", "x.yaml:3: invalid YAML"},
		{"bad port type", "kind: Service\nmetadata: {name: a}\nspec:\n  ports:\n  - port: http\n", `x.yaml:5: service/a: spec.ports[0].port: expected an integer, got a string ("http")`},
		{"port out of range", "kind: Service\nmetadata: {name: a}\nspec:\n  ports:\n  - port: 99999999999\n", "x.yaml:5: service/a: spec.ports[0].port: integer 99999999999 out of range"},
		{"ports not a list", "kind: Service\nmetadata: {name: a}\nspec:\n  ports: 80\n", "x.yaml:4: service/a: spec.ports: expected a list"},
		{"spec not an object", "kind: Service\nmetadata: {name: a}\nspec: [1]\n", "x.yaml:3: service/a: spec: expected an object"},
		{"bad timestamp", "kind: Service\nmetadata: {name: a, creationTimestamp: yesterday}\n", "service/a: metadata.creationTimestamp: invalid timestamp"},
		{"duplicate key", "kind: Service\nmetadata: {name: a}\nmetadata: {name: b}\n", "x.yaml:3: duplicate key \"metadata\""},
		{"json syntax", "{\"kind\": \"Service\",\n \"metadata\": {\"name\": \"a\"},,\n}", "x.yaml:2: invalid JSON"},
		{"json truncated", "{\"kind\": \"Service\",\n \"metadata\": {\"name\": \"a\"}\n", "x.yaml:3: invalid JSON"},
		{"invalid utf8", "kind: Service\nmetadata: {name: \xff}\n", "x.yaml:2: invalid UTF-8"},
		{"list in list", "kind: List\nitems:\n- kind: List\n", "items[0]: a List cannot contain a List"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseManifests("x.yaml", []byte(tt.input))
			if err == nil {
				t.Fatalf("no error, want %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q, want it to contain %q", err, tt.want)
			}
			var me *ManifestError
			if !errors.As(err, &me) {
				t.Errorf("error %T is not a *ManifestError", err)
			}
		})
	}
}

func TestParseUnknownFieldsWarned(t *testing.T) {
	input := `apiVersion: v1
kind: Service
metadata:
  name: web
  generation: 3
  managedFields:
  - manager: kubectl
  uid: 1234
spec:
  ipFamilies: [IPv4]
  ipFamilyPolicy: SingleStack
  internalTrafficPolicy: Cluster
  allocateLoadBalancerNodePorts: true
  clusterIPs: [10.96.0.10]
  clusterIP: 10.96.0.10
  ports:
  - name: a
    port: 80
    appProtocol: http
  - name: b
    port: 81
    appProtocol: http
status:
  loadBalancer: {}
  conditions: []
`
	objs := mustParse(t, "web.yaml", input)
	want := []string{
		"metadata.generation", "metadata.managedFields",
		"spec.ipFamilies", "spec.ipFamilyPolicy", "spec.internalTrafficPolicy",
		"spec.allocateLoadBalancerNodePorts", "spec.clusterIPs", "spec.ports[].appProtocol",
	}
	if got := objs[0].IgnoredFields; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("ignored fields\n got %v\nwant %v", got, want)
	}
	s := objs[0].Service
	if s.GetSpec().GetClusterIp() != "10.96.0.10" || len(s.GetSpec().GetPorts()) != 2 || s.GetMetadata().GetUid() != "1234" {
		t.Errorf("service %v", s)
	}

	// Endpoints from kubectl carry targetRef, which portal does not keep.
	ep := "kind: Endpoints\nmetadata: {name: e}\nsubsets:\n- addresses:\n  - ip: 10.0.0.1\n    targetRef: {kind: Pod, name: p}\n  ports:\n  - port: 80\n    appProtocol: http\n"
	objs = mustParse(t, "ep.yaml", ep)
	if got := strings.Join(objs[0].IgnoredFields, ","); got != "subsets[].addresses[].targetRef,subsets[].ports[].appProtocol" {
		t.Errorf("ignored %s", got)
	}
}

func TestParseEmpty(t *testing.T) {
	for _, in := range []string{"", "\n\n", "---\n", "# comment\n---\n---\n", "   "} {
		objs, err := ParseManifests("e.yaml", []byte(in))
		if err != nil || len(objs) != 0 {
			t.Errorf("input %q: %v %v", in, objs, err)
		}
	}
}

func TestParseYAMLFeatures(t *testing.T) {
	// Anchors, merge keys, flow style and a BOM all parse.
	input := "\xef\xbb\xbfkind: List\nitems:\n- &base\n  kind: Service\n  metadata: {name: a, labels: &l {app: x}}\n  spec: {ports: [{port: 80}], selector: *l}\n" +
		"- <<: *base\n  metadata: {name: b}\n"
	objs := mustParse(t, "a.yaml", input)
	if len(objs) != 2 || objs[1].Name() != "b" || objs[1].Service.GetSpec().GetSelector()["app"] != "x" {
		t.Fatalf("objects %v", objs)
	}
}

var fuzzSeeds = []string{
	webService,
	webEndpoints,
	webService + "---\n" + webEndpoints,
	`{"kind":"Service","metadata":{"name":"a"},"spec":{"ports":[{"port":80,"targetPort":8080}]}}{"kind":"Endpoints","metadata":{"name":"a"}}`,
	"kind: List\nitems:\n- kind: Service\n  metadata: {name: a}\n",
	"kind: Service\nmetadata: {name: \u201cweb\u201d}\n",
	"kind: Service\nmetadata:\n  name: a\n labels: {}\n",
	"kind: Deployment\n",
	"a: &a [*a]\n",
	"- [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]\n",
	"{\"kind\":\"Service\",\"metadata\":{\"name\":\"a\"},,}",
	"kind: Service\nmetadata: {name: a, resourceVersion: -1}\nspec: {ports: [{port: 0x50, nodePort: 1e3}]}\n",
	"kind: Service\nmetadata: {name: a}\nspec: {healthCheckNodePort: !!int abc}\n",
	"\xff\xfe",
	"---\n---\n...\n",
}

func FuzzParseManifests(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		objs, err := ParseManifests("fuzz.yaml", data)
		if err != nil {
			var me *ManifestError
			if !errors.As(err, &me) {
				t.Fatalf("error %T is not a *ManifestError: %v", err, err)
			}
			return
		}
		for i := range objs {
			o := &objs[i]
			if (o.Service == nil) == (o.Endpoints == nil) {
				t.Fatalf("object %d: service %v endpoints %v", i, o.Service, o.Endpoints)
			}
			if o.Name() == "" {
				t.Fatalf("object %d has no name", i)
			}
			if o.Service != nil && o.Service.Status != nil {
				t.Fatalf("object %d carries status", i)
			}
			// Whatever parses renders and parses again.
			out, err := ManifestYAML(o.Message())
			if err != nil {
				t.Fatalf("render: %v", err)
			}
			again, err := ParseManifests("again.yaml", out)
			if err != nil {
				t.Fatalf("re-parse of\n%s\nfailed: %v", out, err)
			}
			if len(again) != 1 || !proto.Equal(again[0].Message(), o.Message()) {
				t.Fatalf("round trip changed the object:\n%v\n%v", o.Message(), again)
			}
		}
	})
}
