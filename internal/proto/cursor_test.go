package proto

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
)

var lobby = CursorScope{Cluster: "chatr", Room: "lobby"}

// TestCursorRoundTrip is a property test: any vector of node ids survives an
// encode and decode in its own scope, whatever the number of origins and the
// size of the sequences.
func TestCursorRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(42, 7))
	for i := 0; i < 3000; i++ {
		v := Vector{}
		n := r.IntN(20) + 1
		if i%100 == 0 {
			n = r.IntN(maxCursorOrigins) + 1
		}
		for j := 0; j < n; j++ {
			var seq uint64
			switch r.IntN(4) {
			case 0:
				seq = r.Uint64N(128) // one varint byte, 0 included
			case 1:
				seq = r.Uint64N(1 << 20)
			case 2:
				seq = r.Uint64()
			default:
				seq = math.MaxUint64 - r.Uint64N(3)
			}
			v[randomNodeID(r)] = seq
		}
		scope := CursorScope{Cluster: fmt.Sprintf("c%d", r.IntN(3)), Room: fmt.Sprintf("room-%d", r.IntN(50))}
		s := EncodeCursor(scope, v)
		if s == "" {
			t.Fatalf("EncodeCursor(%v) = \"\" for a non-empty vector", v)
		}
		if strings.ContainsAny(s, "+/=\n ") {
			t.Fatalf("cursor %q is not URL-safe: it goes into ?since=", s)
		}
		got, err := DecodeCursor(scope, s)
		if err != nil {
			t.Fatalf("DecodeCursor(EncodeCursor(%v)) = %v", v, err)
		}
		if !reflect.DeepEqual(got, v) {
			t.Fatalf("DecodeCursor(EncodeCursor(%v)) = %v", v, got)
		}
		// The encoding is deterministic, whatever the map order.
		if again := EncodeCursor(scope, got); again != s {
			t.Fatalf("EncodeCursor is not deterministic: %q then %q", s, again)
		}
	}
}

func TestCursorEmpty(t *testing.T) {
	if s := EncodeCursor(lobby, Vector{}); s != "" {
		t.Errorf("EncodeCursor(empty) = %q, want \"\"", s)
	}
	if s := EncodeCursor(lobby, nil); s != "" {
		t.Errorf("EncodeCursor(nil) = %q, want \"\"", s)
	}
	// "" is the cursor of a room with no messages: it is valid in any scope.
	for _, scope := range []CursorScope{lobby, {}, {Cluster: "other", Room: "x"}} {
		v, err := DecodeCursor(scope, "")
		if err != nil || v == nil || len(v) != 0 {
			t.Errorf("DecodeCursor(%+v, \"\") = %v, %v; want an empty, usable vector", scope, v, err)
		}
		v["aaaaaaaaaaaa"] = 1 // the caller may fill it in
	}
}

// TestCursorRefused checks that a cursor that is not exactly one this
// cluster made for this room is refused with bad_request, never decoded into
// a vector that would replay the wrong messages.
func TestCursorRefused(t *testing.T) {
	v := Vector{"0123456789ab": 300, "aaaaaaaaaaaa": 1}
	good := EncodeCursor(lobby, v)
	raw, err := base64.RawURLEncoding.DecodeString(good)
	if err != nil {
		t.Fatal(err)
	}
	withCRC := func(body []byte) string { // a well-formed checksum over body
		b := binary.BigEndian.AppendUint32(append([]byte(nil), body...), crc32.ChecksumIEEE(body))
		return base64.RawURLEncoding.EncodeToString(b)
	}
	body := raw[:len(raw)-4]
	otherVersion := append([]byte{cursorVersion + 1}, body[1:]...)

	tests := []struct {
		name    string
		scope   CursorScope
		cursor  string
		mention string
	}{
		{"other cluster", CursorScope{Cluster: "prod", Room: "lobby"}, good, "cluster"},
		{"other room", CursorScope{Cluster: "chatr", Room: "lobby2"}, good, "room"},
		{"other room and cluster", CursorScope{Cluster: "x", Room: "y"}, good, ""},
		{"truncated by one char", lobby, good[:len(good)-1], ""},
		{"truncated by half", lobby, good[:len(good)/2], ""},
		{"one char", lobby, good[:1], ""},
		{"extra char", lobby, good + "A", ""},
		{"garbage base64", lobby, "!!!not-base64!!!", "malformed"},
		{"standard base64 padding", lobby, base64.StdEncoding.EncodeToString(raw), ""},
		{"spaces", lobby, " " + good, ""},
		{"message id instead", lobby, "0123456789ab-3", ""},
		{"short valid base64", lobby, "AAAA", "malformed"},
		{"unknown version", lobby, withCRC(otherVersion), "version"},
		{"trailing bytes", lobby, withCRC(append(append([]byte(nil), body...), 0)), "trailing"},
		{"origin count too big", lobby, withCRC(append(append([]byte(nil), body[:9]...), binary.AppendUvarint(nil, maxCursorOrigins+1)...)), "malformed"},
		{"origins missing", lobby, withCRC(append(append([]byte(nil), body[:9]...), 5)), "malformed"},
		{"seq missing", lobby, withCRC(append(append([]byte(nil), body[:9]...), append([]byte{1}, make([]byte, NodeIDLen/2)...)...)), "malformed"},
		{"repeated origin", lobby, withCRC(append(append(append([]byte(nil), body[:9]...), 2), bytesOf("0123456789ab", 1, "0123456789ab", 2)...)), "repeated"},
		{"far too long", lobby, strings.Repeat("A", 1<<20), "too long"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeCursor(tc.scope, tc.cursor)
			if err == nil {
				t.Fatalf("DecodeCursor(%+v, %.40q) = %v, want an error", tc.scope, tc.cursor, got)
			}
			if err.Code != CodeBadRequest {
				t.Errorf("code = %s, want bad_request", err.Code)
			}
			if got != nil {
				t.Errorf("a refused cursor still decoded to %v", got)
			}
			if tc.mention != "" && !strings.Contains(err.Message, tc.mention) {
				t.Errorf("message %q does not mention %q", err.Message, tc.mention)
			}
		})
	}
}

