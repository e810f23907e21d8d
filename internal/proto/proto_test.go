package proto

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

func TestCleanName(t *testing.T) {
	tests := []struct {
		in, want string
		code     string // "" when the name is accepted
	}{
		{"Ada", "Ada", ""},
		{"  Ada  ", "Ada", ""},
		{"\tAda Lovelace\n", "Ada Lovelace", ""},
		{"a", "a", ""},
		{"x_y-z.0 9", "x_y-z.0 9", ""},
		{strings.Repeat("n", 32), strings.Repeat("n", 32), ""},
		{strings.Repeat("é", 32), strings.Repeat("é", 32), ""},               // 32 characters, 64 bytes
		{strings.Repeat("界", 32), strings.Repeat("界", 32), ""},               // 32 characters, 96 bytes
		{"  " + strings.Repeat("n", 32) + "  ", strings.Repeat("n", 32), ""}, // length counts after trimming
		{"Zoë", "Zoë", ""},
		{"١٢٣", "١٢٣", ""}, // digits of another script
		{"", "", CodeBadRequest},
		{"   ", "", CodeBadRequest},
		{strings.Repeat("n", 33), "", CodeBadRequest},
		{strings.Repeat("é", 33), "", CodeBadRequest},
		{"a<b", "", CodeBadRequest},
		{"a\"b", "", CodeBadRequest},
		{"a\nb", "", CodeBadRequest},
		{"a\tb", "", CodeBadRequest},
		{"a\x00b", "", CodeBadRequest},
		{"a@b", "", CodeBadRequest},
		{"😀", "", CodeBadRequest},
		{"a\xffb", "", CodeBadRequest},
		{"a\u200bb", "", CodeBadRequest}, // zero-width space: invisible impostor names
		// The rules of names.Clean (tested there), through this one door.
		{"ａｌｉｃｅ", "alice", ""},
		{"alice\u3164", "", CodeBadRequest}, // a Hangul filler, a letter to unicode.IsLetter
		{"\u0430lice", "", CodeBadRequest},  // a Cyrillic а among Latin letters
	}
	for _, tc := range tests {
		got, err := CleanName(tc.in)
		switch {
		case tc.code == "" && err != nil:
			t.Errorf("CleanName(%q) = error %v, want %q", tc.in, err, tc.want)
		case tc.code == "" && got != tc.want:
			t.Errorf("CleanName(%q) = %q, want %q", tc.in, got, tc.want)
		case tc.code != "" && err == nil:
			t.Errorf("CleanName(%q) = %q, want error %s", tc.in, got, tc.code)
		case tc.code != "" && err.Code != tc.code:
			t.Errorf("CleanName(%q) code = %s, want %s", tc.in, err.Code, tc.code)
		}
	}
}

// CheckName takes every name a release ever stored and refuses what none
// did.
func TestCheckName(t *testing.T) {
	for _, name := range []string{"Ada", "a  b", "alice\u3164", "ａｌｉｃｅ", "\u0430lice", strings.Repeat("界", MaxNameLen)} {
		if err := CheckName(name); err != nil {
			t.Errorf("CheckName(%+q) = %v, want nil", name, err)
		}
	}
	for _, name := range []string{"", " Ada", "Ada\n", "a:b", "a\u200bb", "a\xffb", strings.Repeat("n", MaxNameLen+1)} {
		if err := CheckName(name); err == nil || err.Code != CodeBadRequest {
			t.Errorf("CheckName(%+q) = %v, want bad_request", name, err)
		}
	}
}

func TestCheckRoom(t *testing.T) {
	tests := []struct {
		room string
		ok   bool
	}{
		{"lobby", true},
		{DefaultRoom, true},
		{"a", true},
		{"0", true},
		{"a_b-c.d", true},
		{strings.Repeat("z", 64), true},
		{"", false},
		{strings.Repeat("z", 65), false},
		{"Lobby", false},
		{"the lobby", false},
		{" lobby", false},
		{"a/b", false},
		{"a?b", false},
		{"a%20b", false},
		{"café", false},
		{"lobby\n", false},
		{"a\x00", false},
	}
	for _, tc := range tests {
		err := CheckRoom(tc.room)
		if (err == nil) != tc.ok {
			t.Errorf("CheckRoom(%q) = %v, want ok=%v", tc.room, err, tc.ok)
		}
		if err != nil && err.Code != CodeBadRequest {
			t.Errorf("CheckRoom(%q) code = %s, want bad_request", tc.room, err.Code)
		}
	}
}

