package auth

import (
	"crypto"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus"
)

// jwksServer serves a JWK set that a test changes, on loopback.
type jwksServer struct {
	*httptest.Server
	requests atomic.Int32
	arrived  chan struct{} // a value for each request, as it arrives

	mu     sync.Mutex
	body   []byte
	status int
	hold   chan struct{} // when set, requests wait until it is closed
}

func newJWKSServer(t *testing.T) *jwksServer {
	s := &jwksServer{status: http.StatusOK, arrived: make(chan struct{}, 1000)}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		select {
		case s.arrived <- struct{}{}:
		default:
		}
		s.mu.Lock()
		body, status, hold := s.body, s.status, s.hold
		s.mu.Unlock()
		if hold != nil {
			<-hold
		}
		w.Header().Set("Content-Type", "application/jwk-set+json")
		w.WriteHeader(status)
		w.Write(body)
	}))
	t.Cleanup(s.Close)
	return s
}

// serve makes the server answer with the set of keys.
func (s *jwksServer) serve(t *testing.T, keys ...jwkset.JWKMarshal) {
	t.Helper()
	b, err := json.Marshal(jwkset.JWKSMarshal{Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	s.body, s.status = b, http.StatusOK
	s.mu.Unlock()
}

func (s *jwksServer) fail(status int) {
	s.mu.Lock()
	s.status = status
	s.mu.Unlock()
}

// jwkOf is the JWK of pub, as an issuer publishes it.
func jwkOf(t *testing.T, pub crypto.PublicKey, kid string, alg jwkset.ALG) jwkset.JWKMarshal {
	t.Helper()
	j, err := jwkset.NewJWKFromKey(pub, jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: kid, ALG: alg, USE: jwkset.UseSig}})
	if err != nil {
		t.Fatal(err)
	}
	return j.Marshal()
}

// jwksVerifier makes a verifier of the server's set, with the fake clock c
// and its own metrics.
func jwksVerifier(t *testing.T, s *jwksServer, c *clock) (*Verifier, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	return newVerifier(t, c, Options{JWKSURL: s.URL + "/.well-known/jwks.json", Metrics: reg, HTTPClient: s.Client()}), reg
}

// TestJWKSRotation: the set is fetched at the first Verify; a token with
// a kid the set lacks makes the verifier fetch it again, at most once
// every JWKSMinInterval however many such tokens come; a key the issuer
// drops is refused once the set is fetched again.
func TestJWKSRotation(t *testing.T) {
	k := keys(t)
	c := newClock()
	s := newJWKSServer(t)
	s.serve(t, jwkOf(t, &k.rsa.PublicKey, "a", jwkset.AlgRS256))
	v, reg := jwksVerifier(t, s, c)
	tokA := sign(t, jwt.SigningMethodRS256, k.rsa, claims(t0), "kid", "a")
	tokB := sign(t, jwt.SigningMethodES256, k.p256, claims(t0), "kid", "b")

	if s.requests.Load() != 0 {
		t.Fatal("New fetched the set")
	}
	if id, err := v.Verify(tokA); err != nil || id.User != "ann" {
		t.Fatalf("kid a: %+v %v", id, err)
	}
	v.Verify(tokA)
	if n := s.requests.Load(); n != 1 {
		t.Fatalf("%d fetches for two tokens of a known kid, want 1", n)
	}

	// The issuer rotates to key b. Within 10 s of the last fetch, a token
	// of kid b is refused, and no fetch is made however many come.
	s.serve(t, jwkOf(t, &k.p256.PublicKey, "b", jwkset.AlgES256))
	c.Add(DefaultJWKSMinInterval - time.Second)
	for range 20 {
		_, err := v.Verify(tokB)
		checkErr(t, err, ErrInvalid, `no ES256 key with kid "b"`, tokB)
	}
	if n := s.requests.Load(); n != 1 {
		t.Fatalf("%d fetches, want still 1 within JWKSMinInterval", n)
	}
	// 10 s after the last fetch, the unknown kid is fetched.
	c.Add(time.Second)
	if id, err := v.Verify(tokB); err != nil || id.User != "ann" {
		t.Fatalf("kid b after the rotation: %+v %v", id, err)
	}
	if n := s.requests.Load(); n != 2 {
		t.Fatalf("%d fetches, want 2", n)
	}
	// Key a is gone from the set, so its tokens are refused now.
	_, err := v.Verify(tokA)
	checkErr(t, err, ErrInvalid, `no RS256 key with kid "a"`, tokA)
	// Made-up kids cost no fetch within the interval.
	for i := range 50 {
		tok := sign(t, jwt.SigningMethodES256, k.p256, claims(t0), "kid", strings.Repeat("x", i+1))
		_, err := v.Verify(tok)
		checkErr(t, err, ErrInvalid, "no ES256 key with kid", tok)
	}
	if n := s.requests.Load(); n != 2 {
		t.Fatalf("%d fetches after made-up kids, want still 2", n)
	}
	if got := counter(t, reg, "chatr_auth_jwks_fetches_total", "ok"); got != 2 {
		t.Errorf("chatr_auth_jwks_fetches_total{result=ok} = %v, want 2", got)
	}
}

