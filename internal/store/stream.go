package store

import (
	"context"
	"errors"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// The commit stream is the in-memory tail of the log: every batch the
// writer stores, in commit order, held for the consumers (the hub's
// fan-out, each peer link), which read it on goroutines of their own, each
// from a place of its own. The writer only appends to it, so a slow room or
// link never delays a commit. It holds at most StreamLen messages: a
// consumer that falls further behind loses its place (ErrBehind) and reads
// what it missed from the store, as a peer link does; a consumer that must
// not (Follow with hold: the hub, which has nowhere else to read from) holds
// the writer back instead, which then stops taking writes until it has
// read on.
type stream struct {
	mu      sync.Mutex
	space   sync.Cond // signalled when a holder reads on
	batches [][]Committed
	first   uint64 // number of batches[0]
	msgs    int    // messages in batches
	max     int
	wake    chan struct{} // closed and replaced by the next append
	holders map[*Follower]struct{}
	closing bool // the store is closing: append waits for no holder
	closed  bool

	waits prometheus.Counter // appends that waited for a holder; nil without metrics
}

// StreamLen is how many messages the commit stream holds by default.
const StreamLen = 32768

// ErrBehind is returned by Follower.Next when the batches after the
// follower's place are gone from the stream: it must read them from the
// store (Range, by origin); the follower goes on from the oldest batch held.
var ErrBehind = errors.New("the commit stream no longer holds what this follower has not read")

func newStream(max int) *stream {
	st := &stream{max: max, wake: make(chan struct{}), holders: map[*Follower]struct{}{}}
	st.space.L = &st.mu
	return st
}

// Follower reads the commit stream from a place of its own. Only one
// goroutine may use a Follower.
type Follower struct {
	st   *stream
	next uint64 // number of the next batch to read
	hold bool
}

// Follow returns a reader of the commit stream from the next commit on.
// With hold, the writer waits rather than drop a batch the follower has
// not read; Close it when done, or the writer stops once the stream is full.
func (s *Store) Follow(hold bool) *Follower {
	st := s.stream
	st.mu.Lock()
	defer st.mu.Unlock()
	f := &Follower{st: st, next: st.first + uint64(len(st.batches)), hold: hold}
	if hold {
		st.holders[f] = struct{}{}
	}
	return f
}

// Close stops the follower; it holds nothing back after.
func (f *Follower) Close() {
	f.st.mu.Lock()
	defer f.st.mu.Unlock()
	delete(f.st.holders, f)
	f.st.space.Broadcast()
}

// Next returns every batch committed since the follower's last read, in
// commit order, as one slice, waiting for one when there is none. It fails
// with ctx's error, with ErrBehind (see there), or with ErrClosed once the
// store is closed and the follower has read everything.
func (f *Follower) Next(ctx context.Context) ([]Committed, error) {
	for {
		batch, err := f.Take()
		if err != nil || len(batch) > 0 {
			return batch, err
		}
		select {
		case <-f.Ready():
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Take is Next without the wait: nothing (and no error) when nothing new
// is committed.
func (f *Follower) Take() ([]Committed, error) {
	st := f.st
	st.mu.Lock()
	defer st.mu.Unlock()
	if f.next < st.first {
		f.next = st.first
		return nil, ErrBehind
	}
	i := int(f.next - st.first)
	if i == len(st.batches) {
		if st.closed {
			return nil, ErrClosed
		}
		return nil, nil
	}
	var out []Committed
	if len(st.batches) == i+1 {
		out = st.batches[i] // never changed: shared
	} else {
		n := 0
		for _, b := range st.batches[i:] {
			n += len(b)
		}
		out = make([]Committed, 0, n)
		for _, b := range st.batches[i:] {
			out = append(out, b...)
		}
	}
	f.next = st.first + uint64(len(st.batches))
	if f.hold {
		st.space.Broadcast()
	}
	return out, nil
}

// Ready returns a channel that is closed once Take has something to
// return (a batch, or an error).
func (f *Follower) Ready() <-chan struct{} {
	st := f.st
	st.mu.Lock()
	defer st.mu.Unlock()
	if f.next != st.first+uint64(len(st.batches)) || st.closed {
		return closedChan
	}
	return st.wake
}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// append adds a batch and wakes the followers. Old batches are dropped to
// stay within max messages, except those a holder has not read: append
// waits for them.
func (st *stream) append(batch []Committed) {
	if len(batch) == 0 {
		return
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	waited := false
	for st.msgs+len(batch) > st.max && len(st.batches) > 0 {
		if st.heldBack() && !st.closing {
			waited = true
			st.space.Wait()
			continue
		}
		st.msgs -= len(st.batches[0])
		st.batches[0] = nil
		st.batches = st.batches[1:]
		st.first++
	}
	if waited && st.waits != nil {
		st.waits.Inc()
	}
	st.batches = append(st.batches, batch)
	st.msgs += len(batch)
	close(st.wake)
	st.wake = make(chan struct{})
}

// heldBack reports whether a holder has not read the oldest batch. st.mu
// is held.
func (st *stream) heldBack() bool {
	for f := range st.holders {
		if f.next <= st.first {
			return true
		}
	}
	return false
}

// release lets the writer finish without waiting for holders, when the
// store closes (a holder may have stopped reading already).
func (st *stream) release() {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.closing = true
	st.space.Broadcast()
}

// close ends the stream: followers read what is left, then get ErrClosed.
func (st *stream) close() {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.closed = true
	close(st.wake)
	st.wake = make(chan struct{})
	st.space.Broadcast()
}
