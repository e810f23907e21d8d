package proto

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"hash"
	"slices"
	"sync"
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

// CursorScope is where a cursor is valid: one room of one cluster, under
// one key. A cursor from another cluster or room is refused rather than
// replaying the wrong messages, and one not made with Key (forged, edited,
// or made by a node with another key) is refused.
type CursorScope struct {
	Cluster string
	Room    string
	// Key keys the cursor's MAC: every node that must accept a cursor holds
	// the key that made it (see hub.Options.CursorKey). 32 bytes; empty
	// makes EncodeCursor panic and DecodeCursor refuse every cursor.
	Key []byte

	// Set by Prepared: the scope's tag, the start of each of its MACs and
	// the pool of MACs of its key, found once for the many cursors of a
	// room.
	tag, prefix []byte
	macs        *sync.Pool
}

// Prepared returns the scope with its hashing done once: each cursor
// EncodeCursor or DecodeCursor then makes in it hashes only its own bytes
// (a room's live messages each carry one).
func (scope CursorScope) Prepared() CursorScope {
	if len(scope.Key) == 0 {
		return scope
	}
	scope.tag = scopeTag(scope)
	scope.prefix = scopePrefix(scope)
	scope.macs = macPool(scope.Key)
	return scope
}

// macScratch is an HMAC keyed with one key and a buffer for a cursor's
// body, used for one cursor at a time.
type macScratch struct {
	mac hash.Hash
	buf []byte
}

// macPools holds, for each cursor key, a sync.Pool of *macScratch: a
// cursor then costs no allocation and no HMAC key schedule (Reset brings
// back the keyed state). A node has one key; tests have a few.
var macPools sync.Map // string(key) -> *sync.Pool

// macPool returns the pool of key's MACs.
func macPool(key []byte) *sync.Pool {
	p, ok := macPools.Load(string(key))
	if !ok {
		k := bytes.Clone(key)
		p, _ = macPools.LoadOrStore(string(key), &sync.Pool{New: func() any {
			return &macScratch{mac: hmac.New(sha256.New, k)}
		}})
	}
	return p.(*sync.Pool)
}

// scratchFor returns a scratch of scope's key, reset, and its pool.
func scratchFor(scope CursorScope) (*sync.Pool, *macScratch) {
	pool := scope.macs
	if pool == nil {
		pool = macPool(scope.Key)
	}
	sc := pool.Get().(*macScratch)
	sc.mac.Reset()
	return pool, sc
}

// cursorVersion 3 replaced version 2's CRC-32, which anyone could compute,
// with a keyed MAC; cursors of version 2 are refused.
const cursorVersion = 3

// cursorMACLen is the MAC kept in a cursor: HMAC-SHA256 cut to 16 bytes,
// half the hash, the least RFC 2104 section 5 advises. A forger must guess
// 128 bits, one join per guess; all 32 would add 21 characters to every
// message frame and every ?since= URL.
const cursorMACLen = 16

// scopeTag binds a cursor to its cluster and room: 8 bytes of SHA-256, so no
// two room names share a tag by accident (a 32-bit checksum let some do).
// It is what tells "another room or cluster" apart from "forged"; the MAC
// binds the whole scope, so two rooms whose tags collide still refuse each
// other's cursors.
func scopeTag(scope CursorScope) []byte {
	if scope.tag != nil {
		return scope.tag
	}
	sum := sha256.Sum256([]byte("chatr-cursor\x00" + scope.Cluster + "\x00" + scope.Room))
	return sum[:8]
}

// cursorMAC appends the MAC of a cursor body in its scope to dst.
func cursorMAC(dst []byte, scope CursorScope, body []byte) []byte {
	pool, sc := scratchFor(scope)
	dst = appendMAC(dst, sc, scope, body)
	pool.Put(sc)
	return dst
}

// appendMAC appends the MAC of body in scope, made with sc, to dst.
func appendMAC(dst []byte, sc *macScratch, scope CursorScope, body []byte) []byte {
	if scope.prefix != nil {
		sc.mac.Write(scope.prefix)
	} else {
		sc.mac.Write(scopePrefix(scope))
	}
	sc.mac.Write(body)
	n := len(dst)
	return sc.mac.Sum(dst)[:n+cursorMACLen]
}

// scopePrefix is what the MAC of every cursor of scope begins with.
func scopePrefix(scope CursorScope) []byte {
	var b []byte
	b = binary.AppendUvarint(b, uint64(len(scope.Cluster)))
	b = append(b, scope.Cluster...)
	b = binary.AppendUvarint(b, uint64(len(scope.Room)))
	return append(b, scope.Room...)
}

// maxCursorOrigins bounds the work a hostile cursor can cause.
const maxCursorOrigins = 1024

// EncodeCursor encodes a room's version vector as an opaque cursor: version,
// a tag of the cluster and room, then (origin, seq) pairs in origin order,
// then a MAC of all that with the scope's key. The empty vector encodes as
// "". Every vector has exactly one spelling; DecodeCursor refuses any other.
func EncodeCursor(scope CursorScope, v Vector) string {
	return string(AppendCursor(nil, scope, v))
}

// AppendCursor appends EncodeCursor(scope, v) to dst.
func AppendCursor(dst []byte, scope CursorScope, v Vector) []byte {
	if len(v) == 0 {
		return dst
	}
	if len(scope.Key) == 0 {
		panic("proto: cursor scope without a key")
	}
	var on [8]string // a room's origins: the nodes that ever took a send in it
	origins := on[:0]
	for o := range v {
		origins = append(origins, o)
	}
	slices.Sort(origins)
	pool, sc := scratchFor(scope)
	defer pool.Put(sc)
	b := append(sc.buf[:0], cursorVersion)
	b = append(b, scopeTag(scope)...)
	b = binary.AppendUvarint(b, uint64(len(origins)))
	for _, o := range origins {
		var err error
		if len(o) != NodeIDLen {
			err = hex.ErrLength
		} else {
			b, err = hex.AppendDecode(b, []byte(o))
		}
		if err != nil {
			panic("proto: cursor origin is not a node id: " + o)
		}
		b = binary.AppendUvarint(b, v[o])
	}
	b = appendMAC(b, sc, scope, b)
	sc.buf = b
	return base64.RawURLEncoding.AppendEncode(dst, b)
}

// DecodeCursor decodes a cursor made by EncodeCursor for the same scope,
// key included. "" decodes as the empty vector.
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
	if err != nil || len(b) == 0 {
		return bad("malformed")
	}
	// The version and the tag are read before the MAC only to say why a
	// cursor is refused; nothing is taken from a cursor whose MAC fails.
	switch {
	case b[0] < cursorVersion:
		return bad("it was made by an earlier release; join with history")
	case b[0] != cursorVersion:
		return bad("unknown version")
	case len(b) < 1+8+1+cursorMACLen:
		return bad("malformed")
	}
	body, mac := b[:len(b)-cursorMACLen], b[len(b)-cursorMACLen:]
	switch {
	case string(body[1:9]) != string(scopeTag(scope)):
		return bad("it belongs to another room or cluster")
	case len(scope.Key) == 0 || !hmac.Equal(mac, cursorMAC(nil, scope, body)):
		return bad("it was not made here (edited, forged, or made under another key)")
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
