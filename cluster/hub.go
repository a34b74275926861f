package cluster

import (
	"sort"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	portalv1 "github.com/portal-lb/portal/proto/portal/v1"
)

// event is one change of one object, published after FSM.Apply.
type event struct {
	typ       string
	revision  uint64
	time      *timestamppb.Timestamp // the command's time
	service   *portalv1.Service
	endpoints *portalv1.Endpoints
}

func (e *event) namespace() string {
	if e.service != nil {
		return e.service.GetMetadata().GetNamespace()
	}
	return e.endpoints.GetMetadata().GetNamespace()
}

// hub keeps the most recent events in a ring. Watchers read the ring from
// their own cursor, so a slow watcher never blocks FSM.Apply: it falls off
// the end of the ring and is told to re-list (OUT_OF_RANGE), as a
// Kubernetes watch gets 410 Gone.
type hub struct {
	mu     sync.Mutex
	ring   []*event // ordered by revision; at most max, at least 3/4 max once full
	max    int
	floor  uint64 // events with revision > floor are all in the ring
	epoch  uint64 // bumped on restore: every watcher must re-list
	notify chan struct{}
}

func newHub(max int) *hub {
	return &hub{max: max, notify: make(chan struct{})}
}

func (h *hub) publish(evs ...*event) {
	if len(evs) == 0 {
		return
	}
	h.mu.Lock()
	h.ring = append(h.ring, evs...)
	if len(h.ring) > h.max {
		// Drop the oldest quarter at once, so trimming costs O(1) per event
		// amortised (trimming one by one copied the whole ring per write).
		drop := len(h.ring) - h.max*3/4
		h.floor = h.ring[drop-1].revision
		h.ring = append(make([]*event, 0, h.max+1), h.ring[drop:]...)
	}
	close(h.notify)
	h.notify = make(chan struct{})
	h.mu.Unlock()
}

// reset forgets every event (after a snapshot restore) and ends every watch.
func (h *hub) reset(floor uint64) {
	h.mu.Lock()
	h.ring = nil
	h.floor = floor
	h.epoch++
	close(h.notify)
	h.notify = make(chan struct{})
	h.mu.Unlock()
}

func (h *hub) currentEpoch() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.epoch
}

// since returns the events after revision cursor, or a channel that is
// closed when there may be more.
func (h *hub) since(cursor, epoch uint64) ([]*event, <-chan struct{}, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if epoch != h.epoch {
		return nil, nil, status.Error(codes.OutOfRange, "the state was restored from a snapshot; list again and watch from the new resourceVersion")
	}
	if cursor < h.floor {
		return nil, nil, status.Errorf(codes.OutOfRange, "resourceVersion %d is too old (oldest kept is %d); list again and watch from the new resourceVersion", cursor, h.floor)
	}
	i := sort.Search(len(h.ring), func(i int) bool { return h.ring[i].revision > cursor })
	if i == len(h.ring) {
		return nil, h.notify, nil
	}
	out := make([]*event, len(h.ring)-i)
	copy(out, h.ring[i:])
	return out, nil, nil
}
