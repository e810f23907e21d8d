// Package auth says who is who: it verifies the signed tokens (JWTs) that
// people's clients present, says which rooms their Identity may join and
// send to, and looks up the API keys of programs.
//
// Tokens are checked with github.com/golang-jwt/jwt/v5: HS256/384/512
// against HMAC secrets, RS*/PS*, ES256/384/512 and EdDSA against public
// keys (from PEM files or a JWKS URL). A token's alg must fit the key's
// type: "none" is never taken, and an HS token is never checked against a
// public key.
package auth

import (
	"crypto"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus"
)

// The errors of Verify. Every error it returns is one of them (errors.Is);
// its message says what is wrong with the token, never the token itself.
var (
	// ErrExpired: the token was good but its exp has passed; the client
	// should get a new one.
	ErrExpired = errors.New("token expired")
	// ErrInvalid: anything else that is wrong with a token (malformed, bad
	// signature, an alg that does not fit the keys, iss or aud not the
	// ones wanted, nbf in the future, sub or exp missing, a bad claim).
	ErrInvalid = errors.New("invalid token")
	// ErrUnavailable: the token names a key of the JWKS that could not be
	// fetched (the URL fails, and no key set it fetched before has the
	// key). The token may be good: try again later rather than log in
	// again.
	ErrUnavailable = errors.New("token cannot be checked now")
)

// Limits on what a token may hold. A token is a WebSocket hello field or an
// HTTP header, so it is bounded before anything is decoded.
const (
	MaxTokenBytes   = 8 << 10 // a whole token, as sent
	MaxSubLen       = 128     // characters of sub
	MaxNameBytes    = 64      // bytes of name
	MaxPatterns     = 256     // patterns in rooms, and in read
	MaxPatternBytes = 128     // bytes of one pattern (a room name has at most 64)

	maxDetail = 200 // bytes of the jwt library's words in an error, which may quote a claim
)

// Defaults of Options, used where a field is zero.
const (
	// DefaultLeeway covers the clock skew of hosts kept by NTP (well under
	// a second) with room for a VM paused a few seconds; an expired token
	// is a cheap round trip to fix, so it need not be minutes.
	DefaultLeeway = 5 * time.Second
	// DefaultJWKSTimeout bounds one JWKS fetch, and so the wait of a
	// Verify that needs it.
	DefaultJWKSTimeout = 5 * time.Second
	// DefaultJWKSMinInterval is the least time between two JWKS fetches,
	// whatever asks for them: tokens with made-up key ids cost the issuer
	// at most one request per node every 10 s.
	DefaultJWKSMinInterval = 10 * time.Second
	// DefaultJWKSMaxAge is how long a fetched key set is used before the
	// next Verify that uses it fetches it again: a key the issuer drops
	// stops working within 5 minutes, for one request per node per 5
	// minutes.
	DefaultJWKSMaxAge = 5 * time.Minute
)

// Options configure a Verifier. At least one of HMACSecrets, PublicKeys
// and JWKSURL is needed.
type Options struct {
	// HMACSecrets verify HS256, HS384 and HS512 tokens: the current
	// secret first, then previous ones, which stay valid during a
	// rotation. Each has at least MinHMACSecret bytes (LoadHMACSecret).
	HMACSecrets [][]byte
	// PublicKeys verify RS256/384/512 and PS256/384/512 (*rsa.PublicKey,
	// at least MinRSABits), ES256, ES384, ES512 (*ecdsa.PublicKey on
	// P-256, P-384, P-521: each alg its own curve) and EdDSA
	// (ed25519.PublicKey) tokens, whatever their kid (LoadPublicKeys).
	PublicKeys []crypto.PublicKey
	// JWKSURL is an http or https URL serving a JSON Web Key Set whose
	// public keys verify tokens by their kid. It is fetched when a Verify
	// first needs it, again when a token names a kid it lacks or the set
	// is older than JWKSMaxAge, never more often than JWKSMinInterval; when
	// a fetch fails the last good set stays in use.
	JWKSURL string
	// Issuer and Audience, when set, must be the token's iss and one of
	// its aud.
	Issuer, Audience string

	// HTTPClient fetches the JWKS (default http.DefaultClient). Each fetch
	// is also bounded by JWKSTimeout.
	HTTPClient *http.Client
	// JWKSTimeout, JWKSMinInterval and JWKSMaxAge: see JWKSURL and the
	// Default constants.
	JWKSTimeout, JWKSMinInterval, JWKSMaxAge time.Duration

	// Leeway is the clock skew allowed on exp and nbf: 0 means
	// DefaultLeeway (5 s), a negative value none.
	Leeway time.Duration

	// Log gets a line for each JWKS fetch that fails (warn) or changes the
	// key ids (info); never one per token. Default: no logs.
	Log *slog.Logger
	// Metrics, when set, gets chatr_auth_verified_total{result} and
	// chatr_auth_jwks_fetches_total{result}.
	Metrics prometheus.Registerer
	// Now is the clock (default time.Now); tests set it.
	Now func() time.Time
}

