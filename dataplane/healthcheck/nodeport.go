package healthcheck

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// NodePortEntry is what a healthCheckNodePort reports: the service and how
// many of its endpoints this node serves (local and healthy).
type NodePortEntry struct {
	Namespace, Name string
	LocalEndpoints  int
}

// NodePortServer serves Kubernetes' healthCheckNodePort protocol for
// LoadBalancer services with externalTrafficPolicy Local: GET on the port
// answers 200 with the count of local healthy endpoints, or 503 when there
// are none, so an upstream load balancer can use portal nodes as targets.
type NodePortServer struct {
	log *slog.Logger
	mu  sync.Mutex
	srv map[netip.AddrPort]*hcListener
}

type hcListener struct {
	srv   *http.Server
	entry atomic.Pointer[NodePortEntry]
}

// NewNodePortServer returns a server with no ports.
func NewNodePortServer(log *slog.Logger) *NodePortServer {
	return &NodePortServer{log: log, srv: map[netip.AddrPort]*hcListener{}}
}

// Update opens, closes and refreshes the listeners to match want.
func (s *NodePortServer) Update(want map[netip.AddrPort]NodePortEntry) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for addr, l := range s.srv {
		if _, ok := want[addr]; !ok {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_ = l.srv.Shutdown(ctx)
			cancel()
			delete(s.srv, addr)
		}
	}
	var errs []error
	for addr, e := range want {
		l := s.srv[addr]
		if l == nil {
			ln, err := net.Listen("tcp", addr.String())
			if err != nil {
				errs = append(errs, fmt.Errorf("healthCheckNodePort %s: %w", addr, err))
				continue
			}
			l = &hcListener{}
			l.srv = &http.Server{Handler: l, ReadHeaderTimeout: 5 * time.Second}
			go l.srv.Serve(ln)
			s.srv[addr] = l
		}
		entry := e
		l.entry.Store(&entry)
	}
	return errors.Join(errs...)
}

// Close stops every listener.
func (s *NodePortServer) Close() { _ = s.Update(nil) }

func (l *hcListener) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	e := l.entry.Load()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if e.LocalEndpoints == 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(map[string]any{
		"service":        map[string]string{"namespace": e.Namespace, "name": e.Name},
		"localEndpoints": e.LocalEndpoints,
	})
}
