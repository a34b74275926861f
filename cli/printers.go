package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	"gopkg.in/yaml.v3"

	portalv1 "github.com/portal-lb/portal/proto/portal/v1"
)

// Output formats of get.
const (
	OutputTable = "table"
	OutputWide  = "wide"
	OutputJSON  = "json"
	OutputYAML  = "yaml"
)

// TableOptions controls the table printers.
type TableOptions struct {
	// AllNamespaces adds a leading NAMESPACE column.
	AllNamespaces bool
	// Wide adds the SELECTOR column to services.
	Wide bool
	// NoHeaders leaves out the header line.
	NoHeaders bool
	// Now is the time AGE is measured against; zero means time.Now().
	Now time.Time
}

func (o TableOptions) now() time.Time {
	if o.Now.IsZero() {
		return time.Now()
	}
	return o.Now
}

// newTabWriter aligns columns like kubectl (three spaces between columns).
func newTabWriter(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 6, 4, 3, ' ', 0)
}

// PrintServices writes services as a kubectl-like table:
// NAME TYPE CLUSTER-IP EXTERNAL-IP PORT(S) AGE [SELECTOR].
func PrintServices(w io.Writer, svcs []*portalv1.Service, opts TableOptions) error {
	tw := newTabWriter(w)
	now := opts.now()
	if !opts.NoHeaders {
		var cols []string
		if opts.AllNamespaces {
			cols = append(cols, "NAMESPACE")
		}
		cols = append(cols, "NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE")
		if opts.Wide {
			cols = append(cols, "SELECTOR")
		}
		fmt.Fprintln(tw, strings.Join(cols, "\t"))
	}
	for _, svc := range svcs {
		var cols []string
		if opts.AllNamespaces {
			cols = append(cols, namespaceOf(svc.GetMetadata()))
		}
		cols = append(cols,
			svc.GetMetadata().GetName(),
			ServiceType(svc),
			ServiceClusterIP(svc),
			ServiceExternalIP(svc),
			ServicePorts(svc),
			Age(svc.GetMetadata().GetCreationTimestamp(), now),
		)
		if opts.Wide {
			cols = append(cols, FormatSelector(svc.GetSpec().GetSelector()))
		}
		fmt.Fprintln(tw, strings.Join(cols, "\t"))
	}
	return tw.Flush()
}

// PrintEndpoints writes endpoints as a kubectl-like table: NAME ENDPOINTS AGE.
func PrintEndpoints(w io.Writer, eps []*portalv1.Endpoints, opts TableOptions) error {
	tw := newTabWriter(w)
	now := opts.now()
	if !opts.NoHeaders {
		if opts.AllNamespaces {
			fmt.Fprint(tw, "NAMESPACE\t")
		}
		fmt.Fprintln(tw, "NAME\tENDPOINTS\tAGE")
	}
	for _, ep := range eps {
		if opts.AllNamespaces {
			fmt.Fprint(tw, namespaceOf(ep.GetMetadata()), "\t")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", ep.GetMetadata().GetName(), FormatEndpoints(ep, nil),
			Age(ep.GetMetadata().GetCreationTimestamp(), now))
	}
	return tw.Flush()
}

func namespaceOf(m *portalv1.ObjectMeta) string {
	if m.GetNamespace() == "" {
		return "default"
	}
	return m.GetNamespace()
}

// ServiceType returns spec.type, ClusterIP when empty.
func ServiceType(svc *portalv1.Service) string {
	if t := svc.GetSpec().GetType(); t != "" {
		return t
	}
	return "ClusterIP"
}

// ServiceClusterIP is the CLUSTER-IP column: the address, None for a
// headless service, <none> for ExternalName or when none is allocated.
func ServiceClusterIP(svc *portalv1.Service) string {
	if ServiceType(svc) == "ExternalName" {
		return "<none>"
	}
	if ip := svc.GetSpec().GetClusterIp(); ip != "" {
		return ip
	}
	return "<none>"
}

