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

// testKey keys the test cursors.
var testKey = []byte("0123456789abcdef0123456789abcdef")

var lobby = CursorScope{Cluster: "chatr", Room: "lobby", Key: testKey}

// seal appends the MAC of body in scope: a cursor with any body that the
// key's holder could have made, so that the checks after the MAC are
// reached.
func seal(scope CursorScope, body []byte) string {
	b := append(append([]byte(nil), body...), cursorMAC(nil, scope, body)...)
	return base64.RawURLEncoding.EncodeToString(b)
}

// lastRelease is a cursor of lobby {0123456789ab: 300, aaaaaaaaaaaa: 1}
// exactly as the release before keyed cursors made it (version 2, CRC-32).
const lastRelease = "AtXOdrEvEu6_AgEjRWeJq6wCqqqqqqqqAUBVtwg"

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
		scope := CursorScope{Cluster: fmt.Sprintf("c%d", r.IntN(3)), Room: fmt.Sprintf("room-%d", r.IntN(50)), Key: testKey}
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
	body := raw[:len(raw)-cursorMACLen]
	otherVersion := append([]byte{cursorVersion + 1}, body[1:]...)
	withCRC := binary.BigEndian.AppendUint32(append([]byte(nil), body...), crc32.ChecksumIEEE(body))
	otherKey := lobby
	otherKey.Key = append([]byte(nil), testKey...)
	otherKey.Key[31] ^= 1
	noKey := lobby
	noKey.Key = nil
	// A MAC made for room lobby2 under the right key, on lobby's body.
	macOfLobby2 := base64.RawURLEncoding.EncodeToString(append(append([]byte(nil), body...),
		cursorMAC(nil, CursorScope{Cluster: "chatr", Room: "lobby2", Key: testKey}, body)...))
	seal := func(body []byte) string { return seal(lobby, body) }

	tests := []struct {
		name    string
		scope   CursorScope
		cursor  string
		mention string
	}{
		{"other cluster", CursorScope{Cluster: "prod", Room: "lobby", Key: testKey}, good, "cluster"},
		{"other room", CursorScope{Cluster: "chatr", Room: "lobby2", Key: testKey}, good, "room"},
		{"other room and cluster", CursorScope{Cluster: "x", Room: "y", Key: testKey}, good, ""},
		{"other key", otherKey, good, "not made here"},
		{"no key", noKey, good, "not made here"},
		{"MAC of another room", lobby, macOfLobby2, "not made here"},
		{"CRC-32 instead of the MAC", lobby, base64.RawURLEncoding.EncodeToString(withCRC), ""},
		{"the last release's", lobby, lastRelease, "earlier release"},
		{"version 0", lobby, seal(append([]byte{0}, body[1:]...)), "earlier release"},
		{"truncated by one char", lobby, good[:len(good)-1], ""},
		{"truncated by half", lobby, good[:len(good)/2], ""},
		{"MAC cut off", lobby, base64.RawURLEncoding.EncodeToString(body), ""},
		{"one char", lobby, good[:1], ""},
		{"extra char", lobby, good + "A", ""},
		{"garbage base64", lobby, "!!!not-base64!!!", "malformed"},
		{"standard base64 padding", lobby, base64.StdEncoding.EncodeToString(raw), ""},
		{"spaces", lobby, " " + good, ""},
		{"message id instead", lobby, "0123456789ab-3", ""},
		{"short valid base64", lobby, "AwAA", "malformed"},
		{"unknown version", lobby, seal(otherVersion), "version"},
		{"trailing bytes", lobby, seal(append(append([]byte(nil), body...), 0)), "trailing"},
		{"origin count too big", lobby, seal(append(append([]byte(nil), body[:9]...), binary.AppendUvarint(nil, maxCursorOrigins+1)...)), "malformed"},
		{"origins missing", lobby, seal(append(append([]byte(nil), body[:9]...), 5)), "malformed"},
		{"seq missing", lobby, seal(append(append([]byte(nil), body[:9]...), append([]byte{1}, make([]byte, NodeIDLen/2)...)...)), "malformed"},
		{"repeated origin", lobby, seal(append(append(append([]byte(nil), body[:9]...), 2), bytesOf("0123456789ab", 1, "0123456789ab", 2)...)), "repeated"},
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
// edit of one bit may decode (the MAC catches it), so a client with a
// damaged or edited cursor is told, not silently given the wrong messages.
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
	header := func(n byte) []byte {
		return append(append([]byte{cursorVersion}, scopeTag(lobby)...), n)
	}
	id1, _ := hex.DecodeString("0123456789ab")
	id2, _ := hex.DecodeString("aaaaaaaaaaaa")

	// A cursor of 34 bytes ends in a base64 character with 4 unused bits.
	good := EncodeCursor(lobby, Vector{"0123456789ab": 300})
	last := strings.IndexByte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", good[len(good)-1])
	sloppyTail := good[:len(good)-1] + string("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[last|1])

	tests := []struct {
		name    string
		cursor  string
		mention string
	}{
		{"unused base64 bits set", sloppyTail, "malformed"},
		{"newline inside", good[:2] + "\n" + good[2:], "canonical"},
		{"carriage return at the end", good + "\r", "canonical"},
		// Sealed with the key: only the check of the spelling refuses them.
		{"zero origins", seal(lobby, header(0)), "canonical"},
		{"origins out of order", seal(lobby, append(append(append(header(2), id2...), 1), append(id1, 1)...)), "canonical"},
		{"overlong varint", seal(lobby, append(append(header(1), id1...), 0x81, 0x00)), "canonical"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.cursor == good {
				t.Fatalf("test setup: %q is the canonical cursor", tc.cursor)
			}
			v, err := DecodeCursor(lobby, tc.cursor)
			if err == nil {
				t.Fatalf("DecodeCursor(%q) = %v, accepted; but that vector encodes as %q: a non-canonical cursor must be refused",
					tc.cursor, v, EncodeCursor(lobby, v))
			}
			if !strings.Contains(err.Message, tc.mention) {
				t.Errorf("refused as %q, want a reason that mentions %q", err.Message, tc.mention)
			}
		})
	}
}

