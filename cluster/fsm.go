package cluster

import (
	"fmt"
	"io"
	"net/netip"
	"sync"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	raftv1 "github.com/portal-lb/portal/proto/portal/raft/v1"
	portalv1 "github.com/portal-lb/portal/proto/portal/v1"
)

// fsm applies raft log commands to the in-memory state. It never touches
// the kernel: the log is replayed on every start and restore.
type fsm struct {
	mu  sync.RWMutex
	st  *state
	hub *hub
}

// result is what Apply returns to the proposer.
type result struct {
	service   *portalv1.Service
	endpoints *portalv1.Endpoints
	outcome   string // created, configured, unchanged, deleted
	err       error
}

var _ raft.FSM = (*fsm)(nil)

func newFSM(hubSize int) *fsm {
	return &fsm{st: newState(), hub: newHub(hubSize)}
}

// Apply implements raft.FSM.
func (f *fsm) Apply(l *raft.Log) interface{} {
	if l.Type != raft.LogCommand {
		return nil
	}
	cmd := &raftv1.Command{}
	if err := proto.Unmarshal(l.Data, cmd); err != nil {
		// A replica that cannot read its own log must stop, not diverge.
		panic(fmt.Sprintf("portal: undecodable raft log entry at index %d: %v", l.Index, err))
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	res, ev := f.apply(cmd, l.Index)
	if res.err == nil && res.outcome != portalv1.ResultUnchanged {
		f.st.revision = l.Index
	}
	if ev != nil {
		ev.time = cmd.GetTime()
		f.hub.publish(ev)
	}
	return res
}

func (f *fsm) apply(cmd *raftv1.Command, index uint64) (*result, *event) {
	switch op := cmd.GetOp().(type) {
	case *raftv1.Command_CreateService:
		return f.putService(cmd, op.CreateService.GetService(), index, false, true)
	case *raftv1.Command_UpdateService:
		return f.putService(cmd, op.UpdateService.GetService(), index, op.UpdateService.GetUpsert(), op.UpdateService.GetUpsert())
	case *raftv1.Command_DeleteService:
		return f.deleteService(op.DeleteService, index)
	case *raftv1.Command_PutEndpoints:
		return f.putEndpoints(cmd, op.PutEndpoints.GetEndpoints(), index)
	case *raftv1.Command_DeleteEndpoints:
		return f.deleteEndpoints(op.DeleteEndpoints, index)
	case *raftv1.Command_SetConfig:
		if proto.Equal(op.SetConfig.GetConfig(), f.st.config) {
			return &result{outcome: portalv1.ResultUnchanged}, nil
		}
		if err := f.st.setConfig(op.SetConfig.GetConfig()); err != nil {
			return &result{err: err}, nil
		}
		return &result{outcome: portalv1.ResultConfigured}, nil
	case *raftv1.Command_RegisterNode:
		n := op.RegisterNode.GetNode()
		if n.GetId() == "" {
			return &result{err: fieldError(codes.InvalidArgument, "Node", "", "nodeId", "required")}, nil
		}
		if proto.Equal(n, f.st.nodes[n.GetId()]) {
			return &result{outcome: portalv1.ResultUnchanged}, nil
		}
		f.st.nodes[n.GetId()] = proto.Clone(n).(*portalv1.Node)
		return &result{outcome: portalv1.ResultConfigured}, nil
	case *raftv1.Command_RemoveNode:
		if _, ok := f.st.nodes[op.RemoveNode.GetId()]; !ok {
			return &result{outcome: portalv1.ResultUnchanged}, nil
		}
		delete(f.st.nodes, op.RemoveNode.GetId())
		return &result{outcome: "deleted"}, nil
	default:
		return &result{err: fieldError(codes.InvalidArgument, "Command", "", "op", "unknown command")}, nil
	}
}

// putService creates (create) or replaces (!create, or upsert) a service.
func (f *fsm) putService(cmd *raftv1.Command, in *portalv1.Service, index uint64, upsert, create bool) (*result, *event) {
	if in.GetMetadata().GetName() == "" || in.GetSpec() == nil {
		return &result{err: fieldError(codes.InvalidArgument, "Service", "", "metadata.name", "required")}, nil
	}
	key := metaKey(in.GetMetadata())
	old := f.st.services[key]
	ns, name := in.GetMetadata().GetNamespace(), in.GetMetadata().GetName()
	switch {
	case old != nil && create && !upsert:
		return &result{err: fieldError(codes.AlreadyExists, "Service", name, "metadata.name",
			fmt.Sprintf("service %s already exists", key))}, nil
	case old == nil && !create:
		return &result{err: notFound("service", ns, name)}, nil
	case old != nil && in.GetMetadata().GetResourceVersion() != 0 && in.GetMetadata().GetResourceVersion() != old.GetMetadata().GetResourceVersion():
		return &result{err: staleVersion("service", ns, name, in.GetMetadata().GetResourceVersion(), old.GetMetadata().GetResourceVersion())}, nil
	}
	svc := proto.Clone(in).(*portalv1.Service)
	if old != nil {
		svc.Metadata.Uid = old.GetMetadata().GetUid()
		svc.Metadata.CreationTimestamp = old.GetMetadata().GetCreationTimestamp()
		svc.Status = proto.Clone(old.GetStatus()).(*portalv1.ServiceStatus)
	} else {
		svc.Metadata.Uid = cmd.GetUid()
		svc.Metadata.CreationTimestamp = cmd.GetTime()
		svc.Status = nil
	}
	alloc, err := f.st.allocate(key, svc, old)
	if err != nil {
		return &result{err: err}, nil
	}
	if old != nil {
		svc.Metadata.ResourceVersion = old.GetMetadata().GetResourceVersion()
		if proto.Equal(svc, old) {
			return &result{service: old, outcome: portalv1.ResultUnchanged}, nil
		}
	}
	svc.Metadata.ResourceVersion = index
	f.st.commit(alloc, svc)
	f.st.services[key] = svc
	if old == nil {
		return &result{service: svc, outcome: portalv1.ResultCreated}, &event{typ: portalv1.EventAdded, revision: index, service: svc}
	}
	return &result{service: svc, outcome: portalv1.ResultConfigured}, &event{typ: portalv1.EventModified, revision: index, service: svc}
}

func (f *fsm) deleteService(d *raftv1.DeleteService, index uint64) (*result, *event) {
	key := objKey(d.GetNamespace(), d.GetName())
	old := f.st.services[key]
	if old == nil {
		return &result{err: notFound("service", d.GetNamespace(), d.GetName())}, nil
	}
	if rv := d.GetResourceVersion(); rv != 0 && rv != old.GetMetadata().GetResourceVersion() {
		return &result{err: staleVersion("service", d.GetNamespace(), d.GetName(), rv, old.GetMetadata().GetResourceVersion())}, nil
	}
	f.st.release(key, holdingsOf(old))
	delete(f.st.services, key)
	gone := proto.Clone(old).(*portalv1.Service)
	gone.Metadata.ResourceVersion = index
	return &result{service: gone, outcome: "deleted"}, &event{typ: portalv1.EventDeleted, revision: index, service: gone}
}

func (f *fsm) putEndpoints(cmd *raftv1.Command, in *portalv1.Endpoints, index uint64) (*result, *event) {
	name := in.GetMetadata().GetName()
	if name == "" {
		return &result{err: fieldError(codes.InvalidArgument, "Endpoints", "", "metadata.name", "required")}, nil
	}
	if err := f.checkEndpoints(in); err != nil {
		return &result{err: err}, nil
	}
	key := metaKey(in.GetMetadata())
	old := f.st.endpoints[key]
	ns := in.GetMetadata().GetNamespace()
	if old != nil && in.GetMetadata().GetResourceVersion() != 0 && in.GetMetadata().GetResourceVersion() != old.GetMetadata().GetResourceVersion() {
		return &result{err: staleVersion("endpoints", ns, name, in.GetMetadata().GetResourceVersion(), old.GetMetadata().GetResourceVersion())}, nil
	}
	ep := proto.Clone(in).(*portalv1.Endpoints)
	if old != nil {
		ep.Metadata.Uid = old.GetMetadata().GetUid()
		ep.Metadata.CreationTimestamp = old.GetMetadata().GetCreationTimestamp()
		ep.Metadata.ResourceVersion = old.GetMetadata().GetResourceVersion()
		if proto.Equal(ep, old) {
			return &result{endpoints: old, outcome: portalv1.ResultUnchanged}, nil
		}
	} else {
		ep.Metadata.Uid = cmd.GetUid()
		ep.Metadata.CreationTimestamp = cmd.GetTime()
	}
	ep.Metadata.ResourceVersion = index
	f.st.endpoints[key] = ep
	if old == nil {
		return &result{endpoints: ep, outcome: portalv1.ResultCreated}, &event{typ: portalv1.EventAdded, revision: index, endpoints: ep}
	}
	return &result{endpoints: ep, outcome: portalv1.ResultConfigured}, &event{typ: portalv1.EventModified, revision: index, endpoints: ep}
}

// checkEndpoints applies the rules that depend on the state: loopback
// addresses (a cluster setting) and port names of a multi-port service.
func (f *fsm) checkEndpoints(ep *portalv1.Endpoints) error {
	name := ep.GetMetadata().GetName()
	allowLoopback := f.st.config.GetAllowLoopbackEndpoints()
	svc := f.st.services[metaKey(ep.GetMetadata())]
	svcNames := map[string]bool{}
	for _, p := range svc.GetSpec().GetPorts() {
		svcNames[p.GetName()] = true
	}
	for i, ss := range ep.GetSubsets() {
		for _, l := range []struct {
			name string
			list []*portalv1.EndpointAddress
		}{{"addresses", ss.GetAddresses()}, {"notReadyAddresses", ss.GetNotReadyAddresses()}} {
			listName := l.name
			for j, a := range l.list {
				ip, err := netip.ParseAddr(a.GetIp())
				field := fmt.Sprintf("subsets[%d].%s[%d].ip", i, listName, j)
				if err != nil {
					return fieldError(codes.InvalidArgument, "Endpoints", name, field, "must be a valid IP address")
				}
				if ip.Unmap().IsLoopback() && !allowLoopback {
					return fieldError(codes.InvalidArgument, "Endpoints", name, field,
						"may not be a loopback address (the cluster setting allow-loopback-endpoints is off)")
				}
			}
		}
		if len(svc.GetSpec().GetPorts()) > 1 {
			for j, p := range ss.GetPorts() {
				if !svcNames[p.GetName()] {
					return fieldError(codes.InvalidArgument, "Endpoints", name, fmt.Sprintf("subsets[%d].ports[%d].name", i, j),
						fmt.Sprintf("%q does not name a port of service %s", p.GetName(), metaKey(ep.GetMetadata())))
				}
			}
		}
	}
	return nil
}

func (f *fsm) deleteEndpoints(d *raftv1.DeleteEndpoints, index uint64) (*result, *event) {
	key := objKey(d.GetNamespace(), d.GetName())
	old := f.st.endpoints[key]
	if old == nil {
		return &result{err: notFound("endpoints", d.GetNamespace(), d.GetName())}, nil
	}
	if rv := d.GetResourceVersion(); rv != 0 && rv != old.GetMetadata().GetResourceVersion() {
		return &result{err: staleVersion("endpoints", d.GetNamespace(), d.GetName(), rv, old.GetMetadata().GetResourceVersion())}, nil
	}
	delete(f.st.endpoints, key)
	gone := proto.Clone(old).(*portalv1.Endpoints)
	gone.Metadata.ResourceVersion = index
	return &result{endpoints: gone, outcome: "deleted"}, &event{typ: portalv1.EventDeleted, revision: index, endpoints: gone}
}

// Snapshot implements raft.FSM. The state's objects are immutable, so a
// shallow copy taken under the lock is a consistent point-in-time view.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return &snapshot{state: f.st.toProto()}, nil
}

// Restore implements raft.FSM.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		return err
	}
	p := &raftv1.State{}
	if err := proto.Unmarshal(data, p); err != nil {
		return fmt.Errorf("decode snapshot: %w", err)
	}
	st, err := stateFromProto(p)
	if err != nil {
		return fmt.Errorf("snapshot state: %w", err)
	}
	f.mu.Lock()
	f.st = st
	f.hub.reset(st.revision)
	f.mu.Unlock()
	return nil
}

type snapshot struct{ state *raftv1.State }

func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(s.state)
	if err == nil {
		_, err = sink.Write(data)
	}
	if err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *snapshot) Release() {}
