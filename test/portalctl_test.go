package test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/portal-lb/portal/test/harness"
)

const readmeManifest = `apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  type: LoadBalancer
  selector: {app: web}
  ports:
  - name: http
    port: 80
    targetPort: 8080
---
apiVersion: v1
kind: Endpoints
metadata:
  name: web
subsets:
- addresses: [{ip: 127.0.0.1}]
  ports: [{name: http, port: 8080}]
`

// TestPortalctlAgainstPortald drives a real portald with the portalctl
// binary, as the README does.
func TestPortalctlAgainstPortald(t *testing.T) {
	portald, portalctl := harness.Binaries(t)
	p := harness.StartPortald(t, portald, harness.Options{Args: []string{"--dataplane", "none"}})
	dir := t.TempDir()
	run := func(wantOK bool, args ...string) string {
		t.Helper()
		cmd := exec.Command(portalctl, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "PORTAL_SERVER="+p.GRPC)
		out, err := cmd.CombinedOutput()
		if (err == nil) != wantOK {
			t.Fatalf("portalctl %v: err=%v\n%s", args, err, out)
		}
		return string(out)
	}
	file := filepath.Join(dir, "web.yaml")
	os.WriteFile(file, []byte(readmeManifest), 0o644)

	if out := run(true, "apply", "-f", file); out != "service/web created\nendpoints/web created\n" {
		t.Fatalf("apply: %q", out)
	}
	if out := run(true, "apply", "-f", file); out != "service/web unchanged\nendpoints/web unchanged\n" {
		t.Fatalf("re-apply: %q", out)
	}
	table := run(true, "get", "services")
	if !regexp.MustCompile(`(?m)^NAME\s+TYPE\s+CLUSTER-IP\s+EXTERNAL-IP\s+PORT\(S\)\s+AGE\n` +
		`web\s+LoadBalancer\s+127\.96\.\d+\.\d+\s+127\.97\.\d+\.\d+\s+80:3\d{4}/TCP\s+\d+s\n$`).MatchString(table) {
		t.Fatalf("get services:\n%s", table)
	}
	if out := run(true, "get", "endpoints", "web"); !strings.Contains(out, "127.0.0.1:8080") {
		t.Fatalf("get endpoints: %s", out)
	}
	if out := run(true, "describe", "service", "web"); !strings.Contains(out, "LoadBalancer Ingress:") || !strings.Contains(out, "127.0.0.1:8080") {
		t.Fatalf("describe: %s", out)
	}
	// get -o yaml round-trips through apply.
	dump := filepath.Join(dir, "dump.yaml")
	os.WriteFile(dump, []byte(run(true, "get", "svc", "web", "-o", "yaml")), 0o644)
	if out := run(true, "apply", "-f", dump); out != "service/web unchanged\n" {
		t.Fatalf("apply of get -o yaml: %q", out)
	}
	// Field violations are printed one per line, with a non-zero exit.
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("apiVersion: v1\nkind: Service\nmetadata:\n  name: api\nspec:\n  ports:\n  - {name: a, port: 80, targetPort: \"Bad Name\"}\n  - {port: 81}\n"), 0o644)
	out := run(false, "apply", "-f", bad)
	for _, want := range []string{"InvalidArgument", "\n  spec.ports[0].targetPort: ", "\n  spec.ports[1].name: "} {
		if !strings.Contains(out, want) {
			t.Fatalf("violations output lacks %q:\n%s", want, out)
		}
	}
	// Typographic quotes are named with their line.
	os.WriteFile(bad, []byte("apiVersion: v1\nkind: Service\nmetadata:\n  name: “api”\n"), 0o644)
	if out := run(false, "apply", "-f", bad); !strings.Contains(out, "bad.yaml:4") || !strings.Contains(out, "typographic") {
		t.Fatalf("typographic quotes: %s", out)
	}
	if out := run(true, "delete", "-f", file); !strings.Contains(out, "service/web deleted") || !strings.Contains(out, "endpoints/web deleted") {
		t.Fatalf("delete -f: %s", out)
	}
	if out := run(true, "get", "services"); strings.Contains(out, "web") {
		t.Fatalf("after delete: %s", out)
	}
	p.Stop(t)
}
