// Package cluster is portal's replicated store: hashicorp/raft with a
// boltdb log and file snapshots, an FSM that applies typed commands to an
// in-memory state, deterministic allocators, and a watch hub.
package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	raftv1 "github.com/portal-lb/portal/proto/portal/raft/v1"
	portalv1 "github.com/portal-lb/portal/proto/portal/v1"
)

// Config configures a Store.
type Config struct {
	NodeID   string
	DataDir  string
	RaftAddr string // host:port to bind and advertise for raft traffic
	GRPCAddr string // this node's API address, reported by Cluster
	// Addresses and Labels go into this node's record (NodePort addresses).
	Addresses []string
	Labels    map[string]string
	// Bootstrap makes a node whose data directory holds no raft state start
	// a new single-voter cluster. A node that will join one leaves it off.
	Bootstrap bool
	// Cluster is the allocation configuration this node wants; the leader
	// replicates it (EnsureConfig) when the replicated one differs.
	Cluster *portalv1.ClusterConfig

	// Raft timing; zero values take the defaults below.
	HeartbeatTimeout  time.Duration
	ElectionTimeout   time.Duration
	SnapshotThreshold uint64
	SnapshotInterval  time.Duration
	// TrailingLogs is how many entries stay after a snapshot (a follower
	// further behind is sent the snapshot).
	TrailingLogs uint64
	// RaftTLS and RaftDialTLS, when set, run raft traffic over mutual TLS
	// (server side: require and verify client certificates of the cluster
	// CA; dial side: present this node's certificate, verify the peer's).
	RaftTLS     *tls.Config
	RaftDialTLS *tls.Config
	// RaftStream, when set, carries raft traffic instead of TCP (tests use it
	// to inject partitions).
	RaftStream raft.StreamLayer
	// RaftLog receives raft's own log lines (warnings and errors); nil: stderr.
	RaftLog io.Writer
	// WatchHistory is how many events watchers can resume from (default 16384).
	WatchHistory int

	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Store is one node's view of the replicated state.
type Store struct {
	cfg       Config
	raft      *raft.Raft
	fsm       *fsm
	logStore  *raftboltdb.BoltStore
	transport *raft.NetworkTransport
	log       *slog.Logger
	applyDur  prometheus.Histogram

	obsCh     chan raft.Observation
	observer  *raft.Observer
	healthMu  sync.Mutex
	unhealthy map[raft.ServerID]time.Time // peers failing heartbeats (leader's view), since
}

const applyTimeout = 10 * time.Second

// Open starts the node's raft instance over the data directory, and
// bootstraps a single-node cluster when the directory holds no raft state.
func Open(cfg Config) (*Store, error) {
	if cfg.NodeID == "" || cfg.DataDir == "" || cfg.RaftAddr == "" {
		return nil, errors.New("cluster: NodeID, DataDir and RaftAddr are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.WatchHistory <= 0 {
		cfg.WatchHistory = 16384
	}
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("cluster: data dir: %w", err)
	}
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeID)
	rc.HeartbeatTimeout = orDefault(cfg.HeartbeatTimeout, 500*time.Millisecond)
	rc.ElectionTimeout = orDefault(cfg.ElectionTimeout, 500*time.Millisecond)
	rc.LeaderLeaseTimeout = rc.HeartbeatTimeout / 2
	if cfg.SnapshotThreshold > 0 {
		rc.SnapshotThreshold = cfg.SnapshotThreshold
	}
	rc.SnapshotInterval = orDefault(cfg.SnapshotInterval, rc.SnapshotInterval)
	if cfg.TrailingLogs > 0 {
		rc.TrailingLogs = cfg.TrailingLogs
	}
	if cfg.RaftLog == nil {
		cfg.RaftLog = os.Stderr
	}
	rc.Logger = hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.Warn, Output: cfg.RaftLog})
	rc.NoSnapshotRestoreOnStart = false
	// Let concurrent proposals queue up to MaxAppendEntries deep, so that the
	// leader writes (and fsyncs) them as one batch.
	rc.BatchApplyCh = true

	s := &Store{cfg: cfg, fsm: newFSM(cfg.WatchHistory), log: cfg.Logger}
	var err error
	s.logStore, err = raftboltdb.New(raftboltdb.Options{Path: filepath.Join(cfg.DataDir, "raft.db")})
	if err != nil {
		return nil, fmt.Errorf("cluster: open raft log: %w", err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, 2, rc.Logger)
	if err != nil {
		s.logStore.Close()
		return nil, fmt.Errorf("cluster: snapshot store: %w", err)
	}
	addr, err := net.ResolveTCPAddr("tcp", cfg.RaftAddr)
	if err != nil {
		s.logStore.Close()
		return nil, fmt.Errorf("cluster: raft address: %w", err)
	}
	if cfg.RaftStream != nil {
		s.transport = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
			Stream: cfg.RaftStream, MaxPool: 3, Timeout: 10 * time.Second, Logger: rc.Logger,
		})
	} else if cfg.RaftTLS != nil {
		var stream *tlsStream
		stream, err = newTLSStream(cfg.RaftAddr, cfg.RaftTLS, cfg.RaftDialTLS)
		if err == nil {
			s.transport = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
				Stream: stream, MaxPool: 3, Timeout: 10 * time.Second, Logger: rc.Logger,
			})
		}
	} else {
		var advertise net.Addr = addr
		if addr.Port == 0 {
			advertise = nil // advertise the port the listener got
		}
		s.transport, err = raft.NewTCPTransportWithLogger(cfg.RaftAddr, advertise, 3, 10*time.Second, rc.Logger)
	}
	if err != nil {
		s.logStore.Close()
		return nil, fmt.Errorf("cluster: raft transport: %w", err)
	}
	existing, err := raft.HasExistingState(s.logStore, s.logStore, snaps)
	if err != nil {
		s.closeStores()
		return nil, err
	}
	s.raft, err = raft.NewRaft(rc, s.fsm, s.logStore, s.logStore, snaps, s.transport)
	if err != nil {
		s.closeStores()
		return nil, fmt.Errorf("cluster: start raft: %w", err)
	}
	s.unhealthy = map[raft.ServerID]time.Time{}
	s.obsCh = make(chan raft.Observation, 64)
	s.observer = raft.NewObserver(s.obsCh, false, func(o *raft.Observation) bool {
		switch o.Data.(type) {
		case raft.FailedHeartbeatObservation, raft.ResumedHeartbeatObservation:
			return true
		}
		return false
	})
	s.raft.RegisterObserver(s.observer)
	go s.observe()
	if !existing && cfg.Bootstrap {
		boot := raft.Configuration{Servers: []raft.Server{{ID: rc.LocalID, Address: s.transport.LocalAddr()}}}
		if err := s.raft.BootstrapCluster(boot).Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			s.Close()
			return nil, fmt.Errorf("cluster: bootstrap: %w", err)
		}
	}
	s.registerMetrics(cfg.Registerer)
	return s, nil
}

