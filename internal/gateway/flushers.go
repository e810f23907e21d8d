package gateway

import (
	"runtime"
	"sync"
)

// flushQueue runs the flushes of sessions whose writes never wait
// (wsConn.tryWriteFrames): at most one goroutine per core takes sessions in
// turn from one queue, each for one batch. A goroutine per flush would
// start with 2 KB of stack and grow it on the way to writev, and the
// stack copies, starts and ends of goroutines were 12 % of a node's CPU in
// a fan-out to 1,000; these few keep their stacks. A session whose socket
// is full goes on in a goroutine of its own (session.finishFlush), so a
// slow client holds up no one.
type flushQueue struct {
	mu      sync.Mutex
	ready   sync.Cond
	queue   []*session
	idle    int // goroutines waiting for a session
	workers int
	max     int
}

// flushers is the process's one queue: the goroutines are per core, not
// per server.
var flushers = newFlushQueue(runtime.GOMAXPROCS(0))

func newFlushQueue(workers int) *flushQueue {
	f := &flushQueue{max: max(1, workers)}
	f.ready.L = &f.mu
	return f
}

// push queues s for a turn.
func (f *flushQueue) push(s *session) {
	f.mu.Lock()
	f.queue = append(f.queue, s)
	switch {
	case f.idle > 0:
		f.ready.Signal()
	case f.workers < f.max:
		f.workers++
		go f.work()
	}
	f.mu.Unlock()
}

func (f *flushQueue) work() {
	f.mu.Lock()
	for {
		for len(f.queue) == 0 {
			f.idle++
			f.ready.Wait()
			f.idle--
		}
		s := f.queue[0]
		f.queue[0] = nil
		f.queue = f.queue[1:]
		f.mu.Unlock()
		s.flushPooled()
		f.mu.Lock()
	}
}
