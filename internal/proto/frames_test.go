package proto

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

func intp(n int) *int { return &n }

// TestDecodeInboundValid checks that every client frame of docs/protocol.md
// decodes into the fields a handler relies on.
func TestDecodeInboundValid(t *testing.T) {
	long32 := strings.Repeat("é", MaxNameLen) // 32 characters, 64 bytes
	room64 := strings.Repeat("a", MaxRoomLen)
	text4096 := strings.Repeat("x", MaxTextBytes)
	ref64 := strings.Repeat("r", MaxRefLen)
	tests := []struct {
		name  string
		frame string
		want  Inbound
	}{
		{"hello", `{"type":"hello","name":"Ada"}`, Inbound{Type: TypeHello, Name: "Ada"}},
		{"hello name trimmed", `{"type":"hello","name":"  Ada Lovelace \t"}`, Inbound{Type: TypeHello, Name: "Ada Lovelace"}},
		{"hello with token", `{"type":"hello","name":"a","token":"t0k"}`, Inbound{Type: TypeHello, Name: "a", Token: "t0k"}},
		{"hello 32 multibyte chars", `{"type":"hello","name":"` + long32 + `"}`, Inbound{Type: TypeHello, Name: long32}},
		{"hello punctuation allowed", `{"type":"hello","name":"a_b-c.d 9"}`, Inbound{Type: TypeHello, Name: "a_b-c.d 9"}},
		{"hello other scripts", `{"type":"hello","name":"日本語 Ωμέγα"}`, Inbound{Type: TypeHello, Name: "日本語 Ωμέγα"}},
		{"join default history", `{"type":"join","room":"lobby"}`, Inbound{Type: TypeJoin, Room: "lobby"}},
		{"join history", `{"type":"join","room":"lobby","history":10}`, Inbound{Type: TypeJoin, Room: "lobby", History: intp(10)}},
		{"join history zero", `{"type":"join","room":"lobby","history":0}`, Inbound{Type: TypeJoin, Room: "lobby", History: intp(0)}},
		{"join history max", `{"type":"join","room":"lobby","history":1000}`, Inbound{Type: TypeJoin, Room: "lobby", History: intp(MaxHistory)}},
		{"join history clamped", `{"type":"join","room":"lobby","history":1001}`, Inbound{Type: TypeJoin, Room: "lobby", History: intp(MaxHistory)}},
		{"join history huge clamped", `{"type":"join","room":"lobby","history":99999999}`, Inbound{Type: TypeJoin, Room: "lobby", History: intp(MaxHistory)}},
		{"join history null", `{"type":"join","room":"lobby","history":null}`, Inbound{Type: TypeJoin, Room: "lobby"}},
		{"join since", `{"type":"join","room":"r.1_x-y","since":"AbC"}`, Inbound{Type: TypeJoin, Room: "r.1_x-y", Since: "AbC"}},
		{"join 64 char room", `{"type":"join","room":"` + room64 + `"}`, Inbound{Type: TypeJoin, Room: room64}},
		{"leave", `{"type":"leave","room":"lobby"}`, Inbound{Type: TypeLeave, Room: "lobby"}},
		{"send", `{"type":"send","room":"lobby","text":"hi","ref":"c1"}`, Inbound{Type: TypeSend, Room: "lobby", Text: "hi", Ref: "c1"}},
		{"send without ref", `{"type":"send","room":"lobby","text":"hi"}`, Inbound{Type: TypeSend, Room: "lobby", Text: "hi"}},
		{"send 4096 bytes", `{"type":"send","room":"lobby","text":"` + text4096 + `","ref":"` + ref64 + `"}`, Inbound{Type: TypeSend, Room: "lobby", Text: text4096, Ref: ref64}},
		{"send text kept verbatim", `{"type":"send","room":"lobby","text":"  <img src=x onerror=alert(1)>\n"}`, Inbound{Type: TypeSend, Room: "lobby", Text: "  <img src=x onerror=alert(1)>\n"}},
		{"send escaped unicode", `{"type":"send","room":"lobby","text":"\u00e9\ud83d\ude00"}`, Inbound{Type: TypeSend, Room: "lobby", Text: "é😀"}},
		// docs/protocol.md: a ref is at most 64 characters, not bytes.
		{"send ref 64 multibyte characters", `{"type":"send","room":"lobby","text":"hi","ref":"` + strings.Repeat("é", MaxRefLen) + `"}`, Inbound{Type: TypeSend, Room: "lobby", Text: "hi", Ref: strings.Repeat("é", MaxRefLen)}},
		{"ping", `{"type":"ping"}`, Inbound{Type: TypePing}},
		{"surrounding whitespace", " \n\t{\"type\":\"ping\"}\r\n ", Inbound{Type: TypePing}},
		{"null fields are absent", `{"type":"ping","ref":null,"name":null}`, Inbound{Type: TypePing}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeInbound([]byte(tc.frame))
			if err != nil {
				t.Fatalf("DecodeInbound(%.80q) = error %v, want ok", tc.frame, err)
			}
			if !sameInbound(got, tc.want) {
				t.Fatalf("DecodeInbound(%.80q) = %+v (history %s), want %+v (history %s)",
					tc.frame, got, histStr(got.History), tc.want, histStr(tc.want.History))
			}
		})
	}
}