// setDefaults fills the zero fields of o: the one place defaults are set.
func (o *Options) setDefaults() {
	if o.HTTPClient == nil {
		o.HTTPClient = http.DefaultClient
	}
	if o.JWKSTimeout <= 0 {
		o.JWKSTimeout = DefaultJWKSTimeout
	}
	if o.JWKSMinInterval <= 0 {
		o.JWKSMinInterval = DefaultJWKSMinInterval
	}
	if o.JWKSMaxAge <= 0 {
		o.JWKSMaxAge = DefaultJWKSMaxAge
	}
	switch {
	case o.Leeway == 0:
		o.Leeway = DefaultLeeway
	case o.Leeway < 0:
		o.Leeway = 0
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// A Verifier checks tokens. It is safe for concurrent use and starts no
// goroutine: a Verify that needs the JWKS fetches it on the caller's
// goroutine (waiting at most JWKSTimeout); at most one fetch runs at a
// time, and other Verify calls that need its result wait for it, while
// those whose key is at hand do not.
type Verifier struct {
	opts      Options
	jwks      *keySet // nil without a JWKSURL
	parser    *jwt.Parser
	validator *jwt.Validator // every registered claim but exp, which verify checks last
	metrics   *metrics
}

// New makes a Verifier from opts. It checks the keys and registers the
// metrics; it fetches nothing.
func New(opts Options) (*Verifier, error) {
	opts.setDefaults()
	if len(opts.HMACSecrets) == 0 && len(opts.PublicKeys) == 0 && opts.JWKSURL == "" {
		return nil, errors.New("auth: no key: give an HMAC secret, a public key or a JWKS URL")
	}
	secrets := make([][]byte, len(opts.HMACSecrets))
	for i, s := range opts.HMACSecrets {
		if len(s) < MinHMACSecret {
			return nil, fmt.Errorf("auth: HMAC secret %d holds %d bytes, want at least %d", i+1, len(s), MinHMACSecret)
		}
		secrets[i] = slices.Clone(s)
	}
	opts.HMACSecrets = secrets
	for i, k := range opts.PublicKeys {
		if err := checkPublicKey(k); err != nil {
			return nil, fmt.Errorf("auth: public key %d: %w", i+1, err)
		}
	}
	opts.PublicKeys = slices.Clone(opts.PublicKeys)
	m, err := newMetrics(opts.Metrics)
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	v := &Verifier{opts: opts, metrics: m}
	if opts.JWKSURL != "" {
		if v.jwks, err = newKeySet(opts, m); err != nil {
			return nil, fmt.Errorf("auth: %w", err)
		}
	}
	// Claims are checked apart from the signature (verify), so that an
	// expired token is told from a bad one.
	v.parser = jwt.NewParser(jwt.WithValidMethods(algs), jwt.WithoutClaimsValidation())
	vopts := []jwt.ParserOption{jwt.WithLeeway(opts.Leeway), jwt.WithTimeFunc(opts.Now)}
	if opts.Issuer != "" {
		vopts = append(vopts, jwt.WithIssuer(opts.Issuer))
	}
	if opts.Audience != "" {
		vopts = append(vopts, jwt.WithAudience(opts.Audience))
	}
	v.validator = jwt.NewValidator(vopts...)
	return v, nil
}

// Identity is who a verified token says its holder is, and what they may do.
type Identity struct {
	User string // sub: the user id
	Name string // name: the display name (sub when the token has none); the caller applies its own rules
	// Rooms are the glob patterns (path.Match) of the rooms the holder may
	// join and send to; nil (no rooms claim) means every room, and an
	// empty list none but those of Read.
	Rooms []string
	// Read are the patterns of rooms the holder may join but not send to
	// (unless Rooms names them too).
	Read    []string
	Admin   bool      // admin: may use the admin routes
	Expires time.Time // exp
}

// CanJoin reports whether the holder may join room: Rooms or Read matches
// it, or there is no rooms claim.
func (id Identity) CanJoin(room string) bool {
	return id.Rooms == nil || matchAny(id.Rooms, room) || matchAny(id.Read, room)
}

// CanSend reports whether the holder may send to room: Rooms matches it,
// or there is no rooms claim and Read does not match it (so a token of
// read: ["*"] alone reads everything and sends nowhere).
func (id Identity) CanSend(room string) bool {
	if id.Rooms == nil {
		return !matchAny(id.Read, room)
	}
	return matchAny(id.Rooms, room)
}

func matchAny(patterns []string, room string) bool {
	for _, p := range patterns {
		if ok, _ := path.Match(p, room); ok { // patterns are checked at Verify
			return true
		}
	}
	return false
}

// tokenClaims are the claims of a chatr token.
type tokenClaims struct {
	jwt.RegisteredClaims
	Name  string   `json:"name,omitempty"`
	Rooms []string `json:"rooms,omitzero"` // absent: every room; [] none
	Read  []string `json:"read,omitempty"`
	Admin bool     `json:"admin,omitempty"`
}

// Verify checks token and returns the identity it carries. Its errors are
// ErrExpired, ErrInvalid or ErrUnavailable (errors.Is).
func (v *Verifier) Verify(token string) (Identity, error) {
	id, err := v.verify(token)
	v.metrics.verified.WithLabelValues(resultLabel(err)).Inc()
	return id, err
}

func (v *Verifier) verify(token string) (Identity, error) {
	switch {
	case token == "":
		return Identity{}, fmt.Errorf("%w: no token", ErrInvalid)
	case len(token) > MaxTokenBytes:
		return Identity{}, fmt.Errorf("%w: %d bytes, more than %d", ErrInvalid, len(token), MaxTokenBytes)
	}
	var c tokenClaims
	if _, err := v.parser.ParseWithClaims(token, &c, v.keyfunc); err != nil {
		var ke *keyError
		if errors.As(err, &ke) {
			return Identity{}, ke.err // says what it is already
		}
		// jwt's messages may quote a claim's value: cut them short.
		return Identity{}, fmt.Errorf("%w: %s", ErrInvalid, truncate(err.Error(), maxDetail))
	}
	// Everything but exp first: only a token that is good but for its age
	// is ErrExpired.
	exp := c.ExpiresAt
	c.ExpiresAt = nil
	if err := v.validator.Validate(c); err != nil {
		return Identity{}, fmt.Errorf("%w: %s", ErrInvalid, truncate(err.Error(), maxDetail))
	}
	if err := c.check(); err != nil {
		return Identity{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if exp == nil {
		return Identity{}, fmt.Errorf("%w: no exp claim", ErrInvalid)
	}
	if !v.opts.Now().Before(exp.Add(v.opts.Leeway)) {
		return Identity{}, fmt.Errorf("%w at %s: get a new one", ErrExpired, exp.UTC().Format(time.RFC3339))
	}
	name := c.Name
	if name == "" {
		name = c.Subject
	}
	return Identity{User: c.Subject, Name: name, Rooms: c.Rooms, Read: c.Read, Admin: c.Admin, Expires: exp.Time}, nil
}

// keyError is an error of keyfunc, already one of the package's errors.
type keyError struct{ err error }

func (e *keyError) Error() string { return e.err.Error() }

func keyErrorf(sentinel error, format string, args ...any) error {
	return &keyError{fmt.Errorf("%w: "+format, append([]any{sentinel}, args...)...)}
}

// keyfunc gives jwt the keys that may have signed t: the HMAC secrets for
// HS algs, the public keys whose type fits the alg otherwise.
func (v *Verifier) keyfunc(t *jwt.Token) (any, error) {
	alg := t.Method.Alg()
	if _, ok := t.Header["crit"]; ok {
		// RFC 7515 4.1.11: a token whose critical extensions are not
		// understood must be refused, and none is here.
		return nil, keyErrorf(ErrInvalid, "a crit header: no JWS extension is understood here")
	}
	var kid string
	if k, ok := t.Header["kid"]; ok {
		s, ok := k.(string)
		if !ok {
			return nil, keyErrorf(ErrInvalid, "the kid header is not a string")
		}
		kid = s
	}
	var keys []jwt.VerificationKey
	if isHMAC(alg) {
		for _, s := range v.opts.HMACSecrets {
			keys = append(keys, s)
		}
		if len(keys) == 0 {
			return nil, keyErrorf(ErrInvalid, "%s (HMAC) tokens are not taken here, only tokens signed with a private key", alg)
		}
		return jwt.VerificationKeySet{Keys: keys}, nil
	}
	for _, k := range v.opts.PublicKeys {
		if keyFits(alg, k) {
			keys = append(keys, k)
		}
	}
	if v.jwks != nil {
		ks, err := v.jwks.lookup(kid, alg)
		if err != nil && len(keys) == 0 {
			return nil, &keyError{err}
		}
		for _, k := range ks {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return nil, keyErrorf(ErrInvalid, "no key here verifies %s tokens", alg)
	}
	return jwt.VerificationKeySet{Keys: keys}, nil
}

// check applies chatr's rules to the claims that are not registered ones,
// and to sub.
func (c *tokenClaims) check() error {
	if err := checkSub(c.Subject); err != nil {
		return err
	}
	if err := checkName(c.Name); err != nil {
		return err
	}
	if err := checkPatterns("rooms", c.Rooms); err != nil {
		return err
	}
	return checkPatterns("read", c.Read)
}

func checkSub(sub string) error {
	switch n := utf8.RuneCountInString(sub); {
	case sub == "":
		return errors.New("no sub claim (the user id)")
	case n > MaxSubLen:
		return fmt.Errorf("sub of %d characters, more than %d", n, MaxSubLen)
	case !utf8.ValidString(sub):
		return errors.New("sub is not valid UTF-8")
	case strings.TrimSpace(sub) != sub:
		return errors.New("sub starts or ends with white space")
	}
	for _, r := range sub {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("sub holds %U, which is not a printable character", r)
		}
	}
	return nil
}

func checkName(name string) error {
	switch {
	case len(name) > MaxNameBytes:
		return fmt.Errorf("name of %d bytes, more than %d", len(name), MaxNameBytes)
	case !utf8.ValidString(name):
		return errors.New("name is not valid UTF-8")
	}
	return nil
}

func checkPatterns(claim string, patterns []string) error {
	if len(patterns) > MaxPatterns {
		return fmt.Errorf("%s holds %d patterns, more than %d", claim, len(patterns), MaxPatterns)
	}
	for i, p := range patterns {
		if p == "" || len(p) > MaxPatternBytes {
			return fmt.Errorf("%s pattern %d is %d bytes, want 1 to %d", claim, i+1, len(p), MaxPatternBytes)
		}
		if _, err := path.Match(p, ""); err != nil {
			return fmt.Errorf("%s pattern %d %q: %v", claim, i+1, p, err)
		}
	}
	return nil
}

// truncate cuts s to at most n bytes, for error messages about what a
// stranger sent.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
