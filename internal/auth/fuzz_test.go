package auth

import (
	"crypto"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
)

// FuzzVerify feeds Verify random strings and mutations of good tokens, and
// tokens whose claims are random bytes signed with the verifier's own
// secret (so that the claim checks, not only the signature, meet them).
// Verify must never panic; every error must be one of the package's; an
// accepted token must carry a valid sub and an exp, and its patterns must
// be ones CanJoin can use.
//
//	go test -run '^$' -fuzz '^FuzzVerify$' -fuzztime 30s ./internal/auth
func FuzzVerify(f *testing.F) {
	// Fixed keys and a stopped clock, so the tokens of the corpus stay good.
	ed := ed25519.NewKeyFromSeed([]byte("fuzz-verify-fixed-ed25519-seed!!"))
	now := t0
	v, err := New(Options{HMACSecrets: [][]byte{secret}, PublicKeys: []crypto.PublicKey{ed.Public()},
		Issuer: "https://id.example", Now: func() time.Time { return now }})
	if err != nil {
		f.Fatal(err)
	}
	good := claims(t0, "iss", "https://id.example", "name", "Ann", "rooms", []string{"team-*"}, "read", []string{"news"}, "admin", true)
	for _, tok := range []string{
		sign(f, jwt.SigningMethodHS256, secret, good),
		sign(f, jwt.SigningMethodHS512, secret, good, "kid", "k1"),
		sign(f, jwt.SigningMethodEdDSA, ed, good),
		sign(f, jwt.SigningMethodEdDSA, ed, good, "kid", 3),
		sign(f, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, good),
		sign(f, jwt.SigningMethodHS256, secret, claims(t0, "exp", t0.Add(-time.Hour).Unix())),
		"", ".", "..", "a.b.c", "eyJhbGciOiJIUzI1NiJ9..",
	} {
		f.Add(tok, []byte(nil))
	}
	for _, c := range []string{
		`{"sub":"ann","exp":1796205600,"iss":"https://id.example"}`,
		`{"sub":"ann","exp":1796205600,"iss":"https://id.example","rooms":["a[","b"],"read":null,"name":"\u0000"}`,
		`{"sub":"\ud800","exp":1e300,"nbf":-1e300,"iss":"https://id.example","aud":[1]}`,
		`{"sub":"ann","exp":"1796205600","iss":["https://id.example"]}`,
	} {
		f.Add("", []byte(c))
	}
	header := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))
	f.Fuzz(func(t *testing.T, token string, payload []byte) {
		if payload != nil {
			// The claims as they are, signed: a token the issuer could make.
			unsigned := header + "." + base64.RawURLEncoding.EncodeToString(payload)
			sig, err := jwt.SigningMethodHS256.Sign(unsigned, secret)
			if err != nil {
				t.Fatal(err)
			}
			token = unsigned + "." + base64.RawURLEncoding.EncodeToString(sig)
		}
		id, err := v.Verify(token)
		if err != nil {
			if !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrExpired) {
				t.Fatalf("error %q is neither ErrInvalid nor ErrExpired", err)
			}
			if len(token) >= 16 && strings.Contains(err.Error(), token) {
				t.Fatalf("error %q shows the token", err)
			}
			if len(err.Error()) > 1000 {
				t.Fatalf("an error of %d bytes", len(err.Error()))
			}
			if id.User != "" {
				t.Fatalf("refused, yet the identity %+v", id)
			}
			return
		}
		if checkSub(id.User) != nil || id.Expires.IsZero() || !now.Before(id.Expires.Add(DefaultLeeway)) {
			t.Fatalf("accepted with sub %q, exp %v", id.User, id.Expires)
		}
		if id.Name == "" || len(id.Name) > MaxNameBytes || !utf8.ValidString(id.Name) {
			t.Fatalf("accepted with name %q", id.Name)
		}
		if checkPatterns("rooms", id.Rooms) != nil || checkPatterns("read", id.Read) != nil {
			t.Fatalf("accepted with patterns %q %q", id.Rooms, id.Read)
		}
		id.CanJoin("lobby")
		id.CanSend("lobby")
	})
}
