package secret

import (
	"bytes"
	"strings"
	"testing"
)

func TestFormatParse(t *testing.T) {
	s := New()
	key := Format(s)
	if len(key) != 43 || strings.ContainsAny(key, "+/= \n") {
		t.Fatalf("key %q: want 43 URL-safe characters", key)
	}
	got, err := Parse(key)
	if err != nil || !bytes.Equal(got, s) {
		t.Fatalf("Parse(Format(s)) = %x, %v", got, err)
	}
	if bytes.Equal(New(), s) {
		t.Fatal("two secrets are equal")
	}
}

func TestParseRefuses(t *testing.T) {
	for _, key := range []string{
		"", "short", Format(make([]byte, 15)), Format(make([]byte, 65)),
		Format(New()) + "=", "a+b/" + Format(New())[4:], Format(New()) + " ",
		strings.Repeat("A", 43) + "\x00",
	} {
		if _, err := Parse(key); err == nil {
			t.Errorf("Parse(%q) accepted", key)
		}
	}
}

func TestParseFile(t *testing.T) {
	s := New()
	for name, data := range map[string][]byte{
		"printable":      []byte(Format(s)),
		"with a newline": []byte(Format(s) + "\n"),
	} {
		if got, err := ParseFile(data); err != nil || !bytes.Equal(got, s) {
			t.Errorf("%s: %x, %v", name, got, err)
		}
	}
	for _, n := range []int{16, 24, 32} {
		raw := bytes.Repeat([]byte{0xfe}, n)
		if got, err := ParseFile(raw); err != nil || !bytes.Equal(got, raw) {
			t.Errorf("raw %d bytes: %x, %v", n, got, err)
		}
	}
	for _, data := range [][]byte{nil, []byte("\n"), bytes.Repeat([]byte{0xfe}, 31), []byte("not a key, at all")} {
		if _, err := ParseFile(data); err == nil {
			t.Errorf("ParseFile(%q) accepted", data)
		}
	}
}

func TestDeriveSeparatesPurposes(t *testing.T) {
	s := New()
	a, b := Derive(s, Gossip), Derive(s, PeerLink)
	if len(a) != 32 || bytes.Equal(a, b) || bytes.Equal(a, s) {
		t.Fatalf("derived keys are not 32 independent bytes: %x %x", a, b)
	}
	if !bytes.Equal(Derive(s, Gossip), a) {
		t.Fatal("Derive is not deterministic")
	}
	if bytes.Equal(Derive(New(), Gossip), a) {
		t.Fatal("two secrets derive one key")
	}
}
