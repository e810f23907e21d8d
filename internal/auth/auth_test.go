package auth

import (
	"crypto"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus"
)

// TestVerifyGood: a good token gives its claims as an Identity; a missing
// name is the sub, a missing rooms claim is nil (every room), an empty one
// is empty.
func TestVerifyGood(t *testing.T) {
	c := newClock()
	v := newVerifier(t, c, Options{HMACSecrets: [][]byte{secret}, Issuer: "https://id.example", Audience: "chatr"})
	exp := t0.Add(time.Hour)
	tok := sign(t, jwt.SigningMethodHS256, secret, claims(t0, "name", "Ann Lee", "rooms", []string{"team-*", "lobby"},
		"read", []string{"news"}, "admin", true, "iss", "https://id.example", "aud", []string{"other", "chatr"}, "nbf", t0.Unix()))
	id, err := v.Verify(tok)
	if err != nil {
		t.Fatal(err)
	}
	want := Identity{User: "ann", Name: "Ann Lee", Rooms: []string{"team-*", "lobby"}, Read: []string{"news"}, Admin: true, Expires: exp}
	if id.User != want.User || id.Name != want.Name || !slices.Equal(id.Rooms, want.Rooms) || !slices.Equal(id.Read, want.Read) ||
		id.Admin != want.Admin || !id.Expires.Equal(want.Expires) {
		t.Errorf("identity %+v, want %+v", id, want)
	}

	v = newVerifier(t, c, Options{HMACSecrets: [][]byte{secret}})
	id, err = v.Verify(sign(t, jwt.SigningMethodHS256, secret, claims(t0)))
	if err != nil {
		t.Fatal(err)
	}
	if id.Name != "ann" || id.Rooms != nil || id.Read != nil || id.Admin {
		t.Errorf("minimal token: identity %+v, want name ann, no rooms claim, not admin", id)
	}
	id, err = v.Verify(sign(t, jwt.SigningMethodHS256, secret, claims(t0, "rooms", []string{})))
	if err != nil {
		t.Fatal(err)
	}
	if id.Rooms == nil || len(id.Rooms) != 0 || id.CanJoin("lobby") {
		t.Errorf("rooms []: identity %+v may join lobby: %v; want no room", id, id.CanJoin("lobby"))
	}
}