// observe tracks which peers fail the leader's heartbeats.
func (s *Store) observe() {
	for o := range s.obsCh {
		s.healthMu.Lock()
		switch d := o.Data.(type) {
		case raft.FailedHeartbeatObservation:
			if _, ok := s.unhealthy[d.PeerID]; !ok {
				s.unhealthy[d.PeerID] = d.LastContact
			}
		case raft.ResumedHeartbeatObservation:
			delete(s.unhealthy, d.PeerID)
		}
		s.healthMu.Unlock()
	}
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

func (s *Store) closeStores() {
	if s.transport != nil {
		s.transport.Close()
	}
	if s.logStore != nil {
		s.logStore.Close()
	}
}

// Close shuts raft down and closes the log.
func (s *Store) Close() error {
	err := s.raft.Shutdown().Error()
	if s.observer != nil {
		s.raft.DeregisterObserver(s.observer)
		close(s.obsCh)
	}
	s.closeStores()
	return err
}

// RaftAddr is the address raft listens on (useful with port 0).
func (s *Store) RaftAddr() string { return string(s.transport.LocalAddr()) }

func (s *Store) registerMetrics(r prometheus.Registerer) {
	s.applyDur = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "portal_raft_apply_duration_seconds",
		Help:    "Time from proposing a write to raft until it is applied.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
	})
	if r == nil {
		return
	}
	r.MustRegister(s.applyDur,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "portal_objects", Help: "Objects in the replicated state.", ConstLabels: prometheus.Labels{"kind": "service"}},
			func() float64 { return float64(s.count(func(st *state) int { return len(st.services) })) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "portal_objects", Help: "Objects in the replicated state.", ConstLabels: prometheus.Labels{"kind": "endpoints"}},
			func() float64 { return float64(s.count(func(st *state) int { return len(st.endpoints) })) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "portal_state_revision", Help: "Revision (raft index) of the last applied change."},
			func() float64 { return float64(s.Revision()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "portal_raft_leader", Help: "1 when this node is the raft leader."},
			func() float64 {
				if s.raft.State() == raft.Leader {
					return 1
				}
				return 0
			}),
	)
}