// TestCursorRoomScopeCollision: rooms "room29685295" and "room32060020" have
// the same CRC-32. A cursor of one must not decode in the other, or a client
// that reuses a cursor across rooms silently skips messages of the second.
func TestCursorRoomScopeCollision(t *testing.T) {
	a := CursorScope{Cluster: "chatr", Room: "room29685295", Key: testKey}
	b := CursorScope{Cluster: "chatr", Room: "room32060020", Key: testKey}
	if crc32.ChecksumIEEE([]byte(a.Room)) != crc32.ChecksumIEEE([]byte(b.Room)) {
		t.Fatal("test setup: the two room names no longer collide")
	}
	s := EncodeCursor(a, Vector{"0123456789ab": 10})
	if v, err := DecodeCursor(b, s); err == nil {
		t.Errorf("a cursor of room %s decoded in room %s as %v", a.Room, b.Room, v)
	}
}

// TestCursorKeyed: a cursor decodes only under the key that made it (any
// copy of it); under a key that differs in any one bit, it is refused.
func TestCursorKeyed(t *testing.T) {
	v := Vector{"0123456789ab": 300, "aaaaaaaaaaaa": 1}
	good := EncodeCursor(lobby, v)
	same := lobby
	same.Key = append([]byte(nil), testKey...)
	if got, err := DecodeCursor(same, good); err != nil || !reflect.DeepEqual(got, v) {
		t.Fatalf("DecodeCursor under a copy of the key = %v, %v", got, err)
	}
	for i := range len(testKey) * 8 {
		other := lobby
		other.Key = append([]byte(nil), testKey...)
		other.Key[i/8] ^= 1 << (i % 8)
		if got, err := DecodeCursor(other, good); err == nil {
			t.Fatalf("a cursor decoded under a key with bit %d flipped: %v", i, got)
		}
		if EncodeCursor(other, v) == good {
			t.Fatalf("keys differing in bit %d make the same cursor", i)
		}
	}
}