// TestVerifyRefused: each way a token can be wrong is refused with
// ErrInvalid, or ErrExpired when it is good but old, and the message says
// what is wrong without showing the token.
func TestVerifyRefused(t *testing.T) {
	k := keys(t)
	c := newClock()
	pubPEM := pem.EncodeToMemory(pkixBlock(t, &k.rsa.PublicKey))
	hmacOnly := newVerifier(t, c, Options{HMACSecrets: [][]byte{secret}})
	rsaOnly := newVerifier(t, c, Options{PublicKeys: k.publicKeys()[:1]})
	both := newVerifier(t, c, Options{HMACSecrets: [][]byte{secret}, PublicKeys: k.publicKeys()})
	issAud := newVerifier(t, c, Options{HMACSecrets: [][]byte{secret}, Issuer: "https://id.example", Audience: "chatr"})
	good := sign(t, jwt.SigningMethodHS256, secret, claims(t0))
	parts := strings.Split(good, ".")
	hs := func(set ...any) string { return sign(t, jwt.SigningMethodHS256, secret, claims(t0, set...)) }

	// A payload edited after signing: sub ann becomes admin.
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	edited := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(strings.Replace(string(payload), `"ann"`, `"admin"`, 1))) + "." + parts[2]
	// A signature with one byte changed.
	sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
	sig[5] ^= 1
	flipped := parts[0] + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString(sig)
	none := sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims(t0))

	cases := []struct {
		name    string
		v       *Verifier
		token   string
		want    error
		mention string
	}{
		{"forged: signed with another secret", hmacOnly, sign(t, jwt.SigningMethodHS256, []byte(strings.Repeat("x", 40)), claims(t0)), ErrInvalid, "signature"},
		{"forged: payload edited", hmacOnly, edited, ErrInvalid, "signature"},
		{"forged: signature byte changed", hmacOnly, flipped, ErrInvalid, "signature"},
		{"alg none", hmacOnly, none, ErrInvalid, "none"},
		{"alg none, public keys", both, none, ErrInvalid, "none"},
		{"alg none without a signature part", both, strings.TrimSuffix(none, "."), ErrInvalid, "malformed"},
		{"HS256 signed with the RSA public key's bytes, public key only", rsaOnly, sign(t, jwt.SigningMethodHS256, pubPEM, claims(t0)), ErrInvalid, "HS256 (HMAC) tokens are not taken"},
		{"HS256 signed with the RSA public key's bytes, secret and key", both, sign(t, jwt.SigningMethodHS256, pubPEM, claims(t0)), ErrInvalid, "signature"},
		{"HS256 signed with the public key's DER", both, sign(t, jwt.SigningMethodHS256, pkixBlock(t, &k.rsa.PublicKey).Bytes, claims(t0)), ErrInvalid, "signature"},
		{"RS256 without a public key", hmacOnly, sign(t, jwt.SigningMethodRS256, k.rsa, claims(t0)), ErrInvalid, "no key here verifies RS256"},
		{"ES256 with RSA keys only", rsaOnly, sign(t, jwt.SigningMethodES256, k.p256, claims(t0)), ErrInvalid, "no key here verifies ES256"},
		{"ES256 by an unknown key", both, sign(t, jwt.SigningMethodES256, k.p256b, claims(t0)), ErrInvalid, "signature"},
		{"RS256 header on an EdDSA signature", both, parts2(t, sign(t, jwt.SigningMethodRS256, k.rsa, claims(t0)), sign(t, jwt.SigningMethodEdDSA, k.ed, claims(t0))), ErrInvalid, "signature"},
		{"expired", hmacOnly, hs("exp", t0.Add(-time.Hour).Unix()), ErrExpired, "expired at 2026-11-24T09:00:00Z"},
		{"expired past the leeway", hmacOnly, hs("exp", t0.Add(-6*time.Second).Unix()), ErrExpired, "expired"},
		{"expired and forged", hmacOnly, sign(t, jwt.SigningMethodHS256, []byte(strings.Repeat("x", 40)), claims(t0, "exp", t0.Add(-time.Hour).Unix())), ErrInvalid, "signature"},
		{"expired and of another issuer", issAud, hs("exp", t0.Add(-time.Hour).Unix(), "iss", "https://evil.example", "aud", "chatr"), ErrInvalid, "issuer"},
		{"expired and not yet valid", hmacOnly, hs("exp", t0.Add(-time.Hour).Unix(), "nbf", t0.Add(time.Hour).Unix()), ErrInvalid, "not valid yet"},
		{"expired and without sub", hmacOnly, hs("exp", t0.Add(-time.Hour).Unix(), "sub", nil), ErrInvalid, "no sub"},
		{"not yet valid", hmacOnly, hs("nbf", t0.Add(time.Minute).Unix()), ErrInvalid, "not valid yet"},
		{"wrong iss", issAud, hs("iss", "https://evil.example", "aud", "chatr"), ErrInvalid, "issuer"},
		{"no iss", issAud, hs("aud", "chatr"), ErrInvalid, "iss"},
		{"wrong aud", issAud, hs("iss", "https://id.example", "aud", []string{"other", "chatrx"}), ErrInvalid, "audience"},
		{"no aud", issAud, hs("iss", "https://id.example"), ErrInvalid, "aud"},
		{"no sub", hmacOnly, hs("sub", nil), ErrInvalid, "no sub"},
		{"empty sub", hmacOnly, hs("sub", ""), ErrInvalid, "no sub"},
		{"sub of 129 characters", hmacOnly, hs("sub", strings.Repeat("é", 129)), ErrInvalid, "sub of 129 characters"},
		{"sub with a control character", hmacOnly, hs("sub", "ann\x1b[2J"), ErrInvalid, "U+001B"},
		{"sub with a trailing space", hmacOnly, hs("sub", "ann "), ErrInvalid, "white space"},
		{"sub not a string", hmacOnly, hs("sub", 42), ErrInvalid, "malformed"},
		{"no exp", hmacOnly, hs("exp", nil), ErrInvalid, "no exp"},
		{"exp not a date", hmacOnly, hs("exp", "tomorrow"), ErrInvalid, "malformed"},
		{"name of 65 bytes", hmacOnly, hs("name", strings.Repeat("n", 65)), ErrInvalid, "name of 65 bytes"},
		{"rooms with a bad pattern", hmacOnly, hs("rooms", []string{"team-*", "team-["}), ErrInvalid, `rooms pattern 2 "team-["`},
		{"read with a bad pattern", hmacOnly, hs("read", []string{`news\`}), ErrInvalid, "read pattern 1"},
		{"rooms with an empty pattern", hmacOnly, hs("rooms", []string{""}), ErrInvalid, "rooms pattern 1 is 0 bytes"},
		{"rooms of 257 patterns", hmacOnly, hs("rooms", slices.Repeat([]string{"a"}, 257)), ErrInvalid, "257 patterns"},
		{"rooms not a list", hmacOnly, hs("rooms", "team-*"), ErrInvalid, "malformed"},
		{"admin not a bool", hmacOnly, hs("admin", "yes"), ErrInvalid, "malformed"},
		{"crit header", hmacOnly, sign(t, jwt.SigningMethodHS256, secret, claims(t0), "crit", []string{"b64"}, "b64", false), ErrInvalid, "crit"},
		{"a claim of 5000 bytes in the message", hmacOnly, hs("exp", strings.Repeat("9", 5000)+"x"), ErrInvalid, "malformed"},
		{"kid not a string", both, sign(t, jwt.SigningMethodRS256, k.rsa, claims(t0), "kid", 7), ErrInvalid, "kid"},
		{"no token", hmacOnly, "", ErrInvalid, "no token"},
		{"not a token", hmacOnly, "hello", ErrInvalid, "malformed"},
		{"four parts", hmacOnly, good + ".x", ErrInvalid, "malformed"},
		{"header not base64", hmacOnly, "!!!." + parts[1] + "." + parts[2], ErrInvalid, "malformed"},
		{"header not JSON", hmacOnly, base64.RawURLEncoding.EncodeToString([]byte("[1,2]")) + "." + parts[1] + "." + parts[2], ErrInvalid, "malformed"},
		{"too long", hmacOnly, hs("name", "x", "pad", strings.Repeat("p", MaxTokenBytes)), ErrInvalid, "more than 8192"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id, err := tc.v.Verify(tc.token)
			checkErr(t, err, tc.want, tc.mention, tc.token)
			if id.User != "" {
				t.Errorf("a refused token gave the identity %+v", id)
			}
		})
	}
}

// parts2 is the header of a with the payload and signature of b.
func parts2(t *testing.T, a, b string) string {
	t.Helper()
	pa, pb := strings.Split(a, "."), strings.Split(b, ".")
	return pa[0] + "." + pb[1] + "." + pb[2]
}

// TestLeeway: exp and nbf are taken within Options.Leeway of the clock
// (DefaultLeeway when 0), and not beyond; a negative leeway allows none.
func TestLeeway(t *testing.T) {
	c := newClock()
	def := newVerifier(t, c, Options{HMACSecrets: [][]byte{secret}})
	none := newVerifier(t, c, Options{HMACSecrets: [][]byte{secret}, Leeway: -time.Hour})
	hs := func(set ...any) string { return sign(t, jwt.SigningMethodHS256, secret, claims(t0, set...)) }
	cases := []struct {
		name  string
		v     *Verifier
		token string
		want  error // nil: accepted
	}{
		{"exp 4s ago", def, hs("exp", t0.Add(-4*time.Second).Unix()), nil},
		{"exp 5s ago", def, hs("exp", t0.Add(-5*time.Second).Unix()), ErrExpired},
		{"nbf in 4s", def, hs("nbf", t0.Add(4*time.Second).Unix()), nil},
		{"nbf in 6s", def, hs("nbf", t0.Add(6*time.Second).Unix()), ErrInvalid},
		{"no leeway: exp 1s ago", none, hs("exp", t0.Add(-time.Second).Unix()), ErrExpired},
		{"no leeway: exp now", none, hs("exp", t0.Unix()), ErrExpired},
		{"no leeway: exp in 1s", none, hs("exp", t0.Add(time.Second).Unix()), nil},
		{"no leeway: nbf in 1s", none, hs("nbf", t0.Add(time.Second).Unix()), ErrInvalid},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.v.Verify(tc.token)
			if tc.want == nil && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
		})
	}
}

// TestHMACRotation: tokens of the current and the previous secret are
// taken, with each HS alg; those of any other secret are not.
func TestHMACRotation(t *testing.T) {
	c := newClock()
	v := newVerifier(t, c, Options{HMACSecrets: [][]byte{secret, prevSecret}})
	for _, m := range []jwt.SigningMethod{jwt.SigningMethodHS256, jwt.SigningMethodHS384, jwt.SigningMethodHS512} {
		for _, s := range [][]byte{secret, prevSecret} {
			if _, err := v.Verify(sign(t, m, s, claims(t0))); err != nil {
				t.Errorf("%s with %.8s...: %v", m.Alg(), s, err)
			}
		}
		tok := sign(t, m, []byte("another-secret-0123456789abcdef-0123456789"), claims(t0))
		_, err := v.Verify(tok)
		checkErr(t, err, ErrInvalid, "signature", tok)
	}
	// Once the previous secret is dropped, its tokens are refused.
	v = newVerifier(t, c, Options{HMACSecrets: [][]byte{secret}})
	tok := sign(t, jwt.SigningMethodHS256, prevSecret, claims(t0))
	_, err := v.Verify(tok)
	checkErr(t, err, ErrInvalid, "signature", tok)
}

// TestPublicKeys: keys loaded from PEM verify every alg of their type;
// tokens of other keys are refused.
func TestPublicKeys(t *testing.T) {
	k := keys(t)
	var blocks []*pem.Block
	for _, pk := range k.publicKeys() {
		blocks = append(blocks, pkixBlock(t, pk))
	}
	pubs, err := LoadPublicKeys(writePEM(t, blocks...))
	if err != nil {
		t.Fatal(err)
	}
	v := newVerifier(t, newClock(), Options{PublicKeys: pubs})
	ok := []struct {
		m   jwt.SigningMethod
		key any
	}{
		{jwt.SigningMethodRS256, k.rsa}, {jwt.SigningMethodRS384, k.rsa}, {jwt.SigningMethodRS512, k.rsa},
		{jwt.SigningMethodPS256, k.rsa}, {jwt.SigningMethodPS384, k.rsa}, {jwt.SigningMethodPS512, k.rsa},
		{jwt.SigningMethodES256, k.p256}, {jwt.SigningMethodES384, k.p384}, {jwt.SigningMethodES512, k.p521},
		{jwt.SigningMethodEdDSA, k.ed},
	}
	for _, tc := range ok {
		if id, err := v.Verify(sign(t, tc.m, tc.key, claims(t0, "kid", "any"))); err != nil || id.User != "ann" {
			t.Errorf("%s: %+v %v", tc.m.Alg(), id, err)
		}
	}
	bad := []struct {
		m   jwt.SigningMethod
		key any
	}{
		{jwt.SigningMethodES256, k.p256b}, {jwt.SigningMethodRS256, k.rsa1024},
	}
	for _, tc := range bad {
		tok := sign(t, tc.m, tc.key, claims(t0))
		_, err := v.Verify(tok)
		checkErr(t, err, ErrInvalid, "signature", tok)
	}
}

// TestCanJoinCanSend: rooms and read patterns decide where a holder may
// join and send.
func TestCanJoinCanSend(t *testing.T) {
	cases := []struct {
		name       string
		rooms      []string
		read       []string
		room       string
		join, send bool
	}{
		{"no rooms claim: any room", nil, nil, "lobby", true, true},
		{"rooms match", []string{"team-*"}, nil, "team-red", true, true},
		{"room not in rooms", []string{"team-*"}, nil, "lobby", false, false},
		{"pattern is whole-name", []string{"team"}, nil, "team-red", false, false},
		{"question mark", []string{"room?"}, nil, "room7", true, true},
		{"class", []string{"build-[0-9]"}, nil, "build-4", true, true},
		{"class miss", []string{"build-[0-9]"}, nil, "build-x", false, false},
		{"read-only room", []string{"team-*"}, []string{"news", "ann-*"}, "news", true, false},
		{"read-only pattern", []string{"team-*"}, []string{"ann-*"}, "ann-2026", true, false},
		{"rooms wins over read", []string{"news"}, []string{"news"}, "news", true, true},
		{"empty rooms: read only", []string{}, []string{"news"}, "news", true, false},
		{"empty rooms: nothing else", []string{}, []string{"news"}, "lobby", false, false},
		{"no rooms claim, read all: a reader", nil, []string{"*"}, "lobby", true, false},
		{"no rooms claim, some read-only", nil, []string{"news"}, "news", true, false},
		{"no rooms claim, others open", nil, []string{"news"}, "lobby", true, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id := Identity{User: "ann", Rooms: tc.rooms, Read: tc.read}
			if got := id.CanJoin(tc.room); got != tc.join {
				t.Errorf("CanJoin(%q) = %v, want %v", tc.room, got, tc.join)
			}
			if got := id.CanSend(tc.room); got != tc.send {
				t.Errorf("CanSend(%q) = %v, want %v", tc.room, got, tc.send)
			}
		})
	}
}

// TestNewRefuses: New says what is wrong with options it cannot use.
func TestNewRefuses(t *testing.T) {
	k := keys(t)
	x, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	if _, err := New(Options{HMACSecrets: [][]byte{secret}, Metrics: reg}); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		opts    Options
		mention string
	}{
		{"no key", Options{Issuer: "x"}, "no key"},
		{"short secret", Options{HMACSecrets: [][]byte{secret, []byte("short")}}, "HMAC secret 2 holds 5 bytes"},
		{"X25519 key", Options{PublicKeys: []crypto.PublicKey{x.PublicKey()}}, "want RSA, ECDSA or Ed25519"},
		{"private key", Options{PublicKeys: []crypto.PublicKey{k.ed}}, "want RSA, ECDSA or Ed25519"},
		{"RSA 1024", Options{PublicKeys: []crypto.PublicKey{&k.rsa1024.PublicKey}}, "RSA key of 1024 bits"},
		{"JWKS URL not http", Options{JWKSURL: "ftp://id.example/keys"}, "want an http:// or https:// URL"},
		{"JWKS URL without a host", Options{JWKSURL: "https:///keys"}, "want an http:// or https:// URL"},
		{"JWKS URL not a URL", Options{JWKSURL: "http://[::1"}, "JWKS URL"},
		{"metrics registered twice", Options{HMACSecrets: [][]byte{secret}, Metrics: reg}, "register metrics"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v, err := New(tc.opts)
			if err == nil || v != nil {
				t.Fatalf("New = %v, %v; want an error", v, err)
			}
			if !strings.Contains(err.Error(), tc.mention) {
				t.Errorf("error %q does not mention %q", err, tc.mention)
			}
		})
	}
}

// TestNewCopiesSecrets: a caller that reuses its buffers changes nothing.
func TestNewCopiesSecrets(t *testing.T) {
	s := slices.Clone(secret)
	v := newVerifier(t, newClock(), Options{HMACSecrets: [][]byte{s}})
	tok := sign(t, jwt.SigningMethodHS256, secret, claims(t0))
	clear(s)
	if _, err := v.Verify(tok); err != nil {
		t.Fatal(err)
	}
}

// TestMetrics: each Verify counts its result.
func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	v := newVerifier(t, newClock(), Options{HMACSecrets: [][]byte{secret}, Metrics: reg})
	v.Verify(sign(t, jwt.SigningMethodHS256, secret, claims(t0)))
	v.Verify(sign(t, jwt.SigningMethodHS256, secret, claims(t0)))
	v.Verify(sign(t, jwt.SigningMethodHS256, secret, claims(t0, "exp", t0.Add(-time.Hour).Unix())))
	v.Verify("nonsense")
	for result, want := range map[string]float64{"ok": 2, "expired": 1, "invalid": 1, "unavailable": 0} {
		if got := counter(t, reg, "chatr_auth_verified_total", result); got != want {
			t.Errorf("chatr_auth_verified_total{result=%q} = %v, want %v", result, got, want)
		}
	}
	for _, result := range []string{"ok", "error"} {
		if got := counter(t, reg, "chatr_auth_jwks_fetches_total", result); got != 0 {
			t.Errorf("chatr_auth_jwks_fetches_total{result=%q} = %v without a JWKS", result, got)
		}
	}
}

// TestSign: what Sign makes, a Verifier with the secret takes, with every
// claim; what Verify would refuse, Sign refuses.
func TestSign(t *testing.T) {
	for _, alg := range []string{"HS256", "HS384", "HS512"} {
		tok, err := Sign(secret, alg, Claims{Sub: "ann", Name: "Ann", Rooms: []string{"team-*"}, Read: []string{"news"},
			Admin: true, Issuer: "https://id.example", Audience: "chatr", TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		v := newVerifier(t, nil, Options{HMACSecrets: [][]byte{secret}, Issuer: "https://id.example", Audience: "chatr", Now: time.Now})
		id, err := v.Verify(tok)
		if err != nil {
			t.Fatalf("%s: %v", alg, err)
		}
		if id.User != "ann" || id.Name != "Ann" || !slices.Equal(id.Rooms, []string{"team-*"}) || !slices.Equal(id.Read, []string{"news"}) || !id.Admin {
			t.Errorf("%s: identity %+v", alg, id)
		}
		if d := time.Until(id.Expires); d < time.Hour-time.Minute || d > time.Hour {
			t.Errorf("%s: expires in %v, want 1h", alg, d)
		}
		if h, _, _ := jwt.NewParser().ParseUnverified(tok, jwt.MapClaims{}); h == nil || h.Header["alg"] != alg {
			t.Errorf("header alg of %s token: %v", alg, h)
		}
	}
	tok, err := Sign(secret, "HS256", Claims{Sub: "ann", Rooms: []string{}, TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	id, err := newVerifier(t, nil, Options{HMACSecrets: [][]byte{secret}, Now: time.Now}).Verify(tok)
	if err != nil || id.Rooms == nil || id.CanJoin("lobby") {
		t.Errorf("rooms []: %+v %v: want a token for no room", id, err)
	}

	good := Claims{Sub: "ann", TTL: time.Hour}
	with := func(f func(*Claims)) Claims { c := good; f(&c); return c }
	cases := []struct {
		name    string
		secret  []byte
		alg     string
		c       Claims
		mention string
	}{
		{"RS256", secret, "RS256", good, `alg "RS256": want HS256, HS384 or HS512`},
		{"none", secret, "none", good, `alg "none"`},
		{"short secret", secret[:31], "HS256", good, "31 bytes: want at least 32"},
		{"no ttl", secret, "HS256", with(func(c *Claims) { c.TTL = 0 }), "ttl 0s: must be at least 1s"},
		{"ttl under a second", secret, "HS256", with(func(c *Claims) { c.TTL = 500 * time.Millisecond }), "ttl 500ms"},
		{"no sub", secret, "HS256", with(func(c *Claims) { c.Sub = "" }), "no sub"},
		{"name too long", secret, "HS256", with(func(c *Claims) { c.Name = strings.Repeat("n", 65) }), "name of 65 bytes"},
		{"name not UTF-8", secret, "HS256", with(func(c *Claims) { c.Name = "\xff" }), "not valid UTF-8"},
		{"bad pattern", secret, "HS256", with(func(c *Claims) { c.Read = []string{"[a-"} }), "read pattern 1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := Sign(tc.secret, tc.alg, tc.c)
			if err == nil {
				t.Fatalf("signed %s", tok)
			}
			if !strings.Contains(err.Error(), tc.mention) {
				t.Errorf("error %q does not mention %q", err, tc.mention)
			}
		})
	}
}
