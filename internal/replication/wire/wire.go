// Package wire is the format of peer-link frames: JSON records and binary
// batches of messages, and the checks a message from a peer must pass.
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"

	"chatr/internal/proto"
)

// Record is one frame on a peer link. The leader sends batches of messages,
// its presence snapshot and heartbeats; the follower sends acks.
type Record struct {
	// Msgs are messages in per-origin order.
	Msgs []Msg `json:"m,omitempty"`
	// Presence is the leader's own sessions' presence, room -> names. It is
	// a full snapshot; Presence with Snapshot set and no rooms means none.
	// The first presence a leader sends on a link is a snapshot.
	Presence map[string][]proto.Person `json:"p,omitempty"`
	Snapshot bool                      `json:"ps,omitempty"`
	// Joined and Left change the last snapshot, room by room: the people
	// who have a session on the leader now, and those who have none. Only
	// to a follower whose hello asked for them (Hello.Deltas).
	Joined map[string][]proto.Person `json:"pj,omitempty"`
	Left   map[string][]proto.Person `json:"pl,omitempty"`
	// Ack is the follower's vector after storing what it got.
	Ack proto.Vector `json:"a,omitempty"`
}

// Msg is a message on a peer link.
type Msg struct {
	Origin  string `json:"o"`
	Seq     uint64 `json:"s"`
	Room    string `json:"r"`
	Sender  string `json:"f"`
	Text    string `json:"t"`
	Created int64  `json:"c"`
	Ref     string `json:"x,omitempty"`
	User    string `json:"u,omitempty"`
}

// FromMessage is m as it travels.
func FromMessage(m proto.Message) Msg {
	return Msg{Origin: m.Origin, Seq: m.Seq, Room: m.Room, Sender: m.Sender, Text: m.Text, Created: m.Created, Ref: m.Ref, User: m.User}
}

// Batches of messages travel in binary frames when the follower asks for
// them (enc=bin on the link URL; older followers get JSON records): decoding
// JSON took about a tenth of a follower's CPU. A batch is a version byte,
// then per message: origin, seq, room, sender, text, created, ref, user,
// each a uvarint (created a varint) or a uvarint length and the bytes.
// Version 2 added user.
const BatchVersion = 2

// MaxBatchMsgs bounds the messages of one batch, so a batch of tiny
// messages cannot make a follower allocate far more than the frame's size.
// A leader sends at most a commit's worth (MaxBatch, 2048 by default, plus
// one replicated batch), or a catch-up read from its store (512).
const MaxBatchMsgs = 1 << 16

// AppendBatch appends msgs as one binary batch to b.
func AppendBatch(b []byte, msgs []Msg) []byte {
	b = append(b, BatchVersion)
	for _, m := range msgs {
		b = appendString(b, m.Origin)
		b = binary.AppendUvarint(b, m.Seq)
		b = appendString(b, m.Room)
		b = appendString(b, m.Sender)
		b = appendString(b, m.Text)
		b = binary.AppendVarint(b, m.Created)
		b = appendString(b, m.Ref)
		b = appendString(b, m.User)
	}
	return b
}

func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

// DecodeBatch reads a binary batch. It only splits the bytes; each message
// is checked by Msg.Message like a JSON one.
func DecodeBatch(b []byte) ([]Msg, error) {
	if len(b) == 0 || b[0] != BatchVersion {
		return nil, errors.New("not a batch of a known version")
	}
	d := batchDecoder{b: b[1:]}
	var msgs []Msg
	var prev Msg
	for len(d.b) > 0 && d.err == nil {
		if len(msgs) == MaxBatchMsgs {
			return nil, fmt.Errorf("bad batch: more than %d messages", MaxBatchMsgs)
		}
		var m Msg
		m.Origin = d.str(prev.Origin)
		m.Seq = d.uvarint()
		m.Room = d.str(prev.Room)
		m.Sender = d.str("")
		m.Text = d.str("")
		m.Created = d.varint()
		m.Ref = d.str("")
		m.User = d.str(prev.User)
		msgs = append(msgs, m)
		prev = m
	}
	if d.err != nil {
		return nil, fmt.Errorf("bad batch: %w", d.err)
	}
	return msgs, nil
}

type batchDecoder struct {
	b   []byte
	err error
}

var errShort = errors.New("truncated")

func (d *batchDecoder) uvarint() uint64 { return next(d, binary.Uvarint) }

func (d *batchDecoder) varint() int64 { return next(d, binary.Varint) }

// next reads one number with decode (binary.Uvarint or binary.Varint).
func next[T uint64 | int64](d *batchDecoder, decode func([]byte) (T, int)) T {
	if d.err != nil {
		return 0
	}
	v, n := decode(d.b)
	if n <= 0 {
		d.err = errShort
		return 0
	}
	d.b = d.b[n:]
	return v
}

// str reads a string; one equal to prev is returned as prev, so a batch
// keeps one copy of an origin or room, not one per message.
func (d *batchDecoder) str(prev string) string {
	n := d.uvarint()
	if d.err != nil {
		return ""
	}
	if n > uint64(len(d.b)) {
		d.err = errShort
		return ""
	}
	raw := d.b[:n]
	d.b = d.b[n:]
	if string(raw) == prev {
		return prev
	}
	return string(raw)
}

// Message checks a message from a peer as strictly as one from a client: a
// peer's bytes are input like any other. Its sender is checked with the
// rule of stored names (proto.CheckName): earlier releases stored names
// that a client can no longer take.
func (w Msg) Message() (proto.Message, error) {
	m := proto.Message{Origin: w.Origin, Seq: w.Seq, Room: w.Room, Sender: w.Sender, Text: w.Text, Created: w.Created, Ref: w.Ref, User: w.User}
	if !proto.ValidNodeID(w.Origin) || w.Seq == 0 {
		return m, fmt.Errorf("bad message id %q-%d", w.Origin, w.Seq)
	}
	if err := proto.CheckRoom(w.Room); err != nil {
		return m, err
	}
	if err := proto.CheckName(w.Sender); err != nil {
		return m, err
	}
	if err := proto.CheckText(w.Text); err != nil {
		return m, err
	}
	if err := proto.CheckRef(w.Ref); err != nil {
		return m, err
	}
	if err := proto.CheckUser(w.User); err != nil {
		return m, err
	}
	return m, nil
}