// TestCursorWithoutKey: a scope without a key makes no cursor and takes
// none, but "" (a room with no messages) is still valid.
func TestCursorWithoutKey(t *testing.T) {
	noKey := CursorScope{Cluster: "chatr", Room: "lobby"}
	if _, err := DecodeCursor(noKey, EncodeCursor(lobby, Vector{"0123456789ab": 1})); err == nil {
		t.Error("a scope without a key took a cursor")
	}
	if v, err := DecodeCursor(noKey, ""); err != nil || len(v) != 0 {
		t.Errorf(`DecodeCursor(no key, "") = %v, %v`, v, err)
	}
	defer func() {
		if recover() == nil {
			t.Error("EncodeCursor without a key made a cursor")
		}
	}()
	EncodeCursor(noKey, Vector{"0123456789ab": 1})
}

// TestCursorOfTheLastRelease: a cursor the release before keyed cursors
// handed out is refused with the bad_request every refused cursor gets, so
// a client joins with history instead.
func TestCursorOfTheLastRelease(t *testing.T) {
	v, err := DecodeCursor(lobby, lastRelease)
	if err == nil {
		t.Fatalf("the last release's cursor decoded to %v", v)
	}
	if err.Code != CodeBadRequest || !strings.HasPrefix(err.Message, "cursor is not valid here: ") {
		t.Errorf("refused with %s %q, want bad_request \"cursor is not valid here: ...\"", err.Code, err.Message)
	}
}

// BenchmarkEncodeCursor and BenchmarkDecodeCursor, with the scope plain
// and prepared (as the hub's rooms hold it).
func BenchmarkEncodeCursor(b *testing.B) {
	v := Vector{"0123456789ab": 300, "aaaaaaaaaaaa": 1, "ffffffffffff": 1 << 40}
	for _, scope := range []CursorScope{lobby, lobby.Prepared()} {
		b.Run(fmt.Sprint("prepared=", scope.prefix != nil), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				EncodeCursor(scope, v)
			}
		})
	}
}

func BenchmarkDecodeCursor(b *testing.B) {
	s := EncodeCursor(lobby, Vector{"0123456789ab": 300, "aaaaaaaaaaaa": 1, "ffffffffffff": 1 << 40})
	for _, scope := range []CursorScope{lobby, lobby.Prepared()} {
		b.Run(fmt.Sprint("prepared=", scope.prefix != nil), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := DecodeCursor(scope, s); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestPreparedScope: a prepared scope makes and takes the same cursors as
// the plain one, and still refuses those of another room or key.
func TestPreparedScope(t *testing.T) {
	plain := CursorScope{Cluster: "chatr", Room: "lobby", Key: testKey}
	prep := plain.Prepared()
	for _, v := range []Vector{{"0123456789ab": 1}, {"0123456789ab": 300, "aaaaaaaaaaaa": 1 << 40}} {
		c := EncodeCursor(plain, v)
		if got := EncodeCursor(prep, v); got != c {
			t.Fatalf("prepared %s, plain %s", got, c)
		}
		if got, err := DecodeCursor(prep, c); err != nil || !got.Covers(v) || !v.Covers(got) {
			t.Fatalf("prepared decode of %s: %v %v", c, got, err)
		}
		other := CursorScope{Cluster: "chatr", Room: "other", Key: testKey}.Prepared()
		if _, err := DecodeCursor(other, c); err == nil {
			t.Fatal("a cursor of lobby decoded in another room")
		}
		otherKey := CursorScope{Cluster: "chatr", Room: "lobby", Key: []byte("another key of thirty-two bytes!")}.Prepared()
		if _, err := DecodeCursor(otherKey, c); err == nil {
			t.Fatal("a cursor decoded under another key")
		}
	}
}

// BenchmarkMessageFrame is the frame the hub makes of each message it fans
// out (a room of three origins, a prepared scope): through encoding/json,
// and with Frame (AppendFrame).
func BenchmarkMessageFrame(b *testing.B) {
	scope := lobby.Prepared()
	m := Message{Origin: "0a1b2c3d4e5f", Seq: 123456, Room: "room7", Sender: "sender-42",
		Text: "0123456789012345678901234567890123456789012345678901234567890123", Created: 1764700000123456}
	v := Vector{"0a1b2c3d4e5f": 123456, "111111111111": 98765, "222222222222": 4567}
	b.Run("encoding_json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = Encode(m.JSON("message", EncodeCursor(scope, v)))
		}
	})
	b.Run("AppendFrame", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = m.Frame("message", scope, v)
		}
	})
}
