package server

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	portalv1 "github.com/portal-lb/portal/proto/portal/v1"
)

func baseService(typ string) *portalv1.Service {
	s := &portalv1.Service{
		Metadata: &portalv1.ObjectMeta{Name: "web", Labels: map[string]string{"app": "web", "example.com/tier": "fe"}},
		Spec: &portalv1.ServiceSpec{
			Type:     typ,
			Selector: map[string]string{"app": "web"},
			Ports: []*portalv1.ServicePort{
				{Name: "http", Port: 80, TargetPort: "http-alt"},
				{Name: "https", Port: 443, Protocol: "TCP"},
			},
		},
	}
	if typ == portalv1.ServiceTypeExternalName {
		s.Spec.Ports = nil
		s.Spec.ExternalName = "db.example.com"
	}
	return s
}

func TestDefaults(t *testing.T) {
	s := baseService("")
	s.Spec.SessionAffinity = "ClientIP"
	s.Status = &portalv1.ServiceStatus{LoadBalancer: &portalv1.LoadBalancerStatus{Ingress: []*portalv1.LoadBalancerIngress{{Ip: "1.2.3.4"}}}}
	DefaultService(s)
	sp := s.GetSpec()
	if s.GetMetadata().GetNamespace() != "default" || sp.GetType() != "ClusterIP" || sp.GetPorts()[0].GetProtocol() != "TCP" ||
		sp.GetPorts()[1].GetTargetPort() != "443" || sp.GetPorts()[0].GetTargetPort() != "http-alt" ||
		sp.GetSessionAffinityConfig().GetClientIp().GetTimeoutSeconds() != 10800 || sp.GetExternalTrafficPolicy() != "" || s.Status != nil {
		t.Fatalf("defaults: %v", s)
	}
	hc := baseService("ClusterIP")
	hc.Spec.HealthCheck = &portalv1.HealthCheck{Type: "HTTP"}
	DefaultService(hc)
	if h := hc.GetSpec().GetHealthCheck(); h.GetPath() != "/" || h.GetExpectedCodes() != "200-399" || h.GetIntervalMillis() != 2000 ||
		h.GetTimeoutMillis() != 1000 || h.GetHealthyThreshold() != 2 || h.GetUnhealthyThreshold() != 3 || h.GetAllUnhealthy() != "FailOpen" {
		t.Fatalf("healthCheck defaults: %v", h)
	}
	if vs := ValidateService(hc); len(vs) != 0 {
		t.Fatalf("defaulted HTTP check invalid: %v", vs)
	}
	lb := baseService("LoadBalancer")
	DefaultService(lb)
	if lb.GetSpec().GetExternalTrafficPolicy() != "Cluster" || lb.GetSpec().GetSessionAffinity() != "None" {
		t.Fatalf("LoadBalancer defaults: %v", lb.GetSpec())
	}
	ep := &portalv1.Endpoints{Subsets: []*portalv1.EndpointSubset{{Ports: []*portalv1.EndpointPort{{Port: 1}}}}}
	DefaultEndpoints(ep)
	if ep.GetMetadata().GetNamespace() != "default" || ep.GetSubsets()[0].GetPorts()[0].GetProtocol() != "TCP" {
		t.Fatalf("endpoints defaults: %v", ep)
	}
}

