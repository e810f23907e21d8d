package auth

import (
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/prometheus/client_golang/prometheus"
)

// MaxJWKSBytes bounds a JWKS answer: 1 MiB holds hundreds of RSA keys; an
// issuer's set has a few.
const MaxJWKSBytes = 1 << 20

// jwk is one usable key of a JWKS.
type jwk struct {
	kid string
	alg string // the JWK's alg, "" when it names none
	key crypto.PublicKey
}

// keySet is a JWKS fetched on demand by the Verify calls that need it (see
// Options.JWKSURL): no goroutine of its own. mu guards the fields below it
// and is never held during a fetch.
type keySet struct {
	url     string // as given, for requests
	shown   string // without a password, for logs and errors
	client  *http.Client
	timeout time.Duration
	every   time.Duration // JWKSMinInterval
	maxAge  time.Duration
	now     func() time.Time
	log     *slog.Logger
	fetches *prometheus.CounterVec

	mu        sync.Mutex
	keys      []jwk         // the last good set; nil before the first
	fetchedAt time.Time     // when keys were fetched
	triedAt   time.Time     // when the last fetch started, good or not
	lastErr   error         // of the last fetch; nil when it was good
	fetching  chan struct{} // closed when the running fetch ends; nil while none runs
}

func newKeySet(o Options, m *metrics) (*keySet, error) {
	u, err := url.Parse(o.JWKSURL)
	if err != nil {
		return nil, fmt.Errorf("JWKS URL: %v", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("JWKS URL %q: want an http:// or https:// URL", u.Redacted())
	}
	return &keySet{
		url: o.JWKSURL, shown: u.Redacted(), client: o.HTTPClient, timeout: o.JWKSTimeout,
		every: o.JWKSMinInterval, maxAge: o.JWKSMaxAge, now: o.Now, log: o.Log, fetches: m.fetches,
	}, nil
}

// lookup returns the keys that may verify a token signed with alg that
// names kid ("" when it names none: then every key that fits alg). It
// fetches the set first when it has no such key, or the set is older than
// maxAge, and the last fetch started at least every ago. Its errors are
// ErrInvalid (the set, fetched fine, lacks the key) or ErrUnavailable.
func (s *keySet) lookup(kid, alg string) ([]crypto.PublicKey, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		found := s.match(kid, alg)
		now := s.now()
		fresh := s.keys != nil && now.Sub(s.fetchedAt) < s.maxAge
		switch {
		case len(found) > 0 && (fresh || s.fetching != nil):
			return found, nil // a stale set serves while another caller refreshes it
		case s.fetching != nil:
			ch := s.fetching
			s.mu.Unlock()
			<-ch // at most the fetch's timeout
			s.mu.Lock()
			continue
		case !s.triedAt.IsZero() && now.Sub(s.triedAt) < s.every:
			if len(found) > 0 {
				return found, nil
			}
			return nil, s.missing(kid, alg)
		}
		s.fetch(now)
	}
}

// match returns the keys of the set for kid and alg; mu is held.
func (s *keySet) match(kid, alg string) []crypto.PublicKey {
	var out []crypto.PublicKey
	for _, k := range s.keys {
		if (kid != "" && k.kid != kid) || (k.alg != "" && k.alg != alg) || !keyFits(alg, k.key) {
			continue
		}
		out = append(out, k.key)
	}
	return out
}

// missing is the error for a key the set lacks; mu is held.
func (s *keySet) missing(kid, alg string) error {
	what := fmt.Sprintf("no %s key", alg)
	if kid != "" {
		what = fmt.Sprintf("no %s key with kid %q", alg, truncate(kid, 40))
	}
	if s.lastErr != nil {
		return fmt.Errorf("%w: %s in the key set, and the JWKS at %s could not be fetched: %v", ErrUnavailable, what, s.shown, s.lastErr)
	}
	return fmt.Errorf("%w: %s in the JWKS at %s", ErrInvalid, what, s.shown)
}

// fetch gets the set and keeps it when it is good; mu is held on entry
// and exit, but not while the request runs.
func (s *keySet) fetch(now time.Time) {
	s.triedAt = now
	done := make(chan struct{})
	s.fetching = done
	s.mu.Unlock()
	keys, skipped, err := s.get()
	s.mu.Lock()
	s.fetching = nil
	close(done)
	if err != nil {
		s.lastErr = err
		s.fetches.WithLabelValues("error").Inc()
		s.log.Warn("auth: JWKS fetch failed; the keys fetched before stay in use", "url", s.shown, "err", err, "keys", len(s.keys))
		return
	}
	s.fetches.WithLabelValues("ok").Inc()
	if !slices.Equal(kids(s.keys), kids(keys)) {
		s.log.Info("auth: JWKS keys", "url", s.shown, "kids", kids(keys), "skipped", skipped)
	}
	s.keys, s.fetchedAt, s.lastErr = keys, now, nil
}

func kids(keys []jwk) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k.kid
	}
	return out
}

// get fetches and parses the set. Keys chatr cannot use (symmetric ones,
// ones for encryption, RSA under MinRSABits, other curves, a JWK alg its
// key cannot do) are skipped and counted; a set with no usable key is an
// error.
func (s *keySet) get() (keys []jwk, skipped int, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return nil, 0, err
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, 0, fmt.Errorf("answered %s", resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxJWKSBytes+1))
	if err != nil {
		return nil, 0, fmt.Errorf("reading the answer: %w", err)
	}
	if len(body) > MaxJWKSBytes {
		return nil, 0, fmt.Errorf("answer of more than %d bytes", MaxJWKSBytes)
	}
	var set jwkset.JWKSMarshal
	if err := json.Unmarshal(body, &set); err != nil {
		return nil, 0, fmt.Errorf("not a JWK set: %v", err)
	}
	var firstErr error
	for _, m := range set.Keys {
		k, err := usableKey(m)
		if err != nil {
			if skipped++; firstErr == nil {
				firstErr = fmt.Errorf("kid %q: %w", truncate(m.KID, 40), err)
			}
			continue
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		if firstErr == nil {
			return nil, skipped, errors.New("the set holds no key")
		}
		return nil, skipped, fmt.Errorf("no usable key in the set (%d skipped; %v)", skipped, firstErr)
	}
	return keys, skipped, nil
}

// usableKey checks and converts one JWK (jwkset validates its fields).
func usableKey(m jwkset.JWKMarshal) (jwk, error) {
	if m.USE != "" && m.USE != jwkset.UseSig {
		return jwk{}, fmt.Errorf("use %q, not sig", m.USE)
	}
	if len(m.KEYOPS) > 0 && !slices.Contains(m.KEYOPS, jwkset.KeyOpsVerify) {
		return jwk{}, errors.New("key_ops without verify")
	}
	if m.KTY == jwkset.KtyOct {
		return jwk{}, errors.New("a symmetric key (kty oct): HMAC secrets are given as files, never fetched")
	}
	j, err := jwkset.NewJWKFromMarshal(m, jwkset.JWKMarshalOptions{}, jwkset.JWKValidateOptions{})
	if err != nil {
		return jwk{}, err
	}
	k := j.Key()
	if err := checkPublicKey(k); err != nil {
		return jwk{}, err
	}
	if m.ALG != "" && !keyFits(string(m.ALG), k) {
		return jwk{}, fmt.Errorf("alg %q does not fit its %T key", truncate(string(m.ALG), 20), k)
	}
	return jwk{kid: m.KID, alg: string(m.ALG), key: k}, nil
}
