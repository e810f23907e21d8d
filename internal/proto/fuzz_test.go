package proto

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

var errorCodes = map[string]bool{
	CodeBadRequest: true, CodeHelloRequired: true, CodeUnauthorized: true, CodeNotJoined: true,
	CodeTooLarge: true, CodeRateLimited: true, CodeUnavailable: true, CodeInternal: true,
}

// FuzzDecodeInbound feeds arbitrary frames to the decoder. It must never
// panic; what it accepts must satisfy every rule of docs/protocol.md and decode
// the same once encoded again; what it refuses gets a protocol error code.
func FuzzDecodeInbound(f *testing.F) {
	for _, s := range []string{
		`{"type":"hello","name":"Ada"}`,
		`{"type":"hello","name":"  Zoë ","token":"t"}`,
		`{"type":"join","room":"lobby"}`,
		`{"type":"join","room":"lobby","history":1001}`,
		`{"type":"join","room":"lobby","history":-1}`,
		`{"type":"join","room":"lobby","since":"AQAAAAAAAAAA"}`,
		`{"type":"leave","room":"lobby"}`,
		`{"type":"send","room":"lobby","text":"hi","ref":"1"}`,
		`{"type":"send","room":"lobby","text":"","ref":"1"}`,
		`{"type":"send","room":"lobby","text":"\ud800","ref":"1"}`,
		`{"type":"send","room":"Lobby","text":5,"ref":[]}`,
		`{"type":"ping"}`,
		`{"type":"shout","ref":"x"}`,
		`{"type":null}`,
		`{}`, `[]`, `null`, `"x"`, `1e999`, ``, `{`, `{"type":"ping"}{}`,
		"{\"type\":\"send\",\"room\":\"lobby\",\"text\":\"\xff\"}",
		`{"type":"hello","name":"` + strings.Repeat("é", 33) + `"}`,
		`{"type":"send","room":"` + strings.Repeat("a", 65) + `","text":"x"}`,
		`{"type":"join","room":"lobby","history":1e3}`,
		`{"type":"join","room":"lobby","history":9223372036854775808}`,
		`{"type":"send","type":"ping"}`,
		`{"TYPE":"send","Room":"lobby","te\u0078t":"hi","ref":"1","x":{"a":[1,2]}}`,
		`{"type":"send","room":"lobby","text":"hi"} x`,
		`{"type":"send","ref":"\ud800\u00e9"}`,
		"{\"typ\xffe\":\"ping\"}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		// decodeWire reads what encoding/json reads, and refuses what it
		// refuses.
		if trimmed := bytes.TrimSpace(data); len(trimmed) > 0 && trimmed[0] == '{' {
			var got, want inboundWire
			gerr, werr := decodeWire(trimmed, &got), json.Unmarshal(trimmed, &want)
			if (gerr == nil) != (werr == nil) {
				t.Fatalf("decodeWire: %v, encoding/json: %v", gerr, werr)
			}
			if gerr == nil && !reflect.DeepEqual(got, want) {
				t.Fatalf("decodeWire read\n%+v\nencoding/json\n%+v", got, want)
			}
		}
		in, err := DecodeInbound(data)
		if utf8.RuneCountInString(in.Ref) > MaxRefLen || !utf8.ValidString(in.Ref) {
			t.Fatalf("ref %q escapes the limits", in.Ref)
		}
		if err != nil {
			if !errorCodes[err.Code] || err.Message == "" {
				t.Fatalf("error %+v: unknown code or no message", err)
			}
			var ef ErrorFrame
			if jerr := json.Unmarshal(EncodeError(in.Ref, err), &ef); jerr != nil || ef.Code != err.Code {
				t.Fatalf("error frame does not round-trip: %v", jerr)
			}
			return
		}
		switch in.Type {
		case TypeHello:
			if in.Name == "" && in.Token != "" {
				break // the token names the client (auth on)
			}
			if name, e := CleanName(in.Name); e != nil || name != in.Name {
				t.Fatalf("accepted hello name %q: %v", in.Name, e)
			}
			// Peers take what a node stores (CheckName).
			if e := CheckName(in.Name); e != nil {
				t.Fatalf("peers would refuse hello name %q: %v", in.Name, e)
			}
		case TypeJoin, TypeLeave, TypeSend:
			if e := CheckRoom(in.Room); e != nil {
				t.Fatalf("accepted %s room %q: %v", in.Type, in.Room, e)
			}
			if in.Type == TypeSend {
				if e := CheckText(in.Text); e != nil {
					t.Fatalf("accepted text %q: %v", in.Text, e)
				}
			}
			if in.History != nil && (*in.History < 0 || *in.History > MaxHistory) {
				t.Fatalf("accepted history %d", *in.History)
			}
		case TypePing:
		default:
			t.Fatalf("accepted unknown type %q", in.Type)
		}
		// What was accepted means the same once sent again.
		again, err := DecodeInbound(Encode(in))
		if err != nil {
			t.Fatalf("re-encoded %+v is refused: %v", in, err)
		}
		if !sameInbound(in, again) {
			t.Fatalf("re-encoded frame decodes as %+v, want %+v", again, in)
		}
	})
}