func TestCheckText(t *testing.T) {
	tests := []struct {
		name string
		text string
		code string // "" when accepted
	}{
		{"one byte", "x", ""},
		{"spaces only", "   ", ""},
		{"4096 bytes", strings.Repeat("x", 4096), ""},
		{"4096 bytes multibyte", strings.Repeat("€", 1365) + "x", ""},
		{"html is just text", "<script>alert(1)</script>", ""},
		{"empty", "", CodeBadRequest},
		{"4097 bytes", strings.Repeat("x", 4097), CodeTooLarge},
		{"4097 bytes multibyte", strings.Repeat("€", 1365) + "xx", CodeTooLarge},
		{"1 MiB", strings.Repeat("x", 1<<20), CodeTooLarge},
		{"invalid UTF-8", "a\xffb", CodeBadRequest},
		{"truncated rune", "€"[:2], CodeBadRequest},
		{"surrogate half", "\xed\xa0\x80", CodeBadRequest},
	}
	for _, tc := range tests {
		err := CheckText(tc.text)
		got := ""
		if err != nil {
			got = err.Code
		}
		if got != tc.code {
			t.Errorf("CheckText(%s) = %v, want code %q", tc.name, err, tc.code)
		}
	}
}

func TestMessageID(t *testing.T) {
	if got := MessageID("0123456789ab", 7); got != "0123456789ab-7" {
		t.Errorf("MessageID = %q", got)
	}
	m := Message{Origin: "0123456789ab", Seq: 42}
	if got := m.ID(); got != "0123456789ab-42" {
		t.Errorf("Message.ID = %q", got)
	}
	// Property: every (node id, 1 <= seq <= MaxSeq) survives a format and parse.
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 2000; i++ {
		origin := randomNodeID(r)
		seq := r.Uint64N(MaxSeq) + 1
		if i%4 == 0 {
			seq = r.Uint64N(1000) + 1
		}
		id := MessageID(origin, seq)
		o, s, err := ParseMessageID(id)
		if err != nil || o != origin || s != seq {
			t.Fatalf("ParseMessageID(%q) = %q, %d, %v; want %q, %d", id, o, s, err, origin, seq)
		}
	}
}

func TestParseMessageIDBad(t *testing.T) {
	for _, id := range []string{
		"",
		"-",
		"-1",
		"0123456789ab",
		"0123456789ab-",
		"0123456789ab-0",
		"0123456789ab--1",
		"0123456789ab-+1",
		"0123456789ab-1x",
		"0123456789ab-1.0",
		"0123456789ab- 1",
		"0123456789ab-18446744073709551616", // over uint64
		"0123456789ab-9223372036854775808",  // over MaxSeq (2^63)
		"0123456789AB-1",                    // node ids are lowercase
		"0123456789a-1",                     // 11 digits
		"0123456789abc-1",                   // 13 digits
		"0123456789ag-1",                    // not hex
		"lobby-1",
		"../../etc-1",
	} {
		if o, s, err := ParseMessageID(id); err == nil {
			t.Errorf("ParseMessageID(%q) = %q, %d; want an error", id, o, s)
		} else if err.Code != CodeBadRequest {
			t.Errorf("ParseMessageID(%q) code = %s, want bad_request", id, err.Code)
		}
	}
}

func TestValidNodeID(t *testing.T) {
	for s, want := range map[string]bool{
		"0123456789ab": true, "ffffffffffff": true, "000000000000": true,
		"": false, "0123456789a": false, "0123456789abc": false, "0123456789AB": false, "0123456789a-": false, "zzzzzzzzzzzz": false,
	} {
		if got := ValidNodeID(s); got != want {
			t.Errorf("ValidNodeID(%q) = %v, want %v", s, got, want)
		}
	}
}

func TestFormatTime(t *testing.T) {
	tests := []struct {
		us   int64
		want string
	}{
		{0, "1970-01-01T00:00:00.000000Z"},
		{1, "1970-01-01T00:00:00.000001Z"},
		{1_795_514_400_123_456, "2026-11-24T10:00:00.123456Z"},
		{1_795_514_400_000_000, "2026-11-24T10:00:00.000000Z"}, // trailing zeros kept: fixed width
	}
	for _, tc := range tests {
		got := FormatTime(tc.us)
		if got != tc.want {
			t.Errorf("FormatTime(%d) = %q, want %q", tc.us, got, tc.want)
		}
		back, err := time.Parse(time.RFC3339Nano, got)
		if err != nil || back.UnixMicro() != tc.us {
			t.Errorf("FormatTime(%d) = %q does not parse back as RFC 3339 (%v, %d)", tc.us, got, err, back.UnixMicro())
		}
	}
}