// ServiceExternalIP is the EXTERNAL-IP column (as kubectl computes it).
func ServiceExternalIP(svc *portalv1.Service) string {
	spec := svc.GetSpec()
	switch ServiceType(svc) {
	case "ClusterIP", "NodePort":
		if len(spec.GetExternalIps()) > 0 {
			return strings.Join(spec.GetExternalIps(), ",")
		}
		return "<none>"
	case "LoadBalancer":
		var ips []string
		for _, in := range svc.GetStatus().GetLoadBalancer().GetIngress() {
			if in.GetIp() != "" {
				ips = append(ips, in.GetIp())
			} else if in.GetHostname() != "" {
				ips = append(ips, in.GetHostname())
			}
		}
		ips = append(ips, spec.GetExternalIps()...)
		if len(ips) == 0 {
			return "<pending>"
		}
		return strings.Join(ips, ",")
	case "ExternalName":
		return spec.GetExternalName()
	}
	return "<unknown>"
}

// ServicePorts is the PORT(S) column: 80/TCP or 80:30080/TCP,443:31443/TCP.
func ServicePorts(svc *portalv1.Service) string {
	ports := svc.GetSpec().GetPorts()
	if len(ports) == 0 {
		return "<none>"
	}
	parts := make([]string, 0, len(ports))
	for _, p := range ports {
		s := strconv.Itoa(int(p.GetPort()))
		if p.GetNodePort() != 0 {
			s += ":" + strconv.Itoa(int(p.GetNodePort()))
		}
		parts = append(parts, s+"/"+protocolOf(p.GetProtocol()))
	}
	return strings.Join(parts, ",")
}

func protocolOf(p string) string {
	if p == "" {
		return "TCP"
	}
	return p
}

// FormatSelector renders a selector or labels as app=web,tier=fe (sorted),
// <none> when empty.
func FormatSelector(sel map[string]string) string {
	if len(sel) == 0 {
		return "<none>"
	}
	keys := make([]string, 0, len(sel))
	for k := range sel {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + sel[k]
	}
	return strings.Join(parts, ",")
}

const maxEndpointsShown = 3

// FormatEndpoints renders the ready addresses as ip:port pairs, at most three
// followed by " + N more...", <none> when there are none. When portNames is
// non-nil only ports with those names are listed.
func FormatEndpoints(ep *portalv1.Endpoints, portNames map[string]bool) string {
	var list []string
	total := 0
	add := func(s string) {
		total++
		if len(list) < maxEndpointsShown {
			list = append(list, s)
		}
	}
	for _, ss := range ep.GetSubsets() {
		if len(ss.GetPorts()) == 0 {
			// A headless service may have addresses without ports.
			if portNames == nil {
				for _, a := range ss.GetAddresses() {
					add(a.GetIp())
				}
			}
			continue
		}
		for _, p := range ss.GetPorts() {
			if portNames != nil && !portNames[p.GetName()] {
				continue
			}
			for _, a := range ss.GetAddresses() {
				add(net.JoinHostPort(a.GetIp(), strconv.Itoa(int(p.GetPort()))))
			}
		}
	}
	if len(list) == 0 {
		return "<none>"
	}
	s := strings.Join(list, ",")
	if more := total - len(list); more > 0 {
		s += fmt.Sprintf(" + %d more...", more)
	}
	return s
}

// Age renders the time since ts like kubectl's AGE column; <unknown> when ts
// is unset.
func Age(ts *timestamppb.Timestamp, now time.Time) string {
	if ts == nil || (ts.GetSeconds() == 0 && ts.GetNanos() == 0) {
		return "<unknown>"
	}
	return HumanDuration(now.Sub(ts.AsTime()))
}