func sameInbound(a, b Inbound) bool {
	if (a.History == nil) != (b.History == nil) || a.History != nil && *a.History != *b.History {
		return false
	}
	a.History, b.History = nil, nil
	return a == b
}

func histStr(h *int) string {
	if h == nil {
		return "nil"
	}
	b, _ := json.Marshal(*h)
	return string(b)
}

// TestDecodeInboundErrors checks that every bad frame gets the error code of
// docs/protocol.md, and that the ref of a send is echoed whenever it was readable,
// so the client can match the error to what it sent.
func TestDecodeInboundErrors(t *testing.T) {
	tests := []struct {
		name    string
		frame   string
		code    string
		ref     string // the ref the error must answer
		mention string // a word the message for people must hold
	}{
		// Not a JSON object at all.
		{"empty", ``, CodeBadRequest, "", "JSON object"},
		{"only spaces", "   \n", CodeBadRequest, "", "JSON object"},
		{"plain text", `hello`, CodeBadRequest, "", "JSON object"},
		{"truncated object", `{"type":"ping"`, CodeBadRequest, "", "JSON"},
		{"broken JSON", `{"type":}`, CodeBadRequest, "", "JSON"},
		{"trailing garbage", `{"type":"ping"} x`, CodeBadRequest, "", "JSON"},
		{"two objects", `{"type":"ping"}{"type":"ping"}`, CodeBadRequest, "", "JSON"},
		{"array", `[{"type":"ping"}]`, CodeBadRequest, "", "JSON object"},
		{"string", `"ping"`, CodeBadRequest, "", "JSON object"},
		{"number", `42`, CodeBadRequest, "", "JSON object"},
		{"null", `null`, CodeBadRequest, "", "JSON object"},
		{"invalid UTF-8 outside strings", "{\"type\":\"ping\"}\xff", CodeBadRequest, "", "UTF-8"},
		// The type.
		{"no type", `{}`, CodeBadRequest, "", "type"},
		{"blank type", `{"type":""}`, CodeBadRequest, "", "type"},
		{"null type", `{"type":null}`, CodeBadRequest, "", "type"},
		{"numeric type", `{"type":1}`, CodeBadRequest, "", ""},
		{"unknown type", `{"type":"shout"}`, CodeBadRequest, "", "shout"},
		{"type is case sensitive", `{"type":"PING"}`, CodeBadRequest, "", "PING"},
		{"unknown type echoes ref", `{"type":"shout","ref":"r1"}`, CodeBadRequest, "r1", ""},
		{"server frame type from a client", `{"type":"welcome"}`, CodeBadRequest, "", "welcome"},
		// hello.
		{"hello without name", `{"type":"hello"}`, CodeBadRequest, "", "name"},
		{"hello null name", `{"type":"hello","name":null}`, CodeBadRequest, "", "name"},
		{"hello blank name", `{"type":"hello","name":" \t "}`, CodeBadRequest, "", "name"},
		{"hello name 33 characters", `{"type":"hello","name":"` + strings.Repeat("n", 33) + `"}`, CodeBadRequest, "", "33"},
		{"hello name 33 multibyte characters", `{"type":"hello","name":"` + strings.Repeat("é", 33) + `"}`, CodeBadRequest, "", "33"},
		{"hello name with angle bracket", `{"type":"hello","name":"<b>"}`, CodeBadRequest, "", "name"},
		{"hello name with slash", `{"type":"hello","name":"a/b"}`, CodeBadRequest, "", "name"},
		{"hello name with emoji", `{"type":"hello","name":"ada 😀"}`, CodeBadRequest, "", "name"},
		{"hello name with newline inside", `{"type":"hello","name":"a\nb"}`, CodeBadRequest, "", "name"},
		{"hello name with control char", `{"type":"hello","name":"a\u0000b"}`, CodeBadRequest, "", "name"},
		{"hello name is a number", `{"type":"hello","name":5}`, CodeBadRequest, "", "name"},
		{"hello name is an object", `{"type":"hello","name":{"first":"a"}}`, CodeBadRequest, "", "name"},
		{"hello token is a number", `{"type":"hello","name":"a","token":5}`, CodeBadRequest, "", "token"},
		// join and leave.
		{"join without room", `{"type":"join"}`, CodeBadRequest, "", "room"},
		{"join empty room", `{"type":"join","room":""}`, CodeBadRequest, "", "room"},
		{"join uppercase room", `{"type":"join","room":"Lobby"}`, CodeBadRequest, "", "room"},
		{"join room with space", `{"type":"join","room":"the lobby"}`, CodeBadRequest, "", "room"},
		{"join room with slash", `{"type":"join","room":"a/b"}`, CodeBadRequest, "", "room"},
		{"join room with accent", `{"type":"join","room":"café"}`, CodeBadRequest, "", "room"},
		{"join room 65 characters", `{"type":"join","room":"` + strings.Repeat("a", 65) + `"}`, CodeBadRequest, "", "64"},
		{"join room is a number", `{"type":"join","room":7}`, CodeBadRequest, "", "room"},
		{"join since is a number", `{"type":"join","room":"lobby","since":7}`, CodeBadRequest, "", "since"},
		{"join negative history", `{"type":"join","room":"lobby","history":-1}`, CodeBadRequest, "", "history"},
		{"join fractional history", `{"type":"join","room":"lobby","history":1.5}`, CodeBadRequest, "", "history"},
		{"join history as string", `{"type":"join","room":"lobby","history":"10"}`, CodeBadRequest, "", "history"},
		{"join history as bool", `{"type":"join","room":"lobby","history":true}`, CodeBadRequest, "", "history"},
		{"leave without room", `{"type":"leave"}`, CodeBadRequest, "", "room"},
		{"leave bad room", `{"type":"leave","room":"A!"}`, CodeBadRequest, "", "room"},
		{"leave room is a list", `{"type":"leave","room":["lobby"]}`, CodeBadRequest, "", "room"},
		// send, with the ref echoed.
		{"send without text", `{"type":"send","room":"lobby","ref":"r2"}`, CodeBadRequest, "r2", "text"},
		{"send empty text", `{"type":"send","room":"lobby","text":"","ref":"r3"}`, CodeBadRequest, "r3", "text"},
		{"send 4097 bytes", `{"type":"send","room":"lobby","text":"` + strings.Repeat("x", 4097) + `","ref":"r4"}`, CodeTooLarge, "r4", "4097"},
		{"send 4097 bytes of multibyte text", `{"type":"send","room":"lobby","text":"` + strings.Repeat("€", 1365) + `xx","ref":"r4"}`, CodeTooLarge, "r4", ""},
		// The ref is readable even though the text is not UTF-8: docs/protocol.md
		// answers a send with an ack or an error "with the same ref", and a
		// client waits on that ref.
		{"send text invalid UTF-8 in the raw frame", "{\"type\":\"send\",\"room\":\"lobby\",\"text\":\"a\xffb\",\"ref\":\"r5\"}", CodeBadRequest, "r5", "UTF-8"},
		{"send text is a number", `{"type":"send","room":"lobby","text":5,"ref":"r6"}`, CodeBadRequest, "r6", "text"},
		{"send without room", `{"type":"send","text":"hi","ref":"r7"}`, CodeBadRequest, "r7", "room"},
		{"send bad room", `{"type":"send","room":"NO","text":"hi","ref":"r8"}`, CodeBadRequest, "r8", "room"},
		{"send room is a number", `{"type":"send","room":1,"text":"hi","ref":"r9"}`, CodeBadRequest, "r9", "room"},
		{"ref is a number", `{"type":"send","room":"lobby","text":"hi","ref":5}`, CodeBadRequest, "", "ref"},
		{"ref 65 characters", `{"type":"send","room":"lobby","text":"hi","ref":"` + strings.Repeat("r", 65) + `"}`, CodeBadRequest, "", "ref"},
		{"ref on a frame without type", `{"ref":"r10"}`, CodeBadRequest, "r10", "type"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeInbound([]byte(tc.frame))
			if err == nil {
				t.Fatalf("DecodeInbound(%.80q) = %+v, want error %s", tc.frame, got, tc.code)
			}
			if err.Code != tc.code {
				t.Errorf("DecodeInbound(%.80q) code = %q (%s), want %q", tc.frame, err.Code, err.Message, tc.code)
			}
			if got.Ref != tc.ref {
				t.Errorf("DecodeInbound(%.80q) ref = %q, want %q echoed", tc.frame, got.Ref, tc.ref)
			}
			if err.Message == "" {
				t.Errorf("DecodeInbound(%.80q): error has no message for people", tc.frame)
			}
			if tc.mention != "" && !strings.Contains(err.Message, tc.mention) {
				t.Errorf("DecodeInbound(%.80q) message = %q, want it to mention %q", tc.frame, err.Message, tc.mention)
			}
			// An error answer is always a valid error frame.
			var ef ErrorFrame
			if jerr := json.Unmarshal(EncodeError(got.Ref, err), &ef); jerr != nil || ef.Type != "error" || ef.Code != tc.code || ef.Ref != tc.ref {
				t.Errorf("EncodeError = %+v (%v), want type error, code %q, ref %q", ef, jerr, tc.code, tc.ref)
			}
		})
	}
}