func (s *Store) count(f func(*state) int) int {
	s.fsm.mu.RLock()
	defer s.fsm.mu.RUnlock()
	return f(s.fsm.st)
}

// Revision is the raft index of the last applied change.
func (s *Store) Revision() uint64 {
	s.fsm.mu.RLock()
	defer s.fsm.mu.RUnlock()
	return s.fsm.st.revision
}

// WaitLeader blocks until the cluster has a leader.
func (s *Store) WaitLeader(ctx context.Context) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		if addr, _ := s.raft.LeaderWithID(); addr != "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster: no leader: %w", ctx.Err())
		case <-t.C:
		}
	}
}

// IsLeader reports whether this node leads.
func (s *Store) IsLeader() bool { return s.raft.State() == raft.Leader }

// Ready reports nil when the store can serve writes: a leader exists and the
// allocation configuration is replicated.
func (s *Store) Ready() error {
	if addr, _ := s.raft.LeaderWithID(); addr == "" {
		return errors.New("no raft leader")
	}
	if s.Config().GetServiceCidr() == "" {
		return errors.New("allocation configuration not replicated yet")
	}
	if fut := s.raft.GetConfiguration(); fut.Error() == nil {
		member := false
		for _, srv := range fut.Configuration().Servers {
			member = member || string(srv.ID) == s.cfg.NodeID
		}
		if !member {
			return errors.New("this node is not a member of the cluster (removed? wipe its data directory and join again)")
		}
	}
	return nil
}

// Config returns the replicated allocation configuration.
func (s *Store) Config() *portalv1.ClusterConfig {
	s.fsm.mu.RLock()
	defer s.fsm.mu.RUnlock()
	return proto.Clone(s.fsm.st.config).(*portalv1.ClusterConfig)
}

// EnsureConfig replicates the configured allocation settings when they
// differ from the replicated ones (the leader does it at start).
func (s *Store) EnsureConfig(ctx context.Context) error {
	want := s.cfg.Cluster
	if want == nil || !s.IsLeader() {
		return nil
	}
	// Compare with the state only once the whole log is applied.
	if err := s.readBarrier(ctx, true); err != nil {
		return err
	}
	if proto.Equal(want, s.Config()) {
		return nil
	}
	res, err := s.propose(ctx, &raftv1.Command{Op: &raftv1.Command_SetConfig{SetConfig: &raftv1.SetConfig{Config: want}}})
	if err != nil {
		return err
	}
	s.log.Info("allocation configuration replicated", "serviceCIDR", want.GetServiceCidr(), "lbPool", want.GetLbPool(),
		"nodePorts", rangeText(want.GetNodePortMin(), want.GetNodePortMax()), "outcome", res.outcome)
	return nil
}