// HumanDuration formats d the way kubectl shows ages: 45s, 5m10s, 12m, 3h,
// 5h30m, 2d, 3d4h, 400d, 2y10d, 9y. The precision drops as d grows.
func HumanDuration(d time.Duration) string {
	secs := int64(d / time.Second)
	switch {
	case secs < -1:
		return "<invalid>"
	case secs < 0:
		return "0s"
	case secs < 120:
		return fmt.Sprintf("%ds", secs)
	}
	mins := int64(d / time.Minute)
	switch {
	case mins < 10:
		if s := secs % 60; s != 0 {
			return fmt.Sprintf("%dm%ds", mins, s)
		}
		return fmt.Sprintf("%dm", mins)
	case mins < 3*60:
		return fmt.Sprintf("%dm", mins)
	}
	hours := int64(d / time.Hour)
	switch {
	case hours < 8:
		if m := mins % 60; m != 0 {
			return fmt.Sprintf("%dh%dm", hours, m)
		}
		return fmt.Sprintf("%dh", hours)
	case hours < 48:
		return fmt.Sprintf("%dh", hours)
	case hours < 8*24:
		if h := hours % 24; h != 0 {
			return fmt.Sprintf("%dd%dh", hours/24, h)
		}
		return fmt.Sprintf("%dd", hours/24)
	case hours < 2*365*24:
		return fmt.Sprintf("%dd", hours/24)
	case hours < 8*365*24:
		years := hours / 24 / 365
		if days := hours / 24 % 365; days != 0 {
			return fmt.Sprintf("%dy%dd", years, days)
		}
		return fmt.Sprintf("%dy", years)
	}
	return fmt.Sprintf("%dy", hours/24/365)
}

// --- json / yaml -------------------------------------------------------------

// ManifestValue renders a Service or Endpoints as a Kubernetes-style
// manifest tree: apiVersion and kind first, then the protojson fields.
func manifestValue(msg proto.Message) (*value, error) {
	kind := KindService
	if _, ok := msg.(*portalv1.Endpoints); ok {
		kind = KindEndpoints
	}
	data, err := protojson.Marshal(msg)
	if err != nil {
		return nil, err
	}
	body, err := parseJSONValue(data)
	if err != nil {
		return nil, err
	}
	out := newMap(0)
	out.set("apiVersion", &value{kind: vString, str: "v1"})
	out.set("kind", &value{kind: vString, str: kind})
	for i, k := range body.keys {
		out.set(k, body.vals[i])
	}
	// Kubernetes writes a numeric targetPort as a number.
	for _, p := range out.get("spec").get("ports").listItems() {
		if tp := p.get("targetPort"); tp != nil && tp.kind == vString {
			if n, err := strconv.ParseInt(tp.str, 10, 32); err == nil && strconv.FormatInt(n, 10) == tp.str {
				tp.kind = vInt
			}
		}
	}
	return out, nil
}

func (v *value) listItems() []*value {
	if v == nil || v.kind != vList {
		return nil
	}
	return v.vals
}

// ManifestJSON renders a Service or Endpoints as indented Kubernetes-style
// JSON (with apiVersion and kind), the way `get -o json` prints it.
func ManifestJSON(msg proto.Message) ([]byte, error) {
	var buf bytes.Buffer
	err := WriteObjects(&buf, OutputJSON, []proto.Message{msg}, false)
	return buf.Bytes(), err
}

// ManifestYAML renders a Service or Endpoints as Kubernetes-style YAML (with
// apiVersion and kind), the way `get -o yaml` prints it; apply -f reads it.
func ManifestYAML(msg proto.Message) ([]byte, error) {
	var buf bytes.Buffer
	err := WriteObjects(&buf, OutputYAML, []proto.Message{msg}, false)
	return buf.Bytes(), err
}