func TestEncodeError(t *testing.T) {
	e := Errorf(CodeNotJoined, "join %s first", "lobby")
	if got, want := string(EncodeError("r1", e)), `{"type":"error","ref":"r1","code":"not_joined","message":"join lobby first"}`; got != want {
		t.Errorf("EncodeError = %s, want %s", got, want)
	}
	// Without a ref the field is left out, not sent as "".
	if got, want := string(EncodeError("", e)), `{"type":"error","code":"not_joined","message":"join lobby first"}`; got != want {
		t.Errorf("EncodeError = %s, want %s", got, want)
	}
	if got := e.Error(); got != "not_joined: join lobby first" {
		t.Errorf("Error() = %q", got)
	}
	if string(Pong) != `{"type":"pong"}` {
		t.Errorf("Pong = %s", Pong)
	}
}

// TestServerFramesWire pins the field names clients read.
func TestServerFramesWire(t *testing.T) {
	tests := []struct {
		frame any
		want  string
	}{
		{Welcome{Type: "welcome", Node: "n", Session: "s", Name: "a", Nodes: []Member{{ID: "n", Name: "x", HTTP: "h:1"}}, Engine: "local"},
			`{"type":"welcome","node":"n","session":"s","name":"a","nodes":[{"id":"n","name":"x","http":"h:1"}],"engine":"local"}`},
		{Joined{Type: "joined", Room: "lobby", Presence: []Person{{Name: "a", Node: "n"}}},
			`{"type":"joined","room":"lobby","presence":[{"name":"a","node":"n"}]}`},
		{Synced{Type: "synced", Room: "lobby", Cursor: "", Truncated: false},
			`{"type":"synced","room":"lobby","cursor":"","truncated":false}`},
		{Presence{Type: "presence", Room: "lobby", Joined: []Person{}, Left: []Person{{Name: "b", Node: "m"}}},
			`{"type":"presence","room":"lobby","joined":[],"left":[{"name":"b","node":"m"}]}`},
		{Left{Type: "left", Room: "lobby"}, `{"type":"left","room":"lobby"}`},
		{Ack{Type: "ack", Ref: "r", ID: "0123456789ab-1", Created: "x"}, `{"type":"ack","ref":"r","id":"0123456789ab-1","created":"x"}`},
	}
	for _, tc := range tests {
		if got := string(Encode(tc.frame)); got != tc.want {
			t.Errorf("Encode(%T) = %s, want %s", tc.frame, got, tc.want)
		}
	}
}