// propose replicates cmd and returns what the FSM made of it.
func (s *Store) propose(ctx context.Context, cmd *raftv1.Command) (*result, error) {
	cmd.Time = timestamppb.Now()
	cmd.Uid = uuid.NewString()
	data, err := proto.Marshal(cmd)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "encode command: %v", err)
	}
	timeout := applyTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	start := time.Now()
	fut := s.raft.Apply(data, timeout)
	done := make(chan error, 1)
	go func() { done <- fut.Error() }()
	select {
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	case err := <-done:
		if err != nil {
			return nil, raftError(err, s)
		}
	}
	s.applyDur.Observe(time.Since(start).Seconds())
	res, ok := fut.Response().(*result)
	if !ok {
		return nil, status.Error(codes.Internal, "unexpected apply response")
	}
	return res, res.err
}

// notLeaderText marks errors of writes refused before they were proposed.
const notLeaderText = "this node is not the raft leader"

func raftError(err error, s *Store) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		// Refused before anything was proposed: safe to retry anywhere.
		addr, id := s.raft.LeaderWithID()
		return status.Errorf(codes.Unavailable, "%s (leader: %q at %q): %v", notLeaderText, id, addr, err)
	case errors.Is(err, raft.ErrLeadershipLost):
		return status.Errorf(codes.Unavailable, "leadership was lost while the write was committing: it may or may not have been applied: %v", err)
	case errors.Is(err, raft.ErrEnqueueTimeout), errors.Is(err, raft.ErrRaftShutdown):
		return status.Errorf(codes.Unavailable, "raft: %v", err)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return status.FromContextError(err).Err()
	}
	return status.Errorf(codes.Internal, "raft: %v", err)
}

// CreateService creates a service; ALREADY_EXISTS when the name is taken.
func (s *Store) CreateService(ctx context.Context, svc *portalv1.Service) (*portalv1.Service, error) {
	res, err := s.propose(ctx, &raftv1.Command{Op: &raftv1.Command_CreateService{CreateService: &raftv1.CreateService{Service: svc}}})
	if err != nil {
		return nil, err
	}
	return proto.Clone(res.service).(*portalv1.Service), nil
}

// UpdateService replaces a service (upsert: create it when missing) and
// reports created, configured or unchanged.
func (s *Store) UpdateService(ctx context.Context, svc *portalv1.Service, upsert bool) (*portalv1.Service, string, error) {
	res, err := s.propose(ctx, &raftv1.Command{Op: &raftv1.Command_UpdateService{UpdateService: &raftv1.UpdateService{Service: svc, Upsert: upsert}}})
	if err != nil {
		return nil, "", err
	}
	return proto.Clone(res.service).(*portalv1.Service), res.outcome, nil
}

// DeleteService deletes a service and frees its allocations.
func (s *Store) DeleteService(ctx context.Context, ns, name string, rv uint64) (*portalv1.Service, error) {
	res, err := s.propose(ctx, &raftv1.Command{Op: &raftv1.Command_DeleteService{DeleteService: &raftv1.DeleteService{Namespace: ns, Name: name, ResourceVersion: rv}}})
	if err != nil {
		return nil, err
	}
	return proto.Clone(res.service).(*portalv1.Service), nil
}

// PutEndpoints creates or replaces endpoints.
func (s *Store) PutEndpoints(ctx context.Context, ep *portalv1.Endpoints) (*portalv1.Endpoints, string, error) {
	res, err := s.propose(ctx, &raftv1.Command{Op: &raftv1.Command_PutEndpoints{PutEndpoints: &raftv1.PutEndpoints{Endpoints: ep}}})
	if err != nil {
		return nil, "", err
	}
	return proto.Clone(res.endpoints).(*portalv1.Endpoints), res.outcome, nil
}

// DeleteEndpoints deletes endpoints.
func (s *Store) DeleteEndpoints(ctx context.Context, ns, name string, rv uint64) (*portalv1.Endpoints, error) {
	res, err := s.propose(ctx, &raftv1.Command{Op: &raftv1.Command_DeleteEndpoints{DeleteEndpoints: &raftv1.DeleteEndpoints{Namespace: ns, Name: name, ResourceVersion: rv}}})
	if err != nil {
		return nil, err
	}
	return proto.Clone(res.endpoints).(*portalv1.Endpoints), nil
}