// WriteObjects writes Services and Endpoints as JSON or YAML (format
// OutputJSON or OutputYAML): the single object when asList is false and
// there is exactly one, else a kubectl-like List.
func WriteObjects(w io.Writer, format string, msgs []proto.Message, asList bool) error {
	var root *value
	if !asList && len(msgs) == 1 {
		v, err := manifestValue(msgs[0])
		if err != nil {
			return err
		}
		root = v
	} else {
		items := &value{kind: vList}
		for _, m := range msgs {
			v, err := manifestValue(m)
			if err != nil {
				return err
			}
			items.vals = append(items.vals, v)
		}
		root = newMap(0)
		root.set("apiVersion", &value{kind: vString, str: "v1"})
		root.set("kind", &value{kind: vString, str: KindList})
		root.set("items", items)
	}
	switch format {
	case OutputJSON:
		var compact, out bytes.Buffer
		root.writeJSON(&compact)
		if err := json.Indent(&out, compact.Bytes(), "", "    "); err != nil {
			return err
		}
		out.WriteByte('\n')
		_, err := w.Write(escapeTypographicQuotes(out.Bytes()))
		return err
	case OutputYAML:
		var out bytes.Buffer
		enc := yaml.NewEncoder(&out)
		enc.SetIndent(2)
		if err := enc.Encode(root.yamlNode()); err != nil {
			return err
		}
		if err := enc.Close(); err != nil {
			return err
		}
		_, err := w.Write(escapeTypographicQuotes(out.Bytes()))
		return err
	}
	return fmt.Errorf("unknown output format %q", format)
}

// --- describe ----------------------------------------------------------------