func TestValidServices(t *testing.T) {
	for _, typ := range []string{"ClusterIP", "NodePort", "LoadBalancer", "ExternalName"} {
		s := baseService(typ)
		DefaultService(s)
		if vs := ValidateService(s); len(vs) != 0 {
			t.Errorf("%s: unexpected violations %v", typ, vs)
		}
	}
	headless := baseService("ClusterIP")
	headless.Spec.ClusterIp, headless.Spec.Ports = "None", nil
	DefaultService(headless)
	if vs := ValidateService(headless); len(vs) != 0 {
		t.Errorf("headless without ports: %v", vs)
	}
	full := baseService("LoadBalancer")
	full.Spec.ExternalTrafficPolicy = "Local"
	full.Spec.HealthCheckNodePort = 32000
	full.Spec.LoadBalancerIp = "198.19.0.10"
	full.Spec.LoadBalancerSourceRanges = []string{"198.18.0.0/15", "2001:db8::/32"}
	full.Spec.ExternalIps = []string{"198.18.3.3"}
	full.Spec.SessionAffinity = "ClientIP"
	full.Spec.SessionAffinityConfig = &portalv1.SessionAffinityConfig{ClientIp: &portalv1.ClientIPConfig{TimeoutSeconds: 86400}}
	full.Spec.Ports[0].NodePort = 30080
	full.Spec.Ports = append(full.Spec.Ports, &portalv1.ServicePort{Name: "dns", Protocol: "UDP", Port: 80, NodePort: 30080})
	full.Spec.Scheduler = "lc"
	DefaultService(full)
	if vs := ValidateService(full); len(vs) != 0 {
		t.Errorf("full LoadBalancer: %v", vs)
	}
}