// TestJWKSMaxAge: a set older than JWKSMaxAge is fetched again by the next
// Verify that uses it, so a key the issuer drops stops working even when
// no token names an unknown kid.
func TestJWKSMaxAge(t *testing.T) {
	k := keys(t)
	c := newClock()
	s := newJWKSServer(t)
	s.serve(t, jwkOf(t, k.ed.Public(), "a", jwkset.AlgEdDSA))
	v, _ := jwksVerifier(t, s, c)
	tok := sign(t, jwt.SigningMethodEdDSA, k.ed, claims(t0.Add(time.Hour), "exp", t0.Add(2*time.Hour).Unix()), "kid", "a")
	if _, err := v.Verify(tok); err != nil {
		t.Fatal(err)
	}
	s.serve(t, jwkOf(t, &k.p256.PublicKey, "b", jwkset.AlgES256))
	c.Add(DefaultJWKSMaxAge - time.Second)
	if _, err := v.Verify(tok); err != nil {
		t.Fatalf("within JWKSMaxAge: %v", err)
	}
	c.Add(time.Second)
	_, err := v.Verify(tok)
	checkErr(t, err, ErrInvalid, `no EdDSA key with kid "a"`, tok)
	if n := s.requests.Load(); n != 2 {
		t.Errorf("%d fetches, want 2", n)
	}
}

// TestJWKSDown: when the URL stops answering, the keys fetched before keep
// working, stale or not; a kid they lack is ErrUnavailable (the token may
// be good); failed fetches are counted and made no more often than the
// interval; once the URL is back, the set is fetched again.
func TestJWKSDown(t *testing.T) {
	k := keys(t)
	c := newClock()
	s := newJWKSServer(t)
	s.serve(t, jwkOf(t, &k.p384.PublicKey, "a", jwkset.AlgES384))
	v, reg := jwksVerifier(t, s, c)
	tokA := sign(t, jwt.SigningMethodES384, k.p384, claims(t0, "exp", t0.Add(24*time.Hour).Unix()), "kid", "a")
	tokB := sign(t, jwt.SigningMethodES256, k.p256, claims(t0, "exp", t0.Add(24*time.Hour).Unix()), "kid", "b")
	if _, err := v.Verify(tokA); err != nil {
		t.Fatal(err)
	}

	s.fail(http.StatusServiceUnavailable)
	c.Add(DefaultJWKSMaxAge) // stale: the next Verify fetches, and fails
	if _, err := v.Verify(tokA); err != nil {
		t.Fatalf("a known key while the URL fails: %v", err)
	}
	_, err := v.Verify(tokB)
	checkErr(t, err, ErrUnavailable, "could not be fetched: answered 503", tokB)
	if got := counter(t, reg, "chatr_auth_jwks_fetches_total", "error"); got != 1 {
		t.Errorf("fetch errors %v, want 1 (no second fetch within the interval)", got)
	}

	// Down for good: the listener is closed.
	s.Close()
	for range 3 {
		c.Add(DefaultJWKSMinInterval)
		if _, err := v.Verify(tokA); err != nil {
			t.Fatalf("a known key while the URL is down: %v", err)
		}
		_, err := v.Verify(tokB)
		checkErr(t, err, ErrUnavailable, "could not be fetched", tokB)
	}
	if got := counter(t, reg, "chatr_auth_jwks_fetches_total", "error"); got != 4 {
		t.Errorf("fetch errors %v, want 4 (one per interval)", got)
	}
	if got := counter(t, reg, "chatr_auth_verified_total", "unavailable"); got != 4 {
		t.Errorf("chatr_auth_verified_total{result=unavailable} = %v, want 4", got)
	}
}

