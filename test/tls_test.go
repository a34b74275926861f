package test

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/portal-lb/portal/test/harness"
)

// TestTLSRequiredAndRefused: a TLS cluster with client authentication
// admits a node and a client holding certificates of its CA, and refuses
// plaintext clients, clients without a certificate, and a node whose
// certificate another CA signed.
func TestTLSRequiredAndRefused(t *testing.T) {
	bin, ctl := harness.Binaries(t)
	ca, rogue := harness.NewCA(t, "portal-ca"), harness.NewCA(t, "rogue-ca")
	tlsArgs := func(c *harness.CA, name string) []string {
		cert, key := c.Issue(t, name, "127.0.0.1")
		return []string{"--tls-cert", cert, "--tls-key", key, "--tls-ca", c.File, "--tls-client-auth"}
	}
	ms := make([]*member, 3)
	for i := range ms {
		ms[i] = &member{id: []string{"gw-1", "gw-2", "gw-3"}[i], dir: t.TempDir(), grpc: harness.FreeAddr(t), http: harness.FreeAddr(t), raft: harness.FreeAddr(t)}
	}
	ms[0].start(t, bin, append(tlsArgs(ca, "gw-1"), "--bootstrap")...)
	ms[1].start(t, bin, append(tlsArgs(ca, "gw-2"), "--join", ms[0].grpc)...)

	clientCert, clientKey := ca.Issue(t, "admin")
	run := func(args ...string) (string, error) {
		cmd := exec.Command(ctl, append([]string{"--server", ms[1].grpc, "--timeout", "3s"}, args...)...)
		cmd.Env = os.Environ()
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := run("--tls-ca", ca.File, "--tls-cert", clientCert, "--tls-key", clientKey, "cluster", "status")
	if err != nil || !strings.Contains(out, "gw-1") || !strings.Contains(out, "gw-2") {
		t.Fatalf("TLS client: %v\n%s", err, out)
	}
	// A write through the follower reaches the leader (forwarding over TLS)
	// and comes back to the follower (raft over mutual TLS).
	manifest := t.TempDir() + "/svc.yaml"
	os.WriteFile(manifest, []byte("apiVersion: v1\nkind: Service\nmetadata:\n  name: secure\nspec:\n  ports: [{port: 443}]\n"), 0o644)
	if out, err := run("--tls-ca", ca.File, "--tls-cert", clientCert, "--tls-key", clientKey, "apply", "-f", manifest); err != nil {
		t.Fatalf("apply over TLS: %v\n%s", err, out)
	}
	harness.Eventually(t, 5*time.Second, "replicated to the follower", func() error {
		out, err := run("--tls-ca", ca.File, "--tls-cert", clientCert, "--tls-key", clientKey, "get", "svc", "secure")
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
	if out, err := run("get", "services"); err == nil {
		t.Fatalf("a plaintext client was served:\n%s", out)
	}
	if out, err := run("--tls-ca", ca.File, "get", "services"); err == nil {
		t.Fatalf("a client without a certificate was served:\n%s", out)
	}

	// A node with a certificate from another CA cannot join.
	args := append([]string{"--node-id", "gw-3", "--data-dir", ms[2].dir, "--grpc-addr", ms[2].grpc, "--http-addr", ms[2].http,
		"--raft-addr", ms[2].raft, "--dataplane", "none", "--join", ms[0].grpc}, tlsArgs(rogue, "gw-3")...)
	cmd := exec.Command(bin, args...)
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	time.Sleep(3 * time.Second)
	out, err = run("--tls-ca", ca.File, "--tls-cert", clientCert, "--tls-key", clientKey, "cluster", "status")
	if err != nil || strings.Contains(out, "gw-3") {
		t.Fatalf("the rogue node joined (or status failed: %v):\n%s", err, out)
	}
	for _, m := range ms[:2] {
		m.p.Stop(t)
	}
}