// DescribeService writes a kubectl-describe-like view of svc; ep (may be
// nil) supplies the Endpoints lines.
func DescribeService(w io.Writer, svc *portalv1.Service, ep *portalv1.Endpoints, now time.Time) error {
	if now.IsZero() {
		now = time.Now()
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	md, spec := svc.GetMetadata(), svc.GetSpec()
	line := func(label, format string, args ...any) {
		fmt.Fprintf(tw, "%s:\t%s\n", label, fmt.Sprintf(format, args...))
	}
	multi := func(label string, m map[string]string) {
		if len(m) == 0 {
			line(label, "<none>")
			return
		}
		for i, kv := range strings.Split(FormatSelector(m), ",") {
			if i == 0 {
				line(label, "%s", kv)
			} else {
				fmt.Fprintf(tw, "\t%s\n", kv)
			}
		}
	}
	line("Name", "%s", md.GetName())
	line("Namespace", "%s", namespaceOf(md))
	multi("Labels", md.GetLabels())
	multi("Annotations", md.GetAnnotations())
	line("Selector", "%s", FormatSelector(spec.GetSelector()))
	typ := ServiceType(svc)
	line("Type", "%s", typ)
	if typ == "ExternalName" {
		line("External Name", "%s", spec.GetExternalName())
	} else {
		ip := spec.GetClusterIp()
		if ip == "" {
			ip = "<none>"
		}
		line("IP", "%s", ip)
	}
	if len(spec.GetExternalIps()) > 0 {
		line("External IPs", "%s", strings.Join(spec.GetExternalIps(), ","))
	}
	if spec.GetLoadBalancerIp() != "" {
		line("LoadBalancer IP", "%s", spec.GetLoadBalancerIp())
	}
	var ingress []string
	for _, in := range svc.GetStatus().GetLoadBalancer().GetIngress() {
		if in.GetIp() != "" {
			ingress = append(ingress, in.GetIp())
		} else if in.GetHostname() != "" {
			ingress = append(ingress, in.GetHostname())
		}
	}
	if len(ingress) > 0 {
		line("LoadBalancer Ingress", "%s", strings.Join(ingress, ", "))
	} else if typ == "LoadBalancer" {
		line("LoadBalancer Ingress", "<pending>")
	}
	for _, p := range spec.GetPorts() {
		name := p.GetName()
		if name == "" {
			name = "<unset>"
		}
		proto := protocolOf(p.GetProtocol())
		line("Port", "%s\t%d/%s", name, p.GetPort(), proto)
		tp := p.GetTargetPort()
		if tp == "" {
			tp = strconv.Itoa(int(p.GetPort()))
		}
		line("TargetPort", "%s/%s", tp, proto)
		if p.GetNodePort() != 0 {
			line("NodePort", "%s\t%d/%s", name, p.GetNodePort(), proto)
		}
		line("Endpoints", "%s", FormatEndpoints(ep, map[string]bool{p.GetName(): true}))
	}
	affinity := spec.GetSessionAffinity()
	if affinity == "" {
		affinity = "None"
	}
	line("Session Affinity", "%s", affinity)
	if affinity == "ClientIP" {
		timeout := spec.GetSessionAffinityConfig().GetClientIp().GetTimeoutSeconds()
		if timeout == 0 {
			timeout = 10800
		}
		line("Session Affinity Timeout", "%ds", timeout)
	}
	if typ == "NodePort" || typ == "LoadBalancer" || spec.GetExternalTrafficPolicy() != "" {
		policy := spec.GetExternalTrafficPolicy()
		if policy == "" {
			policy = "Cluster"
		}
		line("External Traffic Policy", "%s", policy)
	}
	if spec.GetHealthCheckNodePort() != 0 {
		line("HealthCheck NodePort", "%d", spec.GetHealthCheckNodePort())
	}
	if len(spec.GetLoadBalancerSourceRanges()) > 0 {
		line("LoadBalancer Source Ranges", "%s", strings.Join(spec.GetLoadBalancerSourceRanges(), ","))
	}
	if spec.GetPublishNotReadyAddresses() {
		line("Publish Not Ready Addresses", "true")
	}
	if spec.GetScheduler() != "" {
		line("Scheduler", "%s", spec.GetScheduler())
	}
	if rv := md.GetResourceVersion(); rv != 0 {
		line("Resource Version", "%d", rv)
	}
	if ts := md.GetCreationTimestamp(); ts != nil {
		line("Created", "%s (%s ago)", ts.AsTime().UTC().Format(time.RFC1123Z), Age(ts, now))
	}
	return tw.Flush()
}

// PrintServiceHealth renders a health check and every node's view of the
// endpoints, as describe shows them.
func PrintServiceHealth(w io.Writer, hc *portalv1.HealthCheck, h *portalv1.GetServiceHealthResponse, now time.Time) {
	target := hc.GetType()
	if p := hc.GetPort(); p != 0 {
		target += fmt.Sprintf(" port %d", p)
	}
	if hc.GetType() == "HTTP" || hc.GetType() == "HTTPS" {
		target += fmt.Sprintf(" %s (codes %s)", hc.GetPath(), hc.GetExpectedCodes())
	}
	fmt.Fprintf(w, "Health Check:             %s every %dms, timeout %dms, healthy after %d, unhealthy after %d, all unhealthy: %s\n",
		target, hc.GetIntervalMillis(), hc.GetTimeoutMillis(), hc.GetHealthyThreshold(), hc.GetUnhealthyThreshold(), hc.GetAllUnhealthy())
	if len(h.GetEndpoints()) == 0 {
		fmt.Fprintln(w, "Endpoint Health:          <none>")
	} else {
		fmt.Fprintln(w, "Endpoint Health:")
		tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
		fmt.Fprintln(tw, "  ENDPOINT\tNODE\tSTATE\tOK\tFAILED\tLATENCY\tLAST PROBE\tLAST ERROR")
		for _, e := range h.GetEndpoints() {
			last := "<never>"
			if e.GetLastProbeTime() != nil {
				last = HumanDuration(now.Sub(e.GetLastProbeTime().AsTime())) + " ago"
			}
			errText := e.GetLastError()
			if errText == "" {
				errText = "-"
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%d\t%d\t%.1fms\t%s\t%s\n", net.JoinHostPort(e.GetIp(), strconv.Itoa(int(e.GetPort()))),
				e.GetNode(), e.GetState(), e.GetConsecutiveSuccesses(), e.GetConsecutiveFailures(), e.GetLatencyMillis(), last, errText)
		}
		tw.Flush()
	}
	for _, u := range h.GetUnreachableNodes() {
		fmt.Fprintf(w, "  (not answered: %s)\n", u)
	}
}