// FuzzDecodeCursor feeds arbitrary cursors and scopes to the decoder. It must
// never panic; a cursor it accepts is exactly the one EncodeCursor makes for
// that vector and scope, and it never decodes under another room or key.
// Since no mutation gets past the MAC, each input is also tried sealed with
// the key (as if its holder had made it), so the parser behind the MAC is
// fuzzed too.
func FuzzDecodeCursor(f *testing.F) {
	add := func(cluster, room string, v Vector) {
		f.Add(cluster, room, room+"x", EncodeCursor(CursorScope{Cluster: cluster, Room: room, Key: testKey}, v))
	}
	add("chatr", "lobby", Vector{"0123456789ab": 1})
	add("chatr", "lobby", Vector{"0123456789ab": 300, "aaaaaaaaaaaa": 1, "ffffffffffff": 1 << 40})
	add("chatr", "r", Vector{"000000000000": 0})
	add("", "", Vector{"deadbeef0001": 18446744073709551615})
	add("prod", "a.b-c_d", Vector{"0123456789ab": 127, "0123456789ac": 128, "0123456789ad": 16384})
	f.Add("chatr", "lobby", "lobby", "")
	f.Add("chatr", "lobby", "other", "AQ")
	f.Add("chatr", "lobby", "other", "!!!")
	f.Add("chatr", "lobby", "other", "AwAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	f.Add("chatr", "lobby", "other", lastRelease)
	otherKey := append([]byte(nil), testKey...)
	otherKey[0] ^= 0x80
	f.Fuzz(func(t *testing.T, cluster, room, otherRoom, s string) {
		scope := CursorScope{Cluster: cluster, Room: room, Key: testKey}
		check := func(s string) {
			v, err := DecodeCursor(scope, s)
			if err != nil {
				if v != nil || err.Code != CodeBadRequest {
					t.Fatalf("refused cursor gave %v, %+v", v, err)
				}
				return
			}
			if got := EncodeCursor(scope, v); got != s {
				t.Fatalf("DecodeCursor(%q) = %v, which encodes as %q", s, v, got)
			}
			if s == "" {
				return
			}
			if w, err := DecodeCursor(CursorScope{Cluster: cluster, Room: otherRoom, Key: testKey}, s); err == nil && otherRoom != room {
				t.Fatalf("cursor of room %q decoded in room %q as %v", room, otherRoom, w)
			}
			if w, err := DecodeCursor(CursorScope{Cluster: cluster, Room: room, Key: otherKey}, s); err == nil {
				t.Fatalf("cursor decoded under another key as %v", w)
			}
		}
		check(s)
		if b, err := base64.RawURLEncoding.DecodeString(s); err == nil && len(b) > cursorMACLen {
			check(seal(scope, b[:len(b)-cursorMACLen]))
		}
	})
}

// FuzzMessageFrame: AppendFrame makes valid JSON that decodes to what
// encoding/json makes of m.JSON, whatever the strings hold (quotes,
// controls, <>&, U+2028, invalid UTF-8), and the same bytes when no string
// needs escaping.
func FuzzMessageFrame(f *testing.F) {
	f.Add("lobby", "ann", "hello", "", "", "message", uint64(1), int64(1700000000000000), true)
	f.Add("a\"b", "<b>&", "line\nbreak\u2028\t\x00", "0a1b2c3d4e5f-9", "user-1", "", uint64(1<<53), int64(-1), false)
	f.Add("\xff\xfe", "\xc3", "é\xed\xa0\x80", "x", "\u007f", "history", uint64(0), int64(0), true)
	f.Fuzz(func(t *testing.T, room, sender, text, replaces, user, typ string, seq uint64, created int64, cursor bool) {
		m := Message{Origin: "0a1b2c3d4e5f", Seq: seq, Room: room, Sender: sender, Text: text,
			Created: created % (1 << 50), Replaces: replaces, User: user}
		var v Vector
		if cursor {
			v = Vector{"0a1b2c3d4e5f": seq, "ffffffffffff": 7}
		}
		got := m.AppendFrame([]byte("prefix"), typ, lobby, v)
		if !bytes.HasPrefix(got, []byte("prefix")) {
			t.Fatalf("dst not kept: %q", got)
		}
		got = got[len("prefix"):]
		want, err := json.Marshal(m.JSON(typ, EncodeCursor(lobby, v)))
		if err != nil {
			t.Fatal(err)
		}
		if !json.Valid(got) {
			t.Fatalf("not JSON: %s", got)
		}
		var a, b map[string]any
		if err := json.Unmarshal(got, &a); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(want, &b); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("AppendFrame decodes to\n%v\nencoding/json to\n%v", a, b)
		}
		plain := func(s string) bool {
			for i := 0; i < len(s); i++ {
				if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
					return false
				}
			}
			return true
		}
		if plain(room+sender+text+replaces+user+typ) && !bytes.Equal(got, want) {
			t.Fatalf("AppendFrame\n%s\nencoding/json\n%s", got, want)
		}
	})
}