// TestJWKSFirstFetchFails: a verifier whose URL fails from the start
// refuses tokens as ErrUnavailable, and takes them once the URL answers
// (after the interval).
func TestJWKSFirstFetchFails(t *testing.T) {
	k := keys(t)
	c := newClock()
	s := newJWKSServer(t)
	s.serve(t, jwkOf(t, k.ed.Public(), "a", jwkset.AlgEdDSA))
	s.fail(http.StatusInternalServerError)
	v, _ := jwksVerifier(t, s, c)
	tok := sign(t, jwt.SigningMethodEdDSA, k.ed, claims(t0), "kid", "a")
	_, err := v.Verify(tok)
	checkErr(t, err, ErrUnavailable, "answered 500", tok)
	s.serve(t, jwkOf(t, k.ed.Public(), "a", jwkset.AlgEdDSA))
	_, err = v.Verify(tok)
	checkErr(t, err, ErrUnavailable, "answered 500", tok) // within the interval: not fetched again
	c.Add(DefaultJWKSMinInterval)
	if _, err := v.Verify(tok); err != nil {
		t.Fatalf("once the URL answers: %v", err)
	}
}

// TestJWKSBadAnswers: an answer that is not a usable set fails the fetch,
// saying why, and does not replace a good set.
func TestJWKSBadAnswers(t *testing.T) {
	k := keys(t)
	cases := []struct {
		name    string
		body    string
		mention string
	}{
		{"not JSON", "<html>login</html>", "not a JWK set"},
		{"no keys", `{"keys":[]}`, "holds no key"},
		{"only unusable keys", `{"keys":[{"kty":"oct","k":"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0","kid":"s"}]}`, `no usable key in the set (1 skipped; kid "s": a symmetric key`},
		{"too large", `{"keys":[` + strings.Repeat(" ", MaxJWKSBytes) + `]}`, "more than 1048576 bytes"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newClock()
			s := newJWKSServer(t)
			s.serve(t, jwkOf(t, k.ed.Public(), "a", jwkset.AlgEdDSA))
			v, reg := jwksVerifier(t, s, c)
			tokA := sign(t, jwt.SigningMethodEdDSA, k.ed, claims(t0), "kid", "a")
			if _, err := v.Verify(tokA); err != nil {
				t.Fatal(err)
			}
			s.mu.Lock()
			s.body = []byte(tc.body)
			s.mu.Unlock()
			c.Add(DefaultJWKSMinInterval)
			tokB := sign(t, jwt.SigningMethodES256, k.p256, claims(t0), "kid", "b")
			_, err := v.Verify(tokB)
			checkErr(t, err, ErrUnavailable, tc.mention, tokB)
			if _, err := v.Verify(tokA); err != nil {
				t.Errorf("the good set was dropped: %v", err)
			}
			if got := counter(t, reg, "chatr_auth_jwks_fetches_total", "error"); got != 1 {
				t.Errorf("fetch errors %v, want 1", got)
			}
		})
	}
}