// Each case breaks one rule; the violation must name that field.
func TestServiceViolations(t *testing.T) {
	cases := []struct {
		name  string
		typ   string
		edit  func(*portalv1.Service)
		field string
	}{
		{"name required", "ClusterIP", func(s *portalv1.Service) { s.Metadata.Name = "" }, "metadata.name"},
		{"name DNS-1035", "ClusterIP", func(s *portalv1.Service) { s.Metadata.Name = "1web" }, "metadata.name"},
		{"name upper case", "ClusterIP", func(s *portalv1.Service) { s.Metadata.Name = "Web" }, "metadata.name"},
		{"name too long", "ClusterIP", func(s *portalv1.Service) { s.Metadata.Name = strings.Repeat("a", 64) }, "metadata.name"},
		{"namespace", "ClusterIP", func(s *portalv1.Service) { s.Metadata.Namespace = "Bad_NS" }, "metadata.namespace"},
		{"label key", "ClusterIP", func(s *portalv1.Service) { s.Metadata.Labels["-bad"] = "x" }, "metadata.labels[-bad]"},
		{"label value", "ClusterIP", func(s *portalv1.Service) { s.Metadata.Labels["ok"] = "bad value" }, "metadata.labels[ok]"},
		{"selector", "ClusterIP", func(s *portalv1.Service) { s.Spec.Selector["a"] = strings.Repeat("x", 64) }, "spec.selector[a]"},
		{"type", "ClusterIP", func(s *portalv1.Service) { s.Spec.Type = "Balancer" }, "spec.type"},
		{"ports required", "ClusterIP", func(s *portalv1.Service) { s.Spec.Ports = nil }, "spec.ports"},
		{"port name required", "ClusterIP", func(s *portalv1.Service) { s.Spec.Ports[1].Name = "" }, "spec.ports[1].name"},
		{"port name unique", "ClusterIP", func(s *portalv1.Service) { s.Spec.Ports[1].Name = "http" }, "spec.ports[1].name"},
		{"port name label", "ClusterIP", func(s *portalv1.Service) { s.Spec.Ports[0].Name = "HTTP" }, "spec.ports[0].name"},
		{"protocol", "ClusterIP", func(s *portalv1.Service) { s.Spec.Ports[0].Protocol = "ICMP" }, "spec.ports[0].protocol"},
		{"port zero", "ClusterIP", func(s *portalv1.Service) { s.Spec.Ports[1].Port = 0; s.Spec.Ports[1].TargetPort = "1" }, "spec.ports[1].port"},
		{"port too big", "ClusterIP", func(s *portalv1.Service) { s.Spec.Ports[1].Port = 70000 }, "spec.ports[1].port"},
		{"duplicate port", "ClusterIP", func(s *portalv1.Service) { s.Spec.Ports[1].Port = 80 }, "spec.ports[1]"},
		{"targetPort number", "ClusterIP", func(s *portalv1.Service) { s.Spec.Ports[1].TargetPort = "65536" }, "spec.ports[1].targetPort"},
		{"targetPort name", "ClusterIP", func(s *portalv1.Service) { s.Spec.Ports[1].TargetPort = "Not_A_Name" }, "spec.ports[1].targetPort"},
		{"targetPort name length", "ClusterIP", func(s *portalv1.Service) { s.Spec.Ports[1].TargetPort = "abcdefghijklmnop" }, "spec.ports[1].targetPort"},
		{"targetPort double dash", "ClusterIP", func(s *portalv1.Service) { s.Spec.Ports[1].TargetPort = "a--b" }, "spec.ports[1].targetPort"},
		{"nodePort on ClusterIP", "ClusterIP", func(s *portalv1.Service) { s.Spec.Ports[0].NodePort = 30000 }, "spec.ports[0].nodePort"},
		{"nodePort range", "NodePort", func(s *portalv1.Service) { s.Spec.Ports[0].NodePort = 70000 }, "spec.ports[0].nodePort"},
		{"duplicate nodePort", "NodePort", func(s *portalv1.Service) { s.Spec.Ports[0].NodePort = 30001; s.Spec.Ports[1].NodePort = 30001 }, "spec.ports[1].nodePort"},
		{"clusterIP syntax", "ClusterIP", func(s *portalv1.Service) { s.Spec.ClusterIp = "10.0.0.300" }, "spec.clusterIP"},
		{"clusterIP unspecified", "ClusterIP", func(s *portalv1.Service) { s.Spec.ClusterIp = "0.0.0.0" }, "spec.clusterIP"},
		{"headless NodePort", "NodePort", func(s *portalv1.Service) { s.Spec.ClusterIp = "None" }, "spec.clusterIP"},
		{"clusterIP on ExternalName", "ExternalName", func(s *portalv1.Service) { s.Spec.ClusterIp = "198.18.0.1" }, "spec.clusterIP"},
		{"externalIPs", "ClusterIP", func(s *portalv1.Service) { s.Spec.ExternalIps = []string{"198.18.0.1", "nope"} }, "spec.externalIPs[1]"},
		{"externalIPs link-local", "ClusterIP", func(s *portalv1.Service) { s.Spec.ExternalIps = []string{"169.254.1.1"} }, "spec.externalIPs[0]"},
		{"externalIPs multicast", "ClusterIP", func(s *portalv1.Service) { s.Spec.ExternalIps = []string{"224.0.0.5"} }, "spec.externalIPs[0]"},
		{"sessionAffinity", "ClusterIP", func(s *portalv1.Service) { s.Spec.SessionAffinity = "Cookie" }, "spec.sessionAffinity"},
		{"affinity timeout high", "ClusterIP", func(s *portalv1.Service) {
			s.Spec.SessionAffinity = "ClientIP"
			s.Spec.SessionAffinityConfig = &portalv1.SessionAffinityConfig{ClientIp: &portalv1.ClientIPConfig{TimeoutSeconds: 86401}}
		}, "spec.sessionAffinityConfig.clientIP.timeoutSeconds"},
		{"affinity timeout negative", "ClusterIP", func(s *portalv1.Service) {
			s.Spec.SessionAffinity = "ClientIP"
			s.Spec.SessionAffinityConfig = &portalv1.SessionAffinityConfig{ClientIp: &portalv1.ClientIPConfig{TimeoutSeconds: -1}}
		}, "spec.sessionAffinityConfig.clientIP.timeoutSeconds"},
		{"affinity config without ClientIP", "ClusterIP", func(s *portalv1.Service) {
			s.Spec.SessionAffinityConfig = &portalv1.SessionAffinityConfig{ClientIp: &portalv1.ClientIPConfig{TimeoutSeconds: 5}}
		}, "spec.sessionAffinityConfig"},
		{"loadBalancerIP on ClusterIP", "ClusterIP", func(s *portalv1.Service) { s.Spec.LoadBalancerIp = "198.19.0.1" }, "spec.loadBalancerIP"},
		{"loadBalancerIP syntax", "LoadBalancer", func(s *portalv1.Service) { s.Spec.LoadBalancerIp = "x" }, "spec.loadBalancerIP"},
		{"source ranges CIDR", "LoadBalancer", func(s *portalv1.Service) {
			s.Spec.LoadBalancerSourceRanges = []string{"198.18.0.0/15", "198.18.0.0/33"}
		}, "spec.loadBalancerSourceRanges[1]"},
		{"source ranges bare IP", "LoadBalancer", func(s *portalv1.Service) { s.Spec.LoadBalancerSourceRanges = []string{"198.18.0.1"} }, "spec.loadBalancerSourceRanges[0]"},
		{"source ranges on NodePort", "NodePort", func(s *portalv1.Service) { s.Spec.LoadBalancerSourceRanges = []string{"198.18.0.0/15"} }, "spec.loadBalancerSourceRanges[0]"},
		{"externalName required", "ExternalName", func(s *portalv1.Service) { s.Spec.ExternalName = "" }, "spec.externalName"},
		{"externalName hostname", "ExternalName", func(s *portalv1.Service) { s.Spec.ExternalName = "bad_host.example.com" }, "spec.externalName"},
		{"externalName on ClusterIP", "ClusterIP", func(s *portalv1.Service) { s.Spec.ExternalName = "example.com" }, "spec.externalName"},
		{"traffic policy on ClusterIP", "ClusterIP", func(s *portalv1.Service) { s.Spec.ExternalTrafficPolicy = "Local" }, "spec.externalTrafficPolicy"},
		{"traffic policy value", "NodePort", func(s *portalv1.Service) { s.Spec.ExternalTrafficPolicy = "Global" }, "spec.externalTrafficPolicy"},
		{"healthCheckNodePort on Cluster policy", "LoadBalancer", func(s *portalv1.Service) { s.Spec.HealthCheckNodePort = 32000 }, "spec.healthCheckNodePort"},
		{"scheduler", "ClusterIP", func(s *portalv1.Service) { s.Spec.Scheduler = "fastest" }, "spec.scheduler"},
		{"healthCheck type", "ClusterIP", func(s *portalv1.Service) { s.Spec.HealthCheck = &portalv1.HealthCheck{Type: "PING"} }, "spec.healthCheck.type"},
		{"healthCheck path", "ClusterIP", func(s *portalv1.Service) { s.Spec.HealthCheck = &portalv1.HealthCheck{Type: "HTTP", Path: "healthz"} }, "spec.healthCheck.path"},
		{"healthCheck codes", "ClusterIP", func(s *portalv1.Service) {
			s.Spec.HealthCheck = &portalv1.HealthCheck{Type: "HTTPS", ExpectedCodes: "2xx"}
		}, "spec.healthCheck.expectedCodes"},
		{"healthCheck path on TCP", "ClusterIP", func(s *portalv1.Service) { s.Spec.HealthCheck = &portalv1.HealthCheck{Path: "/x"} }, "spec.healthCheck"},
		{"healthCheck service on TCP", "ClusterIP", func(s *portalv1.Service) { s.Spec.HealthCheck = &portalv1.HealthCheck{Service: "x"} }, "spec.healthCheck.service"},
		{"healthCheck send on HTTP", "ClusterIP", func(s *portalv1.Service) { s.Spec.HealthCheck = &portalv1.HealthCheck{Type: "HTTP", Send: "x"} }, "spec.healthCheck"},
		{"healthCheck interval", "ClusterIP", func(s *portalv1.Service) { s.Spec.HealthCheck = &portalv1.HealthCheck{IntervalMillis: 50} }, "spec.healthCheck.intervalMillis"},
		{"healthCheck timeout", "ClusterIP", func(s *portalv1.Service) {
			s.Spec.HealthCheck = &portalv1.HealthCheck{IntervalMillis: 500, TimeoutMillis: 600}
		}, "spec.healthCheck.timeoutMillis"},
		{"healthCheck thresholds", "ClusterIP", func(s *portalv1.Service) { s.Spec.HealthCheck = &portalv1.HealthCheck{HealthyThreshold: -1} }, "spec.healthCheck.healthyThreshold"},
		{"healthCheck unhealthy threshold", "ClusterIP", func(s *portalv1.Service) { s.Spec.HealthCheck = &portalv1.HealthCheck{UnhealthyThreshold: 101} }, "spec.healthCheck.unhealthyThreshold"},
		{"healthCheck allUnhealthy", "ClusterIP", func(s *portalv1.Service) { s.Spec.HealthCheck = &portalv1.HealthCheck{AllUnhealthy: "Drop"} }, "spec.healthCheck.allUnhealthy"},
		{"healthCheck port", "ClusterIP", func(s *portalv1.Service) { s.Spec.HealthCheck = &portalv1.HealthCheck{Port: 70000} }, "spec.healthCheck.port"},
		{"healthCheck on ExternalName", "ExternalName", func(s *portalv1.Service) { s.Spec.HealthCheck = &portalv1.HealthCheck{} }, "spec.healthCheck"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := baseService(c.typ)
			c.edit(s)
			DefaultService(s)
			vs := ValidateService(s)
			for _, v := range vs {
				if v.Field == c.field {
					if v.Reason == "" {
						t.Fatalf("violation of %s without a reason", c.field)
					}
					return
				}
			}
			t.Fatalf("want a violation of %s, got %v", c.field, vs)
		})
	}
}