// readBarrier makes the next read linearizable when consistent is set:
// it confirms leadership and waits until every committed entry is applied.
func (s *Store) readBarrier(ctx context.Context, consistent bool) error {
	if !consistent {
		return nil
	}
	timeout := applyTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	if err := waitFuture(ctx, s.raft.VerifyLeader()); err != nil {
		return raftError(err, s)
	}
	if err := waitFuture(ctx, s.raft.Barrier(timeout)); err != nil {
		return raftError(err, s)
	}
	return nil
}

// waitFuture waits for a raft future, or for ctx.
func waitFuture(ctx context.Context, f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case err := <-done:
		return err
	}
}

// GetService returns a copy of one service.
func (s *Store) GetService(ctx context.Context, ns, name string, consistent bool) (*portalv1.Service, error) {
	if err := s.readBarrier(ctx, consistent); err != nil {
		return nil, err
	}
	s.fsm.mu.RLock()
	defer s.fsm.mu.RUnlock()
	svc := s.fsm.st.services[objKey(ns, name)]
	if svc == nil {
		return nil, notFound("service", ns, name)
	}
	return proto.Clone(svc).(*portalv1.Service), nil
}

// ListServices returns the services of ns (every namespace when empty),
// sorted by namespace and name, and the state's revision.
func (s *Store) ListServices(ctx context.Context, ns string, consistent bool) ([]*portalv1.Service, uint64, error) {
	if err := s.readBarrier(ctx, consistent); err != nil {
		return nil, 0, err
	}
	s.fsm.mu.RLock()
	defer s.fsm.mu.RUnlock()
	out := listOf(s.fsm.st.services, ns, func(v *portalv1.Service) *portalv1.ObjectMeta { return v.GetMetadata() })
	for i := range out {
		out[i] = proto.Clone(out[i]).(*portalv1.Service)
	}
	return out, s.fsm.st.revision, nil
}

// GetEndpoints returns a copy of one Endpoints object.
func (s *Store) GetEndpoints(ctx context.Context, ns, name string, consistent bool) (*portalv1.Endpoints, error) {
	if err := s.readBarrier(ctx, consistent); err != nil {
		return nil, err
	}
	s.fsm.mu.RLock()
	defer s.fsm.mu.RUnlock()
	ep := s.fsm.st.endpoints[objKey(ns, name)]
	if ep == nil {
		return nil, notFound("endpoints", ns, name)
	}
	return proto.Clone(ep).(*portalv1.Endpoints), nil
}

// ListEndpoints returns the endpoints of ns (every namespace when empty).
func (s *Store) ListEndpoints(ctx context.Context, ns string, consistent bool) ([]*portalv1.Endpoints, uint64, error) {
	if err := s.readBarrier(ctx, consistent); err != nil {
		return nil, 0, err
	}
	s.fsm.mu.RLock()
	defer s.fsm.mu.RUnlock()
	out := listOf(s.fsm.st.endpoints, ns, func(v *portalv1.Endpoints) *portalv1.ObjectMeta { return v.GetMetadata() })
	for i := range out {
		out[i] = proto.Clone(out[i]).(*portalv1.Endpoints)
	}
	return out, s.fsm.st.revision, nil
}

func listOf[V any](m map[string]V, ns string, meta func(V) *portalv1.ObjectMeta) []V {
	out := make([]V, 0, len(m))
	for _, v := range m {
		if ns == "" || meta(v).GetNamespace() == ns {
			out = append(out, v)
		}
	}
	sort.Slice(out, func(i, j int) bool { return metaKey(meta(out[i])) < metaKey(meta(out[j])) })
	return out
}

// WatchServices streams service changes to send until ctx ends or send
// fails. rv 0 first sends every current service as ADDED and a BOOKMARK;
// otherwise it resumes after revision rv (OUT_OF_RANGE when too old).
func (s *Store) WatchServices(ctx context.Context, ns string, rv uint64, send func(*portalv1.WatchServicesResponse) error) error {
	return s.watch(ctx, ns, rv, true, func(e *event) error {
		return send(&portalv1.WatchServicesResponse{Type: e.typ, Service: e.service, ResourceVersion: e.revision, WriteTime: e.time})
	})
}

