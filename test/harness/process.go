// Package harness holds the helpers shared by portal's end-to-end suites:
// building the binaries once, running real portald processes, and (later)
// network-namespace topologies.
package harness

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// Binaries builds portald and portalctl once per test process and returns
// their paths.
func Binaries(t testing.TB) (portald, portalctl string) {
	t.Helper()
	buildOnce.Do(func() {
		root, err := moduleRoot()
		if err != nil {
			buildErr = err
			return
		}
		binDir, err = os.MkdirTemp("", "portal-e2e-bin-")
		if err != nil {
			buildErr = err
			return
		}
		cmd := exec.Command("go", "build", "-o", binDir+"/", "./cmd/portald", "./cmd/portalctl")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(binDir, "portald"), filepath.Join(binDir, "portalctl")
}

// Cleanup removes the built binaries; call it from TestMain.
func Cleanup() {
	if binDir != "" {
		os.RemoveAll(binDir)
	}
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", err
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("not inside the portal module")
	}
	return filepath.Dir(mod), nil
}

// FreeAddr returns a loopback address with a port that was free just now.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Portald is a running portald process.
type Portald struct {
	Cmd  *exec.Cmd
	GRPC string // API address
	HTTP string // HTTP address
	Dir  string // working directory
	log  *syncBuffer
	done chan struct{}
	err  error
	host *Host
}

// Options for StartPortald.
type Options struct {
	Dir  string   // working directory (default: a new temp dir)
	Args []string // extra arguments
	Env  []string // extra environment
	// GRPC and HTTP are the addresses to wait on; when empty, free ports are
	// chosen and passed as flags (with a free raft port).
	GRPC, HTTP string
	// Host runs portald inside that network namespace (GRPC and HTTP must
	// then be set: they are addresses inside it).
	Host *Host
}

// StartPortald starts portald and waits until /readyz answers 200.
func StartPortald(t testing.TB, bin string, o Options) *Portald {
	t.Helper()
	if o.Dir == "" {
		o.Dir = t.TempDir()
	}
	args := append([]string(nil), o.Args...)
	if o.GRPC == "" && o.HTTP == "" {
		o.GRPC, o.HTTP = FreeAddr(t), FreeAddr(t)
		args = append(args, "--grpc-addr", o.GRPC, "--http-addr", o.HTTP, "--raft-addr", FreeAddr(t))
	}
	p := &Portald{GRPC: o.GRPC, HTTP: o.HTTP, Dir: o.Dir, log: &syncBuffer{}, done: make(chan struct{})}
	if o.Host != nil {
		p.Cmd = o.Host.Command(bin, args...)
		p.host = o.Host
	} else {
		p.Cmd = exec.Command(bin, args...)
	}
	p.Cmd.Dir = o.Dir
	p.Cmd.Env = append(os.Environ(), o.Env...)
	p.Cmd.Stdout, p.Cmd.Stderr = p.log, p.log
	if err := p.Cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.Cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = p.Cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("portald log:\n%s", p.log.String())
		}
	})
	client := p.HTTPClient()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := client.Get("http://" + p.HTTP + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		select {
		case <-p.done:
			t.Fatalf("portald exited before ready: %v\n%s", p.err, p.log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("portald not ready after 20s:\n%s", p.log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// HTTPClient reaches portald's HTTP address (from inside its namespace).
func (p *Portald) HTTPClient() *http.Client {
	if p.host == nil {
		return http.DefaultClient
	}
	return &http.Client{Transport: &http.Transport{DialContext: p.host.DialContext}, Timeout: 5 * time.Second}
}

// Dialer dials portald's addresses (from inside its namespace), for gRPC.
func (p *Portald) Dialer() func(context.Context, string) (net.Conn, error) {
	return func(ctx context.Context, addr string) (net.Conn, error) {
		if p.host == nil {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		}
		return p.host.DialContext(ctx, "tcp", addr)
	}
}

// Log returns what portald wrote so far.
func (p *Portald) Log() string { return p.log.String() }

// Stop sends SIGTERM and waits for a clean exit.
func (p *Portald) Stop(t testing.TB) {
	t.Helper()
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		if p.err != nil {
			t.Fatalf("portald exited with %v after SIGTERM:\n%s", p.err, p.log.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("portald did not stop within 15s of SIGTERM:\n%s", p.log.String())
	}
}

// Kill stops portald with SIGKILL (a crash).
func (p *Portald) Kill() {
	_ = p.Cmd.Process.Kill()
	<-p.done
}
