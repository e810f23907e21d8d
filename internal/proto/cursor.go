package proto

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"hash/crc32"
	"sort"
)

// Vector is a version vector: origin node id -> highest sequence number.
type Vector map[string]uint64

// Clone returns a copy of v.
func (v Vector) Clone() Vector {
	c := make(Vector, len(v))
	for k, s := range v {
		c[k] = s
	}
	return c
}

// Merge raises v to at least o, origin by origin.
func (v Vector) Merge(o Vector) {
	for k, s := range o {
		if s > v[k] {
			v[k] = s
		}
	}
}

// Covers reports whether v holds everything o holds.
func (v Vector) Covers(o Vector) bool {
	for k, s := range o {
		if v[k] < s {
			return false
		}
	}
	return true
}

// CursorScope binds a cursor to one cluster and one room, so that a cursor
// from another cluster or room is refused rather than replaying the wrong
// messages.
type CursorScope struct {
	Cluster string
	Room    string
}

const cursorVersion = 2

// scopeTag binds a cursor to its cluster and room: 8 bytes of SHA-256, so no
// two room names share a tag by accident (a 32-bit checksum let some do).
func scopeTag(scope CursorScope) []byte {
	sum := sha256.Sum256([]byte("chatr-cursor\x00" + scope.Cluster + "\x00" + scope.Room))
	return sum[:8]
}

// maxCursorOrigins bounds the work a hostile cursor can cause.
const maxCursorOrigins = 1024

// EncodeCursor encodes a room's version vector as an opaque cursor: version,
// a tag of the cluster and room, then (origin, seq) pairs in origin order,
// then a checksum. The empty vector encodes as "". Every vector has exactly
// one spelling; DecodeCursor refuses any other.
func EncodeCursor(scope CursorScope, v Vector) string {
	if len(v) == 0 {
		return ""
	}
	origins := make([]string, 0, len(v))
	for o := range v {
		origins = append(origins, o)
	}
	sort.Strings(origins)
	b := make([]byte, 0, 9+len(v)*(NodeIDLen/2+4)+4)
	b = append(b, cursorVersion)
	b = append(b, scopeTag(scope)...)
	b = binary.AppendUvarint(b, uint64(len(origins)))
	for _, o := range origins {
		raw, err := hex.DecodeString(o)
		if err != nil || len(raw) != NodeIDLen/2 {
			panic("proto: cursor origin is not a node id: " + o)
		}
		b = append(b, raw...)
		b = binary.AppendUvarint(b, v[o])
	}
	b = binary.BigEndian.AppendUint32(b, crc32.ChecksumIEEE(b))
	return base64.RawURLEncoding.EncodeToString(b)
}

// DecodeCursor decodes a cursor made by EncodeCursor for the same scope.
// "" decodes as the empty vector.
func DecodeCursor(scope CursorScope, s string) (Vector, *Error) {
	v := Vector{}
	if s == "" {
		return v, nil
	}
	bad := func(why string) (Vector, *Error) {
		return nil, Errorf(CodeBadRequest, "cursor is not valid here: %s", why)
	}
	if len(s) > 4*maxCursorOrigins*16 {
		return bad("too long")
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	if err != nil || len(b) < 1+8+1+4 {
		return bad("malformed")
	}
	body, sum := b[:len(b)-4], binary.BigEndian.Uint32(b[len(b)-4:])
	if crc32.ChecksumIEEE(body) != sum {
		return bad("checksum mismatch")
	}
	if body[0] != cursorVersion {
		return bad("unknown version")
	}
	if string(body[1:9]) != string(scopeTag(scope)) {
		return bad("it belongs to another room or cluster")
	}
	p := body[9:]
	n, k := binary.Uvarint(p)
	if k <= 0 || n > maxCursorOrigins {
		return bad("malformed")
	}
	p = p[k:]
	for i := uint64(0); i < n; i++ {
		if len(p) < NodeIDLen/2 {
			return bad("malformed")
		}
		origin := hex.EncodeToString(p[:NodeIDLen/2])
		p = p[NodeIDLen/2:]
		seq, k := binary.Uvarint(p)
		if k <= 0 {
			return bad("malformed")
		}
		p = p[k:]
		if _, dup := v[origin]; dup {
			return bad("repeated origin")
		}
		v[origin] = seq
	}
	if len(p) != 0 {
		return bad("trailing bytes")
	}
	// One spelling per vector: anything else (origins out of order or
	// repeated, overlong numbers, stray bits or characters) is forged.
	if EncodeCursor(scope, v) != s {
		return bad("not in canonical form")
	}
	return v, nil
}