// TestJWKSSkipsUnusableKeys: keys of a set that chatr must not verify with
// are skipped, the others used: a symmetric key (an HS token with its
// bytes is refused), a key for encryption, an RSA key under 2048 bits, a
// key whose JWK alg is not the token's.
func TestJWKSSkipsUnusableKeys(t *testing.T) {
	k := keys(t)
	c := newClock()
	s := newJWKSServer(t)
	sym := []byte("a-shared-secret-the-issuer-published-0123")
	enc := jwkOf(t, &k.p521.PublicKey, "enc", jwkset.AlgES512)
	enc.USE = jwkset.UseEnc
	noAlg := jwkOf(t, k.ed.Public(), "ed", jwkset.AlgEdDSA)
	noAlg.ALG = "" // the key's type alone says what it verifies
	s.serve(t,
		jwkset.JWKMarshal{KTY: jwkset.KtyOct, KID: "sym", ALG: jwkset.AlgHS256, K: base64.RawURLEncoding.EncodeToString(sym)},
		enc,
		jwkOf(t, &k.rsa1024.PublicKey, "weak", jwkset.AlgRS256),
		jwkOf(t, &k.rsa.PublicKey, "rs", jwkset.AlgRS256),
		noAlg,
	)
	v, _ := jwksVerifier(t, s, c)
	for _, tc := range []struct {
		name, token, mention string
	}{
		{"HS256 with the symmetric key", sign(t, jwt.SigningMethodHS256, sym, claims(t0), "kid", "sym"), "HS256 (HMAC) tokens are not taken"},
		{"encryption key", sign(t, jwt.SigningMethodES512, k.p521, claims(t0), "kid", "enc"), `no ES512 key with kid "enc"`},
		{"RSA 1024", sign(t, jwt.SigningMethodRS256, k.rsa1024, claims(t0), "kid", "weak"), `no RS256 key with kid "weak"`},
		{"PS256 for a key of alg RS256", sign(t, jwt.SigningMethodPS256, k.rsa, claims(t0), "kid", "rs"), `no PS256 key with kid "rs"`},
		{"ES256 under an Ed25519 kid", sign(t, jwt.SigningMethodES256, k.p256, claims(t0), "kid", "ed"), `no ES256 key with kid "ed"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := v.Verify(tc.token)
			checkErr(t, err, ErrInvalid, tc.mention, tc.token)
		})
	}
	for _, tok := range []string{
		sign(t, jwt.SigningMethodRS256, k.rsa, claims(t0), "kid", "rs"),
		sign(t, jwt.SigningMethodEdDSA, k.ed, claims(t0), "kid", "ed"),
		sign(t, jwt.SigningMethodEdDSA, k.ed, claims(t0)), // no kid: every key that fits
	} {
		if _, err := v.Verify(tok); err != nil {
			t.Errorf("a usable key of the set: %v", err)
		}
	}
	if n := s.requests.Load(); n != 1 {
		t.Errorf("%d fetches, want 1", n)
	}
}

// TestJWKSAndStaticKeys: with both, a token of a PEM key is taken whatever
// its kid, and one of the set by its kid.
func TestJWKSAndStaticKeys(t *testing.T) {
	k := keys(t)
	c := newClock()
	s := newJWKSServer(t)
	s.serve(t, jwkOf(t, &k.p256.PublicKey, "b", jwkset.AlgES256))
	v := newVerifier(t, c, Options{JWKSURL: s.URL, PublicKeys: []crypto.PublicKey{k.ed.Public()}, HMACSecrets: [][]byte{secret}})
	for _, tok := range []string{
		sign(t, jwt.SigningMethodEdDSA, k.ed, claims(t0), "kid", "b"),
		sign(t, jwt.SigningMethodEdDSA, k.ed, claims(t0), "kid", "zz"),
		sign(t, jwt.SigningMethodES256, k.p256, claims(t0), "kid", "b"),
		sign(t, jwt.SigningMethodHS256, secret, claims(t0), "kid", "b"),
	} {
		if _, err := v.Verify(tok); err != nil {
			t.Errorf("refused: %v", err)
		}
	}
	tok := sign(t, jwt.SigningMethodES256, k.p256b, claims(t0), "kid", "b")
	_, err := v.Verify(tok)
	checkErr(t, err, ErrInvalid, "signature", tok)
}

// TestJWKSConcurrent: many Verify calls at once on a fresh verifier make
// one fetch, and each gets its answer once it is in; a Verify whose key is
// at hand never waits for a fetch.
func TestJWKSConcurrent(t *testing.T) {
	k := keys(t)
	c := newClock()
	s := newJWKSServer(t)
	s.serve(t, jwkOf(t, &k.p256.PublicKey, "a", jwkset.AlgES256))
	// A fetch that waits longer than the test does, so that a Verify that
	// waits for it shows.
	v := newVerifier(t, c, Options{JWKSURL: s.URL, JWKSTimeout: time.Minute})
	tokA := sign(t, jwt.SigningMethodES256, k.p256, claims(t0), "kid", "a")
	hold := make(chan struct{})
	s.mu.Lock()
	s.hold = hold
	s.mu.Unlock()

	const n = 20
	var started, done sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		started.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			started.Done()
			_, err := v.Verify(tokA)
			errs <- err
		}()
	}
	started.Wait()
	close(hold)
	done.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("a concurrent Verify: %v", err)
		}
	}
	if got := s.requests.Load(); got != 1 {
		t.Errorf("%d fetches for %d concurrent Verify calls, want 1", got, n)
	}

	// A fetch that hangs holds up only the calls that need it.
	hold = make(chan struct{})
	s.mu.Lock()
	s.hold = hold
	s.mu.Unlock()
	t.Cleanup(func() { close(hold) }) // before the server's Close, which waits for handlers
	c.Add(DefaultJWKSMaxAge)
	tokB := sign(t, jwt.SigningMethodES256, k.p256, claims(t0), "kid", "b")
	for len(s.arrived) > 0 {
		<-s.arrived
	}
	fetching := make(chan error, 1)
	go func() { _, err := v.Verify(tokB); fetching <- err }()
	select {
	case <-s.arrived:
	case err := <-fetching:
		t.Fatalf("the Verify of an unknown kid returned without a fetch: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no fetch within 10s")
	}
	known := make(chan error, 1)
	go func() { _, err := v.Verify(tokA); known <- err }()
	select {
	case err := <-known:
		if err != nil {
			t.Errorf("a known key during a fetch: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a Verify of a known key waited for a fetch of another")
	}
}

// TestJWKSTimeout: a fetch that hangs ends after JWKSTimeout; its Verify
// says the key set could not be fetched.
func TestJWKSTimeout(t *testing.T) {
	k := keys(t)
	s := newJWKSServer(t)
	s.serve(t, jwkOf(t, &k.p256.PublicKey, "a", jwkset.AlgES256))
	hold := make(chan struct{})
	s.mu.Lock()
	s.hold = hold
	s.mu.Unlock()
	t.Cleanup(func() { close(hold) })
	v := newVerifier(t, newClock(), Options{JWKSURL: s.URL, JWKSTimeout: 50 * time.Millisecond})
	tok := sign(t, jwt.SigningMethodES256, k.p256, claims(t0), "kid", "a")
	start := time.Now()
	_, err := v.Verify(tok)
	checkErr(t, err, ErrUnavailable, "deadline exceeded", tok)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Verify took %v with a JWKSTimeout of 50ms", d)
	}
}
