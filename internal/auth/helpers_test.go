package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus"
)

// The shared fixtures of the package's tests.

var (
	secret     = []byte("current-secret-0123456789abcdef-0123456789") // 42 bytes
	prevSecret = []byte("previous-secret-0123456789abcdef-012345678")
	t0         = time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC) // the fake clock's start
)

// testKeys are private keys of every kind, made once: RSA keys take a while.
type testKeys struct {
	rsa              *rsa.PrivateKey
	rsa1024          *rsa.PrivateKey
	p256, p384, p521 *ecdsa.PrivateKey
	p256b            *ecdsa.PrivateKey // another P-256 key, that nobody trusts
	ed               ed25519.PrivateKey
}

var (
	keysOnce sync.Once
	tk       testKeys
)

func keys(t testing.TB) *testKeys {
	t.Helper()
	keysOnce.Do(func() {
		must := func(err error) {
			if err != nil {
				panic(err)
			}
		}
		var err error
		tk.rsa, err = rsa.GenerateKey(rand.Reader, 2048)
		must(err)
		tk.rsa1024, err = rsa.GenerateKey(rand.Reader, 1024)
		must(err)
		for _, k := range []struct {
			c elliptic.Curve
			p **ecdsa.PrivateKey
		}{{elliptic.P256(), &tk.p256}, {elliptic.P384(), &tk.p384}, {elliptic.P521(), &tk.p521}, {elliptic.P256(), &tk.p256b}} {
			*k.p, err = ecdsa.GenerateKey(k.c, rand.Reader)
			must(err)
		}
		_, tk.ed, err = ed25519.GenerateKey(rand.Reader)
		must(err)
	})
	return &tk
}

// publicKeys are the public keys of k that a verifier trusts.
func (k *testKeys) publicKeys() []crypto.PublicKey {
	return []crypto.PublicKey{&k.rsa.PublicKey, &k.p256.PublicKey, &k.p384.PublicKey, &k.p521.PublicKey, k.ed.Public()}
}

// clock is a fake clock for Options.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: t0} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// claims are the claims of a good token at now; set changes them (a nil
// value deletes the claim).
func claims(now time.Time, set ...any) jwt.MapClaims {
	c := jwt.MapClaims{"sub": "ann", "exp": now.Add(time.Hour).Unix()}
	for i := 0; i+1 < len(set); i += 2 {
		if set[i+1] == nil {
			delete(c, set[i].(string))
		} else {
			c[set[i].(string)] = set[i+1]
		}
	}
	return c
}

// sign makes a token with the jwt library; header entries are added to the
// token's header (kid, or odd ones).
func sign(t testing.TB, m jwt.SigningMethod, key any, c jwt.Claims, header ...any) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, c)
	for i := 0; i+1 < len(header); i += 2 {
		tok.Header[header[i].(string)] = header[i+1]
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatalf("sign %s: %v", m.Alg(), err)
	}
	return s
}

// newVerifier makes a verifier with the fake clock c, which must work.
func newVerifier(t testing.TB, c *clock, opts Options) *Verifier {
	t.Helper()
	if opts.Now == nil {
		opts.Now = c.Now
	}
	v, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return v
}

// checkErr fails t unless err is want (and no other of the package's
// errors), mentions what it should, and shows no part of the token.
func checkErr(t testing.TB, err error, want error, mention, token string) {
	t.Helper()
	if err == nil {
		t.Fatalf("accepted, want %v", want)
	}
	for _, e := range []error{ErrExpired, ErrInvalid, ErrUnavailable} {
		if errors.Is(err, e) != (e == want) {
			t.Errorf("errors.Is(%q, %v) = %v", err, e, !(e == want))
		}
	}
	if len(err.Error()) > 400 {
		t.Errorf("an error of %d bytes: %.100s...", len(err.Error()), err)
	}
	if !strings.Contains(err.Error(), mention) {
		t.Errorf("error %q does not mention %q", err, mention)
	}
	if token != "" && strings.Contains(err.Error(), token) {
		t.Errorf("error %q shows the token", err)
	}
	for _, part := range strings.Split(token, ".") {
		if len(part) >= 8 && strings.Contains(err.Error(), part) {
			t.Errorf("error %q shows a part of the token: %s", err, part)
		}
	}
}

// writePEM writes the public keys (or other blocks) to a file and returns
// its path.
func writePEM(t testing.TB, blocks ...*pem.Block) string {
	t.Helper()
	var b []byte
	for _, bl := range blocks {
		b = append(b, pem.EncodeToMemory(bl)...)
	}
	p := filepath.Join(t.TempDir(), "keys.pem")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func pkixBlock(t testing.TB, k crypto.PublicKey) *pem.Block {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return &pem.Block{Type: "PUBLIC KEY", Bytes: der}
}

// counter reads a counter of reg by name and result label.
func counter(t testing.TB, reg *prometheus.Registry, name, result string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == result {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no %s{result=%q} in the registry", name, result)
	return 0
}

// writeFile writes s to path and returns path.
func writeFile(t testing.TB, path, s string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
