package bench

import (
	"math/bits"
	"sync"
)

// Ledger checks every delivery of a run: each receiver in a room must get
// each message acked in that room while it was in it exactly once.
//
// Senders and receivers are numbered from 0 and each belongs to one room.
// A SenderLog is written by its sender's goroutines under its own lock; a
// ReceiverLog is owned by its receiver's goroutine. Check runs after all of
// them have stopped.
type Ledger struct {
	senders []*SenderLog

	mu        sync.Mutex
	receivers []*ReceiverLog
}

// NewLedger returns a ledger for senders whose rooms are senderRooms[i].
func NewLedger(senderRooms []int) *Ledger {
	l := &Ledger{senders: make([]*SenderLog, len(senderRooms))}
	for i, room := range senderRooms {
		l.senders[i] = &SenderLog{room: room}
	}
	return l
}

// Sender returns the log of sender i.
func (l *Ledger) Sender(i int) *SenderLog { return l.senders[i] }

// AddReceiver adds a receiver in room, joined from now on, and returns its
// log.
func (l *Ledger) AddReceiver(room int) *ReceiverLog {
	r := &ReceiverLog{room: room, senders: len(l.senders)}
	l.mu.Lock()
	l.receivers = append(l.receivers, r)
	l.mu.Unlock()
	return r
}

// SenderLog records what one sender sent and which sends were acked.
type SenderLog struct {
	room int

	mu    sync.Mutex
	sent  []int64 // unix nanos of the send of seq i+1
	acked bitset
}

// Next records a send at nanos and returns its sequence number, from 1.
func (s *SenderLog) Next(nanos int64) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sent = append(s.sent, nanos)
	return uint64(len(s.sent))
}

// Ack records the ack of seq and returns the nanos of its send; ok is false
// for an unknown or repeated ack.
func (s *SenderLog) Ack(seq uint64) (sentNanos int64, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if seq == 0 || seq > uint64(len(s.sent)) || s.acked.has(seq) {
		return 0, false
	}
	s.acked.set(seq)
	return s.sent[seq-1], true
}

// Send is one send of a SenderLog.
type Send struct {
	seq   uint64
	nanos int64 // when it was first sent
}

// Unacked returns the sends not acked yet, oldest first.
func (s *SenderLog) Unacked() []Send {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Send
	for j, at := range s.sent {
		if seq := uint64(j + 1); !s.acked.has(seq) {
			out = append(out, Send{seq, at})
		}
	}
	return out
}

// SentAt returns when seq was first sent; ok is false once it is acked (or
// for a seq never sent).
func (s *SenderLog) SentAt(seq uint64) (nanos int64, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if seq == 0 || seq > uint64(len(s.sent)) || s.acked.has(seq) {
		return 0, false
	}
	return s.sent[seq-1], true
}

// ReceiverLog records what one receiver got.
type ReceiverLog struct {
	room      int
	senders   int      // how many senders there are
	seen      []bitset // by sender
	left      int64    // unix nanos it stopped receiving; 0 while it receives
	dups      int64
	strangers int64
}

// Deliver records the delivery of message seq of sender and reports
// whether it is the first one.
func (r *ReceiverLog) Deliver(sender int, seq uint64) bool {
	if sender < 0 || sender >= r.senders || seq == 0 || seq > maxSeq {
		r.strangers++
		return false
	}
	if sender >= len(r.seen) {
		r.seen = append(r.seen, make([]bitset, sender+1-len(r.seen))...)
	}
	if r.seen[sender].has(seq) {
		r.dups++
		return false
	}
	r.seen[sender].set(seq)
	return true
}

// Stop records that the receiver lost its connection at nanos: what was
// sent from then on is not expected from it.
func (r *ReceiverLog) Stop(nanos int64) {
	if r.left == 0 {
		r.left = nanos
	}
}

// maxSeq bounds the sequence numbers a receiver records, so a garbled
// delivery cannot make it allocate without limit.
const maxSeq = 1 << 28

// Check is the outcome of a Ledger.
type Check struct {
	Expected   int64 `json:"expected"`   // deliveries that had to happen
	Lost       int64 `json:"lost"`       // expected deliveries that did not happen
	Late       int64 `json:"late"`       // expected deliveries still in flight at the end
	Duplicated int64 `json:"duplicated"` // deliveries of a message a receiver already had
	Unexpected int64 `json:"unexpected"` // deliveries of messages never sent, or sent to another room
}

// Check counts lost, late, duplicated and unexpected deliveries.
//
// A node delivers the messages of one sender in order, so a receiver
// missing a message older than one it got from the same sender lost it.
// A missing message newer than all it got may instead have been on its way
// when the run ended: with flowing (deliveries were still arriving then)
// it counts as late, otherwise as lost.
func (l *Ledger) Check(flowing bool) Check {
	var c Check
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range l.receivers {
		c.Duplicated += r.dups
		c.Unexpected += r.strangers
		for i := range r.seen {
			if i >= len(l.senders) || l.senders[i].room != r.room {
				c.Unexpected += int64(r.seen[i].count())
				continue
			}
			s := l.senders[i]
			for seq := uint64(len(s.sent)) + 1; seq < r.seen[i].len(); seq++ {
				if r.seen[i].has(seq) {
					c.Unexpected++
				}
			}
		}
		for i, s := range l.senders {
			if s.room != r.room {
				continue
			}
			var seen bitset
			if i < len(r.seen) {
				seen = r.seen[i]
			}
			newest := seen.max()
			for j, at := range s.sent {
				seq := uint64(j + 1)
				if !s.acked.has(seq) || (r.left != 0 && at >= r.left) {
					continue
				}
				c.Expected++
				switch {
				case seen.has(seq):
				case seq > newest && flowing:
					c.Late++
				default:
					c.Lost++
				}
			}
		}
	}
	return c
}

// bitset is a growable set of sequence numbers.
type bitset []uint64

func (b bitset) has(i uint64) bool {
	return i/64 < uint64(len(b)) && b[i/64]&(1<<(i%64)) != 0
}

func (b *bitset) set(i uint64) {
	for i/64 >= uint64(len(*b)) {
		*b = append(*b, 0)
	}
	(*b)[i/64] |= 1 << (i % 64)
}

// len is one past the largest number the set can hold without growing.
func (b bitset) len() uint64 { return uint64(len(b)) * 64 }

// max returns the largest number in the set, 0 when it is empty.
func (b bitset) max() uint64 {
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] != 0 {
			return uint64(i)*64 + uint64(bits.Len64(b[i])) - 1
		}
	}
	return 0
}

func (b bitset) count() int {
	n := 0
	for _, w := range b {
		for ; w != 0; w &= w - 1 {
			n++
		}
	}
	return n
}