// WatchEndpoints is WatchServices for Endpoints.
func (s *Store) WatchEndpoints(ctx context.Context, ns string, rv uint64, send func(*portalv1.WatchEndpointsResponse) error) error {
	return s.watch(ctx, ns, rv, false, func(e *event) error {
		return send(&portalv1.WatchEndpointsResponse{Type: e.typ, Endpoints: e.endpoints, ResourceVersion: e.revision, WriteTime: e.time})
	})
}

func (s *Store) watch(ctx context.Context, ns string, rv uint64, services bool, send func(*event) error) error {
	cursor, epoch := rv, uint64(0)
	if rv == 0 {
		var initial []*event
		s.fsm.mu.RLock()
		cursor = s.fsm.st.revision
		epoch = s.fsm.hub.currentEpoch()
		if services {
			for _, svc := range listOf(s.fsm.st.services, ns, func(v *portalv1.Service) *portalv1.ObjectMeta { return v.GetMetadata() }) {
				initial = append(initial, &event{typ: portalv1.EventAdded, revision: svc.GetMetadata().GetResourceVersion(), service: svc})
			}
		} else {
			for _, ep := range listOf(s.fsm.st.endpoints, ns, func(v *portalv1.Endpoints) *portalv1.ObjectMeta { return v.GetMetadata() }) {
				initial = append(initial, &event{typ: portalv1.EventAdded, revision: ep.GetMetadata().GetResourceVersion(), endpoints: ep})
			}
		}
		s.fsm.mu.RUnlock()
		for _, e := range initial {
			if err := send(e); err != nil {
				return err
			}
		}
		if err := send(&event{typ: portalv1.EventBookmark, revision: cursor}); err != nil {
			return err
		}
	} else {
		epoch = s.fsm.hub.currentEpoch()
	}
	for {
		evs, wait, err := s.fsm.hub.since(cursor, epoch)
		if err != nil {
			return err
		}
		for _, e := range evs {
			cursor = e.revision
			if (e.service != nil) != services || (ns != "" && e.namespace() != ns) {
				continue
			}
			if err := send(e); err != nil {
				return err
			}
		}
		if wait != nil {
			select {
			case <-ctx.Done():
				return status.FromContextError(ctx.Err()).Err()
			case <-wait:
			}
		}
	}
}

// Cluster describes the raft membership as this node sees it, with the
// replicated node records.
func (s *Store) Cluster(ctx context.Context) (*portalv1.GetClusterResponse, error) {
	fut := s.raft.GetConfiguration()
	if err := fut.Error(); err != nil {
		return nil, raftError(err, s)
	}
	_, leaderID := s.raft.LeaderWithID()
	stats := s.raft.Stats()
	out := &portalv1.GetClusterResponse{
		Leader:       string(leaderID),
		NodeId:       s.cfg.NodeID,
		Term:         parseUint(stats["term"]),
		CommitIndex:  parseUint(stats["commit_index"]),
		AppliedIndex: s.raft.AppliedIndex(),
		Config:       s.Config(),
	}
	s.fsm.mu.RLock()
	records := make(map[string]*portalv1.Node, len(s.fsm.st.nodes))
	for k, v := range s.fsm.st.nodes {
		records[k] = v
	}
	s.fsm.mu.RUnlock()
	leading := s.raft.State() == raft.Leader
	s.healthMu.Lock()
	defer s.healthMu.Unlock()
	for _, srv := range fut.Configuration().Servers {
		n := &portalv1.Node{Id: string(srv.ID), RaftAddress: string(srv.Address), Suffrage: "voter"}
		if rec := records[string(srv.ID)]; rec != nil {
			n.GrpcAddress, n.Addresses, n.Labels = rec.GetGrpcAddress(), rec.GetAddresses(), rec.GetLabels()
		}
		if srv.Suffrage != raft.Voter {
			n.Suffrage = "nonvoter"
		}
		switch {
		case srv.ID == leaderID:
			n.Role = "leader"
		case string(srv.ID) == s.cfg.NodeID && s.raft.State() == raft.Candidate:
			n.Role = "candidate"
		default:
			n.Role = "follower"
		}
		switch {
		case string(srv.ID) == s.cfg.NodeID:
			n.Ready = s.Ready() == nil
			if n.GrpcAddress == "" {
				n.GrpcAddress = s.cfg.GRPCAddr
			}
		case leading:
			since, failing := s.unhealthy[srv.ID]
			n.Ready = !failing
			if failing {
				n.LastContactMillis = time.Since(since).Milliseconds()
			}
		default:
			// Only the leader hears every peer; others see the leader.
			n.Ready = srv.ID == leaderID
		}
		out.Nodes = append(out.Nodes, n)
	}
	return out, nil
}