// FuzzPresenceFrames: EncodeJoined and EncodePresence make valid JSON that
// decodes to what encoding/json makes of Joined and Presence.
func FuzzPresenceFrames(f *testing.F) {
	f.Add("lobby", "ann", "0a1b2c3d4e5f", "", "bob", "ffffffffffff", "u1", 3)
	f.Add("<&>\"", "\xff", "\u2028", "\x00", "", "", "", 0)
	f.Fuzz(func(t *testing.T, room, n1, node1, user1, n2, node2, user2 string, count int) {
		var people []Person
		for i := range count % 5 {
			people = append(people, Person{Name: n1, Node: node1, User: user1}, Person{Name: n2 + fmt.Sprint(i), Node: node2, User: user2})
		}
		same := func(got []byte, v any) {
			want, err := json.Marshal(v)
			if err != nil {
				t.Fatal(err)
			}
			var a, b any
			if err := json.Unmarshal(got, &a); err != nil {
				t.Fatalf("not JSON: %s: %v", got, err)
			}
			if err := json.Unmarshal(want, &b); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(a, b) {
				t.Fatalf("got\n%s\nencoding/json\n%s", got, want)
			}
		}
		same(EncodeJoined(room, people), Joined{Type: "joined", Room: room, Presence: people})
		left := people
		if len(left) > 0 {
			left = left[1:]
		}
		same(EncodePresence(room, people, left), Presence{Type: "presence", Room: room, Joined: people, Left: left})
		same(EncodePresence(room, []Person{}, nil), Presence{Type: "presence", Room: room, Joined: []Person{}})
	})
}
