package main

import (
	"encoding/binary"
	"errors"
)

// Message is the part of chatr's proto.Message a store holds (copied, so
// this module imports nothing of chatr's).
type Message struct {
	Origin   string
	Seq      uint64
	Room     string
	Sender   string
	User     string
	Text     string
	Created  int64 // µs since 1970
	Ref      string
	Hidden   bool
	Replaces string
}

// appendBinary appends m's binary form: uvarint seq, varint created, a flags
// byte, then length-prefixed strings. About 25 bytes of framing for the
// bench's ~110 bytes of fields.
func appendBinary(b []byte, m *Message) []byte {
	b = binary.AppendUvarint(b, m.Seq)
	b = binary.AppendVarint(b, m.Created)
	var flags byte
	if m.Hidden {
		flags = 1
	}
	b = append(b, flags)
	for _, s := range [...]string{m.Origin, m.Room, m.Sender, m.User, m.Text, m.Ref, m.Replaces} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	return b
}

var errShort = errors.New("short message record")

// decodeBinary is the inverse of appendBinary.
func decodeBinary(b []byte, m *Message) error {
	var n int
	if m.Seq, n = binary.Uvarint(b); n <= 0 {
		return errShort
	}
	b = b[n:]
	if m.Created, n = binary.Varint(b); n <= 0 {
		return errShort
	}
	b = b[n:]
	if len(b) < 1 {
		return errShort
	}
	m.Hidden = b[0]&1 != 0
	b = b[1:]
	for _, p := range [...]*string{&m.Origin, &m.Room, &m.Sender, &m.User, &m.Text, &m.Ref, &m.Replaces} {
		l, n := binary.Uvarint(b)
		if n <= 0 || uint64(len(b)-n) < l {
			return errShort
		}
		*p = string(b[n : n+int(l)])
		b = b[n+int(l):]
	}
	return nil
}

// earlier orders messages as history lists them: by (created, origin, seq).
func earlier(a, b *Message) bool {
	if a.Created != b.Created {
		return a.Created < b.Created
	}
	if a.Origin != b.Origin {
		return a.Origin < b.Origin
	}
	return a.Seq < b.Seq
}

func reverse(ms []Message) {
	for i, j := 0, len(ms)-1; i < j; i, j = i+1, j-1 {
		ms[i], ms[j] = ms[j], ms[i]
	}
}