// LeaderAddress is the leader's gRPC address from its node record ("" when
// there is no leader or it has not registered yet).
func (s *Store) LeaderAddress() string {
	_, id := s.raft.LeaderWithID()
	if id == "" {
		return ""
	}
	s.fsm.mu.RLock()
	defer s.fsm.mu.RUnlock()
	return s.fsm.st.nodes[string(id)].GetGrpcAddress()
}

// selfRecord is this node's record as configured.
func (s *Store) selfRecord() *portalv1.Node {
	return &portalv1.Node{Id: s.cfg.NodeID, GrpcAddress: s.cfg.GRPCAddr, RaftAddress: s.RaftAddr(),
		Addresses: s.cfg.Addresses, Labels: s.cfg.Labels}
}

// SelfJoinRequest is what this node sends to join (or refresh its record).
func (s *Store) SelfJoinRequest() *portalv1.JoinClusterRequest {
	r := s.selfRecord()
	return &portalv1.JoinClusterRequest{NodeId: r.GetId(), RaftAddress: r.GetRaftAddress(), GrpcAddress: r.GetGrpcAddress(),
		Addresses: r.GetAddresses(), Labels: r.GetLabels()}
}

// EnsureNode records this node in the replicated state (the leader does it
// for itself; followers go through JoinCluster on the leader).
func (s *Store) EnsureNode(ctx context.Context) error {
	_, err := s.Join(ctx, s.SelfJoinRequest())
	return err
}

// Join adds a node as a voter (or updates its address) and records it.
// Leader only; idempotent.
func (s *Store) Join(ctx context.Context, req *portalv1.JoinClusterRequest) (*portalv1.GetClusterResponse, error) {
	if req.GetNodeId() == "" || req.GetRaftAddress() == "" {
		return nil, fieldError(codes.InvalidArgument, "JoinClusterRequest", req.GetNodeId(), "nodeId", "nodeId and raftAddress are required")
	}
	if !s.IsLeader() {
		return nil, raftError(raft.ErrNotLeader, s)
	}
	fut := s.raft.GetConfiguration()
	if err := fut.Error(); err != nil {
		return nil, raftError(err, s)
	}
	present := false
	for _, srv := range fut.Configuration().Servers {
		switch {
		case string(srv.ID) == req.GetNodeId() && string(srv.Address) == req.GetRaftAddress():
			present = true
		case string(srv.ID) != req.GetNodeId() && string(srv.Address) == req.GetRaftAddress():
			return nil, fieldError(codes.AlreadyExists, "JoinClusterRequest", req.GetNodeId(), "raftAddress",
				fmt.Sprintf("%s is the raft address of node %s", srv.Address, srv.ID))
		}
	}
	if !present {
		timeout := applyTimeout
		if dl, ok := ctx.Deadline(); ok {
			timeout = time.Until(dl)
		}
		if err := s.raft.AddVoter(raft.ServerID(req.GetNodeId()), raft.ServerAddress(req.GetRaftAddress()), 0, timeout).Error(); err != nil {
			return nil, raftError(err, s)
		}
		s.log.Info("node joined", "node", req.GetNodeId(), "raft", req.GetRaftAddress(), "grpc", req.GetGrpcAddress())
	}
	node := &portalv1.Node{Id: req.GetNodeId(), GrpcAddress: req.GetGrpcAddress(), RaftAddress: req.GetRaftAddress(),
		Addresses: req.GetAddresses(), Labels: req.GetLabels()}
	if _, err := s.propose(ctx, &raftv1.Command{Op: &raftv1.Command_RegisterNode{RegisterNode: &raftv1.RegisterNode{Node: node}}}); err != nil {
		return nil, err
	}
	return s.Cluster(ctx)
}