func TestEveryViolationIsReported(t *testing.T) {
	s := baseService("ClusterIP")
	s.Metadata.Name = "Bad"
	s.Spec.Ports[0].Port = 0
	s.Spec.Ports[1].TargetPort = "--"
	s.Spec.LoadBalancerIp = "198.19.0.1"
	DefaultService(s)
	got := map[string]bool{}
	for _, v := range ValidateService(s) {
		got[v.Field] = true
	}
	for _, f := range []string{"metadata.name", "spec.ports[0].port", "spec.ports[1].targetPort", "spec.loadBalancerIP"} {
		if !got[f] {
			t.Errorf("missing %s in %v", f, got)
		}
	}
}

func baseEndpoints() *portalv1.Endpoints {
	return &portalv1.Endpoints{
		Metadata: &portalv1.ObjectMeta{Name: "web"},
		Subsets: []*portalv1.EndpointSubset{{
			Addresses:         []*portalv1.EndpointAddress{{Ip: "198.18.1.1", NodeName: "node-1.example", Hostname: "web-0"}, {Ip: "2001:db8::1"}},
			NotReadyAddresses: []*portalv1.EndpointAddress{{Ip: "198.18.1.2"}},
			Ports:             []*portalv1.EndpointPort{{Name: "http", Port: 8080}, {Name: "https", Port: 8443, Protocol: "TCP"}},
		}},
	}
}

