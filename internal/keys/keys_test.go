package keys

import (
	"bytes"
	"encoding/hex"
	"testing"
)

// TestDeriveKnownAnswers pins the derivation: RFC 5869 test case 3 (HKDF-
// SHA256, no salt, no info; its first 32 bytes of output) checks the
// construction, and a chatr key pins what nodes of older releases derive,
// so that a change that would split a cluster being upgraded fails here.
func TestDeriveKnownAnswers(t *testing.T) {
	for _, tc := range []struct {
		name    string
		secret  []byte
		purpose string
		want    string
	}{
		{"RFC 5869 test case 3", bytes.Repeat([]byte{0x0b}, 22), "",
			"8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d"},
		{"cursor key of a 32-byte secret", []byte("0123456789abcdef0123456789abcdef"), Cursor,
			"0ffee31d7aa43451ce28809925e69c693009f59bfbe9548aa46e7fd4e79ecaa3"}, // also by Python hmac, RFC 5869 by hand
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := hex.EncodeToString(Derive(tc.secret, tc.purpose)); got != tc.want {
				t.Errorf("Derive = %s, want %s", got, tc.want)
			}
		})
	}
}

// TestDeriveSeparates: another purpose or another secret gives another
// key, and the caller cannot change a key by changing what it was given.
func TestDeriveSeparates(t *testing.T) {
	secret := []byte("0123456789abcdef")
	a := Derive(secret, Cursor)
	if len(a) != Size {
		t.Fatalf("key of %d bytes, want %d", len(a), Size)
	}
	if bytes.Equal(a, Derive(secret, Cursor+" ")) {
		t.Error("two purposes share a key")
	}
	if bytes.Equal(a, Derive([]byte("0123456789abcdeg"), Cursor)) {
		t.Error("two secrets share a key")
	}
	a[0] ^= 1
	if bytes.Equal(a, Derive(secret, Cursor)) {
		t.Error("Derive returned a shared slice")
	}
}

func TestDeriveEmptySecretPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("Derive(nil, ...) returned a key everyone can compute")
		}
	}()
	Derive(nil, Cursor)
}