func TestMessageJSON(t *testing.T) {
	m := Message{Origin: "0123456789ab", Seq: 3, Room: "lobby", Sender: "Ada", Text: "<b>hi</b>", Created: 1_795_514_400_123_456}
	got := string(Encode(m.JSON("message", "CUR")))
	want := `{"type":"message","room":"lobby","id":"0123456789ab-3","sender":"Ada","text":"\u003cb\u003ehi\u003c/b\u003e","created":"2026-11-24T10:00:00.123456Z","node":"0123456789ab","cursor":"CUR"}`
	if got != want {
		t.Errorf("message frame = %s\nwant %s", got, want)
	}
	// The HTTP API shape has neither type nor cursor.
	var api map[string]any
	if err := json.Unmarshal(Encode(m.JSON("", "")), &api); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"type", "cursor"} {
		if _, ok := api[k]; ok {
			t.Errorf("HTTP message has %q: %v", k, api)
		}
	}
	for _, k := range []string{"room", "id", "sender", "text", "created", "node"} {
		if _, ok := api[k]; !ok {
			t.Errorf("HTTP message lacks %q: %v", k, api)
		}
	}
}

func TestVector(t *testing.T) {
	a := Vector{"aaaaaaaaaaaa": 3, "bbbbbbbbbbbb": 5}
	c := a.Clone()
	c["aaaaaaaaaaaa"] = 9
	if a["aaaaaaaaaaaa"] != 3 {
		t.Fatal("Clone shares storage with the original")
	}
	if !c.Covers(a) || a.Covers(c) {
		t.Errorf("Covers: %v covers %v = %v, reverse = %v", c, a, c.Covers(a), a.Covers(c))
	}
	if !a.Covers(Vector{}) || !(Vector{}).Covers(Vector{}) || Vector(nil).Covers(a) {
		t.Error("Covers of empty vectors is wrong")
	}
	a.Merge(Vector{"aaaaaaaaaaaa": 1, "bbbbbbbbbbbb": 7, "cccccccccccc": 2})
	want := Vector{"aaaaaaaaaaaa": 3, "bbbbbbbbbbbb": 7, "cccccccccccc": 2}
	if fmt.Sprint(a) != fmt.Sprint(want) {
		t.Errorf("Merge = %v, want %v", a, want)
	}

	// Property: Merge gives the least vector covering both.
	r := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 500; i++ {
		x, y := randomVector(r, 5), randomVector(r, 5)
		m := x.Clone()
		m.Merge(y)
		if !m.Covers(x) || !m.Covers(y) {
			t.Fatalf("merge %v of %v and %v does not cover both", m, x, y)
		}
		for o, s := range m {
			if s != x[o] && s != y[o] {
				t.Fatalf("merge %v of %v and %v invents %s=%d", m, x, y, o, s)
			}
		}
	}
}

// randomNodeID returns a random node id.
func randomNodeID(r *rand.Rand) string {
	const hexDigits = "0123456789abcdef"
	b := make([]byte, NodeIDLen)
	for i := range b {
		b[i] = hexDigits[r.IntN(16)]
	}
	return string(b)
}

// randomVector returns a vector over a few origins drawn from a small pool,
// so that vectors share origins.
func randomVector(r *rand.Rand, maxOrigins int) Vector {
	pool := []string{"000000000001", "00000000000a", "aaaaaaaaaaaa", "ffffffffffff", "0123456789ab", "deadbeef0000"}
	v := Vector{}
	for n := r.IntN(maxOrigins + 1); n > 0; n-- {
		v[pool[r.IntN(len(pool))]] = r.Uint64N(100)
	}
	return v
}

// AppendTime writes what FormatTime does, from before 1970 to past 9999.
func TestAppendTime(t *testing.T) {
	for _, us := range []int64{0, 1, -1, 999_999, 1764700000123456, -62135596800000000, -62135596800000001,
		253402300799999999, 253402300800000000, math.MaxInt64 / 2, math.MinInt64 / 2} {
		if got, want := string(AppendTime([]byte("x"), us)), "x"+FormatTime(us); got != want {
			t.Errorf("AppendTime(%d) = %q, want %q", us, got, want)
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 100_000 {
		us := r.Int64N(1<<52) - 1<<51
		if got, want := string(AppendTime(nil, us)), FormatTime(us); got != want {
			t.Fatalf("AppendTime(%d) = %q, want %q", us, got, want)
		}
	}
}