// RemoveNode removes a node from the raft configuration and its record.
func (s *Store) RemoveNode(ctx context.Context, id string) error {
	if id == "" {
		return fieldError(codes.InvalidArgument, "RemoveNodeRequest", "", "nodeId", "required")
	}
	if !s.IsLeader() {
		return raftError(raft.ErrNotLeader, s)
	}
	fut := s.raft.GetConfiguration()
	if err := fut.Error(); err != nil {
		return raftError(err, s)
	}
	found := false
	for _, srv := range fut.Configuration().Servers {
		found = found || string(srv.ID) == id
	}
	if !found {
		return status.Errorf(codes.NotFound, "node %s is not a member of the cluster", id)
	}
	if _, err := s.propose(ctx, &raftv1.Command{Op: &raftv1.Command_RemoveNode{RemoveNode: &raftv1.RemoveNode{Id: id}}}); err != nil {
		return err
	}
	if err := s.raft.RemoveServer(raft.ServerID(id), 0, applyTimeout).Error(); err != nil {
		return raftError(err, s)
	}
	s.log.Info("node removed", "node", id)
	return nil
}

// TransferLeadership hands leadership to id (or the best follower).
func (s *Store) TransferLeadership(ctx context.Context, id string) (string, error) {
	if !s.IsLeader() {
		return "", raftError(raft.ErrNotLeader, s)
	}
	var fut raft.Future
	if id == "" {
		fut = s.raft.LeadershipTransfer()
	} else {
		cfg := s.raft.GetConfiguration()
		if err := cfg.Error(); err != nil {
			return "", raftError(err, s)
		}
		var addr raft.ServerAddress
		for _, srv := range cfg.Configuration().Servers {
			if string(srv.ID) == id {
				addr = srv.Address
			}
		}
		if addr == "" {
			return "", status.Errorf(codes.NotFound, "node %s is not a member of the cluster", id)
		}
		fut = s.raft.LeadershipTransferToServer(raft.ServerID(id), addr)
	}
	if err := fut.Error(); err != nil {
		return "", status.Errorf(codes.FailedPrecondition, "leadership transfer: %v", err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := s.WaitLeader(wctx); err != nil {
		return "", err
	}
	_, leader := s.raft.LeaderWithID()
	return string(leader), nil
}

func parseUint(s string) uint64 {
	var v uint64
	_, _ = fmt.Sscan(s, &v)
	return v
}

// Recover rewrites the raft configuration in cfg.DataDir to this node alone
// (for the loss of quorum: the other members are gone for good). Run it
// with portald stopped; start portald afterwards on the same data
// directory, then join new or wiped members to it. Writes the others had
// committed but this node had not received are lost.
func Recover(cfg Config) error {
	if cfg.NodeID == "" || cfg.DataDir == "" || cfg.RaftAddr == "" {
		return errors.New("recover: node id, data dir and raft address are required")
	}
	logs, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(cfg.DataDir, "raft.db")})
	if err != nil {
		return fmt.Errorf("recover: open raft log: %w", err)
	}
	defer logs.Close()
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeID)
	rc.Logger = hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.Warn, Output: os.Stderr})
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, 2, rc.Logger)
	if err != nil {
		return fmt.Errorf("recover: snapshot store: %w", err)
	}
	existing, err := raft.HasExistingState(logs, logs, snaps)
	if err != nil {
		return err
	}
	if !existing {
		return fmt.Errorf("recover: %s holds no raft state", cfg.DataDir)
	}
	_, trans := raft.NewInmemTransport(raft.ServerAddress(cfg.RaftAddr))
	conf := raft.Configuration{Servers: []raft.Server{{ID: rc.LocalID, Address: raft.ServerAddress(cfg.RaftAddr), Suffrage: raft.Voter}}}
	if err := raft.RecoverCluster(rc, newFSM(16), logs, logs, snaps, trans, conf); err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	return nil
}