func TestEndpointsViolations(t *testing.T) {
	ok := baseEndpoints()
	DefaultEndpoints(ok)
	if vs := ValidateEndpoints(ok); len(vs) != 0 {
		t.Fatalf("valid endpoints: %v", vs)
	}
	cases := []struct {
		name  string
		edit  func(*portalv1.Endpoints)
		field string
	}{
		{"name", func(e *portalv1.Endpoints) { e.Metadata.Name = "" }, "metadata.name"},
		{"ip syntax", func(e *portalv1.Endpoints) { e.Subsets[0].Addresses[1].Ip = "2001:db8::g" }, "subsets[0].addresses[1].ip"},
		{"link-local v4", func(e *portalv1.Endpoints) { e.Subsets[0].Addresses[0].Ip = "169.254.169.254" }, "subsets[0].addresses[0].ip"},
		{"link-local v6", func(e *portalv1.Endpoints) { e.Subsets[0].Addresses[0].Ip = "fe80::1" }, "subsets[0].addresses[0].ip"},
		{"link-local multicast v4", func(e *portalv1.Endpoints) { e.Subsets[0].Addresses[0].Ip = "224.0.0.251" }, "subsets[0].addresses[0].ip"},
		{"link-local multicast v6", func(e *portalv1.Endpoints) { e.Subsets[0].NotReadyAddresses[0].Ip = "ff02::1" }, "subsets[0].notReadyAddresses[0].ip"},
		{"unspecified", func(e *portalv1.Endpoints) { e.Subsets[0].Addresses[0].Ip = "0.0.0.0" }, "subsets[0].addresses[0].ip"},
		{"hostname", func(e *portalv1.Endpoints) { e.Subsets[0].Addresses[0].Hostname = "Web_0" }, "subsets[0].addresses[0].hostname"},
		{"nodeName", func(e *portalv1.Endpoints) { e.Subsets[0].Addresses[0].NodeName = "Node 1" }, "subsets[0].addresses[0].nodeName"},
		{"no addresses", func(e *portalv1.Endpoints) { e.Subsets[0].Addresses, e.Subsets[0].NotReadyAddresses = nil, nil }, "subsets[0].addresses"},
		{"no ports", func(e *portalv1.Endpoints) { e.Subsets[0].Ports = nil }, "subsets[0].ports"},
		{"port name required", func(e *portalv1.Endpoints) { e.Subsets[0].Ports[1].Name = "" }, "subsets[0].ports[1].name"},
		{"port name unique", func(e *portalv1.Endpoints) { e.Subsets[0].Ports[1].Name = "http" }, "subsets[0].ports[1].name"},
		{"port range", func(e *portalv1.Endpoints) { e.Subsets[0].Ports[0].Port = 0 }, "subsets[0].ports[0].port"},
		{"protocol", func(e *portalv1.Endpoints) { e.Subsets[0].Ports[0].Protocol = "tcp" }, "subsets[0].ports[0].protocol"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := baseEndpoints()
			c.edit(e)
			DefaultEndpoints(e)
			for _, v := range ValidateEndpoints(e) {
				if v.Field == c.field {
					return
				}
			}
			t.Fatalf("want a violation of %s, got %v", c.field, ValidateEndpoints(e))
		})
	}
}

