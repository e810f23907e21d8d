package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"chatr/internal/proto"
)

// A record is one entry of the log:
//
//	length uint32 (of the body) | crc uint32 (CRC-32C of the body) | body
//
// little-endian, and the body is a kind byte and its fields:
//
//	recMessage: seq uvarint, created varint, hidden byte, then origin,
//	            room, sender, user, text, ref, replaces as strings
//	recHide:    room, origin, seq: the message is a hidden copy from now on
//	recReplace: room, origin, seq, replaces: the message names the copy it hid
//
// A string is its length (uvarint) and its bytes. Messages are never
// rewritten: what changes about one later (settleCopies) is a record of
// its own, applied in log order.
const (
	recMessage = 1
	recHide    = 2
	recReplace = 3

	recHeader = 8
	// maxRecord bounds a record's body: a message's fields are bounded by
	// the protocol (4 KB of text, a few short strings), so more is damage.
	maxRecord = 64 << 10
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// record is one decoded log entry.
type record struct {
	kind byte
	msg  proto.Message // recMessage: all of it; recHide, recReplace: Room, Origin, Seq (and Replaces)
}

// change is what settleCopies changes about a message stored before: it
// becomes a hidden copy, or names the copy it hid.
type change struct {
	hide         bool
	room, origin string
	seq          uint64
	replaces     string // !hide: the id of the hidden copy
}

// appendMessage appends the record of m to b.
func appendMessage(b []byte, m *proto.Message) []byte {
	return appendRecord(b, func(b []byte) []byte {
		b = append(b, recMessage)
		b = binary.AppendUvarint(b, m.Seq)
		b = binary.AppendVarint(b, m.Created)
		hidden := byte(0)
		if m.Hidden {
			hidden = 1
		}
		b = append(b, hidden)
		for _, s := range [...]string{m.Origin, m.Room, m.Sender, m.User, m.Text, m.Ref, m.Replaces} {
			b = appendString(b, s)
		}
		return b
	})
}

// appendChange appends the record of a change to a message stored before.
func appendChange(b []byte, c *change) []byte {
	return appendRecord(b, func(b []byte) []byte {
		kind := byte(recHide)
		if !c.hide {
			kind = recReplace
		}
		b = append(b, kind)
		b = appendString(b, c.room)
		b = appendString(b, c.origin)
		b = binary.AppendUvarint(b, c.seq)
		if !c.hide {
			b = appendString(b, c.replaces)
		}
		return b
	})
}

// appendRecord frames the body that body appends.
func appendRecord(b []byte, body func([]byte) []byte) []byte {
	start := len(b)
	b = append(b, make([]byte, recHeader)...)
	b = body(b)
	n := len(b) - start - recHeader
	binary.LittleEndian.PutUint32(b[start:], uint32(n))
	binary.LittleEndian.PutUint32(b[start+4:], crc32.Checksum(b[start+recHeader:], crcTable))
	return b
}

func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

// errBadRecord is a record whose frame or body does not hold together.
var errBadRecord = errors.New("bad record")

// frame checks the record at the start of b and returns the length of its
// body: 0 when b starts with zeros (the end of what was written), or
// errBadRecord when the length is out of bounds, b is too short for it, or
// the checksum does not match.
func frame(b []byte) (int, error) {
	if len(b) < recHeader {
		return 0, fmt.Errorf("%w: %d bytes left, a header takes %d", errBadRecord, len(b), recHeader)
	}
	n := int(binary.LittleEndian.Uint32(b))
	sum := binary.LittleEndian.Uint32(b[4:])
	switch {
	case n == 0 && sum == 0:
		return 0, nil
	case n == 0 || n > maxRecord:
		return 0, fmt.Errorf("%w: length %d", errBadRecord, n)
	case len(b) < recHeader+n:
		return 0, fmt.Errorf("%w: length %d, %d bytes left", errBadRecord, n, len(b)-recHeader)
	case crc32.Checksum(b[recHeader:recHeader+n], crcTable) != sum:
		return 0, fmt.Errorf("%w: checksum does not match", errBadRecord)
	}
	return n, nil
}

// decode reads a record's body (framed and checked already).
func decode(body []byte) (record, error) {
	d := decoder{b: body}
	var r record
	r.kind = d.byte()
	switch r.kind {
	case recMessage:
		m := &r.msg
		m.Seq = d.uvarint()
		m.Created = d.varint()
		m.Hidden = d.byte() == 1
		m.Origin, m.Room, m.Sender, m.User = d.string(), d.string(), d.string(), d.string()
		m.Text, m.Ref, m.Replaces = d.string(), d.string(), d.string()
	case recHide, recReplace:
		r.msg.Room, r.msg.Origin = d.string(), d.string()
		r.msg.Seq = d.uvarint()
		if r.kind == recReplace {
			r.msg.Replaces = d.string()
		}
	default:
		return record{}, fmt.Errorf("%w: kind %d", errBadRecord, r.kind)
	}
	if d.err != nil || len(d.b) != 0 {
		return record{}, fmt.Errorf("%w: body of kind %d does not parse", errBadRecord, r.kind)
	}
	if !proto.ValidNodeID(r.msg.Origin) || r.msg.Seq == 0 || r.msg.Seq > proto.MaxSeq {
		return record{}, fmt.Errorf("%w: message id %q-%d", errBadRecord, r.msg.Origin, r.msg.Seq)
	}
	return r, nil
}

// decoder reads fields off a body; the first failure sticks.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail() {
	if d.err == nil {
		d.err = errBadRecord
	}
	d.b = nil
}

func (d *decoder) byte() byte {
	if len(d.b) == 0 {
		d.fail()
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) string() string {
	n := d.uvarint()
	if d.err != nil || n > uint64(len(d.b)) {
		d.fail()
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}