// BenchmarkDecodeInbound is the decode of each send a client makes.
func BenchmarkDecodeInbound(b *testing.B) {
	frame := []byte(`{"type":"send","room":"room7","text":"0123456789012345678901234567890123456789012345678901234567890123","ref":"c17-123456"}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeInbound(frame); err != nil {
			b.Fatal(err)
		}
	}
}

// A frame's strings decode as encoding/json decodes them: escapes, lone
// surrogates (U+FFFD), NUL. (Raw bad UTF-8 refuses the frame.)
func TestDecodeInboundStringsAsEncodingJSON(t *testing.T) {
	for _, raw := range []string{`"hi"`, `"\ud800"`, `"\ud800\udc00"`, `"\udc00x"`, `"\ud800\u0041"`,
		`"a\u0000b"`, `"tab\there \"q\" \\ \/ \u00e9"`, `"é ☃ 𝄞"`} {
		var want string
		if err := json.Unmarshal([]byte(raw), &want); err != nil {
			t.Fatal(err)
		}
		in, err := DecodeInbound([]byte(`{"type":"hello","name":"Ada","token":` + raw + `}`))
		if err != nil {
			t.Fatalf("%s: %v", raw, err)
		}
		if in.Token != want {
			t.Errorf("%s decodes to %q, encoding/json to %q", raw, in.Token, want)
		}
	}
}

// BenchmarkEncodeJoined is the joined frame of a join into a room of 200:
// through encoding/json, and with EncodeJoined.
func BenchmarkEncodeJoined(b *testing.B) {
	people := make([]Person, 200)
	for i := range people {
		people[i] = Person{Name: fmt.Sprintf("user-%05d", i), Node: "0a1b2c3d4e5f"}
	}
	b.Run("encoding_json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = Encode(Joined{Type: "joined", Room: "room7", Presence: people})
		}
	})
	b.Run("EncodeJoined", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = EncodeJoined("room7", people)
		}
	})
}