// FuzzValidateService feeds arbitrary JSON through defaulting and
// validation: it must never panic, must be deterministic, and every
// violation names a field and a reason.
func FuzzValidateService(f *testing.F) {
	for _, typ := range []string{"ClusterIP", "NodePort", "LoadBalancer", "ExternalName"} {
		b, _ := protojson.Marshal(baseService(typ))
		f.Add(b)
	}
	f.Add([]byte(`{"metadata":{"name":"x"},"spec":{"ports":[null,{}],"sessionAffinity":"ClientIP"}}`))
	f.Add([]byte(`{"spec":{"clusterIP":"None","type":"NodePort","ports":[{"port":-1,"targetPort":"0"}]}}`))
	f.Add([]byte(`{"spec":{"loadBalancerSourceRanges":["::/0"],"type":"LoadBalancer","externalTrafficPolicy":"Local","healthCheckNodePort":1}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var s portalv1.Service
		if protojson.Unmarshal(data, &s) != nil {
			return
		}
		c := proto.Clone(&s).(*portalv1.Service)
		DefaultService(&s)
		DefaultService(c)
		a, b := ValidateService(&s), ValidateService(c)
		if len(a) != len(b) {
			t.Fatalf("validation not deterministic: %v vs %v", a, b)
		}
		for _, v := range a {
			if v.Field == "" || v.Reason == "" {
				t.Fatalf("violation without field or reason: %+v", v)
			}
		}
	})
}

func FuzzValidateEndpoints(f *testing.F) {
	b, _ := protojson.Marshal(baseEndpoints())
	f.Add(b)
	f.Add([]byte(`{"subsets":[null,{"addresses":[null],"ports":[null]}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var e portalv1.Endpoints
		if protojson.Unmarshal(data, &e) != nil {
			return
		}
		DefaultEndpoints(&e)
		for _, v := range ValidateEndpoints(&e) {
			if v.Field == "" || v.Reason == "" {
				t.Fatalf("violation without field or reason: %+v", v)
			}
		}
	})
}