func bytesOf(pairs ...any) []byte {
	var b []byte
	for i := 0; i < len(pairs); i += 2 {
		id, _ := hex.DecodeString(pairs[i].(string))
		b = append(b, id...)
		b = binary.AppendUvarint(b, uint64(pairs[i+1].(int)))
	}
	return b
}

// TestCursorCorruptedByte flips every bit of every byte of a cursor: no
// single corruption may decode (the checksum catches it), so a client with a
// damaged cursor is told, not silently given the wrong messages.
func TestCursorCorruptedByte(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 9))
	for trial := 0; trial < 20; trial++ {
		v := randomVector(r, 6)
		v[randomNodeID(r)] = r.Uint64()
		good := EncodeCursor(lobby, v)
		raw, _ := base64.RawURLEncoding.DecodeString(good)
		for i := range raw {
			for bit := 0; bit < 8; bit++ {
				bad := append([]byte(nil), raw...)
				bad[i] ^= 1 << bit
				s := base64.RawURLEncoding.EncodeToString(bad)
				if got, err := DecodeCursor(lobby, s); err == nil {
					t.Fatalf("cursor with byte %d bit %d flipped decoded to %v (original %v)", i, bit, got, v)
				}
			}
		}
	}
}

// TestCursorCanonical checks that only the exact string EncodeCursor makes
// decodes: any other spelling of the same vector is refused. Two different
// cursor strings for one position would break a client that compares cursors
// and the fuzz property "decode then encode gives the same string".
func TestCursorCanonical(t *testing.T) {
	withCRC := func(body []byte) string {
		b := binary.BigEndian.AppendUint32(append([]byte(nil), body...), crc32.ChecksumIEEE(body))
		return base64.RawURLEncoding.EncodeToString(b)
	}
	header := func(n byte) []byte {
		b := []byte{cursorVersion}
		b = binary.BigEndian.AppendUint32(b, crc32.ChecksumIEEE([]byte(lobby.Cluster)))
		b = binary.BigEndian.AppendUint32(b, crc32.ChecksumIEEE([]byte(lobby.Room)))
		return append(b, n)
	}
	id1, _ := hex.DecodeString("0123456789ab")
	id2, _ := hex.DecodeString("aaaaaaaaaaaa")

	// A cursor of 22 bytes ends in a base64 character with 4 unused bits.
	good := EncodeCursor(lobby, Vector{"0123456789ab": 300})
	last := strings.IndexByte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", good[len(good)-1])
	sloppyTail := good[:len(good)-1] + string("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[last|1])

	tests := []struct {
		name   string
		cursor string
	}{
		{"unused base64 bits set", sloppyTail},
		{"newline inside", good[:2] + "\n" + good[2:]},
		{"carriage return at the end", good + "\r"},
		{"zero origins", withCRC(header(0))},
		{"origins out of order", withCRC(append(append(append(header(2), id2...), 1), append(id1, 1)...))},
		{"overlong varint", withCRC(append(append(header(1), id1...), 0x81, 0x00))},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.cursor == good {
				t.Fatalf("test setup: %q is the canonical cursor", tc.cursor)
			}
			v, err := DecodeCursor(lobby, tc.cursor)
			if err == nil && EncodeCursor(lobby, v) != tc.cursor {
				t.Errorf("DecodeCursor(%q) = %v, accepted; but that vector encodes as %q: a non-canonical cursor must be refused",
					tc.cursor, v, EncodeCursor(lobby, v))
			}
		})
	}
}

// TestCursorRoomScopeCollision: rooms "room29685295" and "room32060020" have
// the same CRC-32. A cursor of one must not decode in the other, or a client
// that reuses a cursor across rooms silently skips messages of the second.
func TestCursorRoomScopeCollision(t *testing.T) {
	a := CursorScope{Cluster: "chatr", Room: "room29685295"}
	b := CursorScope{Cluster: "chatr", Room: "room32060020"}
	if crc32.ChecksumIEEE([]byte(a.Room)) != crc32.ChecksumIEEE([]byte(b.Room)) {
		t.Fatal("test setup: the two room names no longer collide")
	}
	s := EncodeCursor(a, Vector{"0123456789ab": 10})
	if v, err := DecodeCursor(b, s); err == nil {
		t.Errorf("a cursor of room %s decoded in room %s as %v", a.Room, b.Room, v)
	}
}
