// Package dataplane is the node side of portal: the desired-state model
// every backend programs (Desired), its computation from the replicated
// Services and Endpoints (Build), the node agent that watches them, and the
// reconciler that calls a backend's Sync. Backends live in sub-packages
// (userspace, later iptables and ipvs). This package imports proto only.
package dataplane

import (
	"context"
	"fmt"
	"net/netip"
	"time"
)

// Interface is implemented by every dataplane backend. Sync makes the
// dataplane match desired (level-triggered: it may be called with the same
// state again); Cleanup removes everything the backend programmed.
type Interface interface {
	Sync(ctx context.Context, desired *Desired) error
	Cleanup(ctx context.Context) error
}

// Frontend kinds.
const (
	KindClusterIP    = "ClusterIP"
	KindNodePort     = "NodePort"
	KindExternalIP   = "ExternalIP"
	KindLoadBalancer = "LoadBalancer"
)

// Desired is what one node must serve: one virtual server per
// (frontend IP, port, protocol), sorted by Key.
type Desired struct {
	Servers []*VirtualServer
	// Revision is the state revision it was computed from.
	Revision uint64
}

// VirtualServer is one frontend and the backends behind it.
type VirtualServer struct {
	// Service is "namespace/name"; Port is the service port's name.
	Service  string
	Port     string
	Kind     string
	Protocol string // TCP, UDP or SCTP
	Frontend netip.AddrPort
	// Scheduler is the balancing algorithm (rr when empty).
	Scheduler string
	// Affinity is the ClientIP session affinity timeout; 0 means none.
	Affinity time.Duration
	// SourceRanges restricts clients of LoadBalancer frontends; empty
	// allows every source. Other kinds never carry ranges.
	SourceRanges []netip.Prefix
	// Local is externalTrafficPolicy Local on an external frontend:
	// preserve the client address.
	Local bool
	// HealthCheckNodePort is the service's healthCheckNodePort (on external
	// frontends of LoadBalancer services with externalTrafficPolicy Local).
	HealthCheckNodePort uint16
	Backends            []Backend
}

// Backend is one ready endpoint.
type Backend struct {
	Addr     netip.AddrPort
	NodeName string
}

// Key identifies a virtual server: protocol and frontend.
func (v *VirtualServer) Key() string {
	return v.Protocol + "/" + v.Frontend.String()
}

// Name is a readable label: namespace/name:port.
func (v *VirtualServer) Name() string {
	if v.Port == "" {
		return v.Service
	}
	return fmt.Sprintf("%s:%s", v.Service, v.Port)
}

// Allowed reports whether a client address may use this virtual server.
func (v *VirtualServer) Allowed(client netip.Addr) bool {
	if len(v.SourceRanges) == 0 {
		return true
	}
	client = client.Unmap()
	for _, p := range v.SourceRanges {
		if p.Contains(client) {
			return true
		}
	}
	return false
}
