package gateway

import (
	"errors"
	"net/http"
	"strings"
	"time"

	"chatr/internal/proto"
)

// Tokens checks client tokens when auth is on; the node gives the gateway
// one built from the --auth-* flags (internal/auth).
type Tokens interface {
	// Verify says who token is for. An error wraps ErrTokenExpired when the
	// token was good but has expired (the client should fetch a new one);
	// any other error means the token is not acceptable at all.
	Verify(token string) (Identity, error)
}

// ErrTokenExpired is a token that was good but has expired.
var ErrTokenExpired = errors.New("token expired")

// ErrTokensUnavailable is a token whose signing key cannot be had now (a
// JWKS URL down): the client should try again later, not sign in again.
var ErrTokensUnavailable = errors.New("token keys unavailable")

// Identity is who a token says a client is.
type Identity struct {
	User    string // the token's sub
	Name    string // display name
	Expires time.Time
	Admin   bool
	// CanJoin and CanSend say whether the user may join (read) and send to
	// a room; nil allows every room.
	CanJoin, CanSend func(room string) bool
}

func (id *Identity) canJoin(room string) bool {
	return id == nil || id.CanJoin == nil || id.CanJoin(room)
}
func (id *Identity) canSend(room string) bool {
	return id == nil || id.CanSend == nil || id.CanSend(room)
}

// tokenError turns a failed Verify into what the client is told.
func tokenError(err error) *proto.Error {
	if errors.Is(err, ErrTokenExpired) {
		return proto.Errorf(proto.CodeTokenExpired, "the token has expired; get a new one")
	}
	if errors.Is(err, ErrTokensUnavailable) {
		return proto.Errorf(proto.CodeUnavailable, "this node cannot check tokens right now; try again shortly")
	}
	return proto.Errorf(proto.CodeUnauthorized, "the token is not accepted here: %v", err)
}

// bearer is the credential of an Authorization: Bearer header, or "".
func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}

// caller is who an HTTP request comes from when auth is on: a program with
// an API key (Key names it; it may post as any sender), or a user's token.
type caller struct {
	Key string
	ID  *Identity
}

// authorize checks an HTTP request's credentials. With auth off it lets
// everyone through (a nil caller). Otherwise it answers 401 itself and
// returns ok false.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request) (c *caller, ok bool) {
	if s.opts.Tokens == nil {
		return nil, true
	}
	cred := bearer(r)
	if cred == "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="chatr"`)
		writeError(w, http.StatusUnauthorized, proto.Errorf(proto.CodeUnauthorized, "sign-in required: send Authorization: Bearer <token or API key>"))
		return nil, false
	}
	if s.opts.APIKey != nil {
		if name, ok := s.opts.APIKey(cred); ok {
			return &caller{Key: name}, true
		}
	}
	id, err := s.opts.Tokens.Verify(cred)
	if err != nil {
		w.Header().Set("WWW-Authenticate", `Bearer realm="chatr", error="invalid_token"`)
		perr := tokenError(err)
		s.metrics.errors.WithLabelValues(perr.Code).Inc()
		status := http.StatusUnauthorized
		if perr.Code == proto.CodeUnavailable {
			status = http.StatusServiceUnavailable
		}
		writeError(w, status, perr)
		return nil, false
	}
	return &caller{ID: &id}, true
}

// tokenDeadline is a session's token: when it expires, and when the
// session is closed if no refresh comes (after --auth-expired-grace).
type tokenDeadline struct {
	expires time.Time
	warned  bool // told token_expired
}

// watchToken (re)starts the watch of a session's token expiry; the sweeper
// tells the session when it expires and closes it after the grace.
func (s *Server) watchToken(sess *session, expires time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tokens == nil {
		s.tokens = map[*session]*tokenDeadline{}
	}
	s.tokens[sess] = &tokenDeadline{expires: expires}
}

// sweepTokens warns sessions whose token expired and closes, with 4001,
// those that sent no refresh within the grace. now is the sweep's time.
func (s *Server) sweepTokens(now time.Time) {
	var warn, late []*session
	s.mu.Lock()
	for sess, d := range s.tokens {
		switch {
		case now.After(d.expires.Add(s.opts.ExpiredGrace)):
			late = append(late, sess)
			delete(s.tokens, sess)
		case !d.warned && now.After(d.expires):
			d.warned = true
			warn = append(warn, sess)
		}
	}
	s.mu.Unlock()
	for _, sess := range warn {
		sess.sendError("", proto.Errorf(proto.CodeTokenExpired, "your token has expired: send refresh with a new one within %v", s.opts.ExpiredGrace))
	}
	for _, sess := range late {
		sess.close(proto.CloseTokenExpired, "token expired")
	}
}

// serveClientConfig answers /chatr/config.json: what the web client needs
// to know before it connects (whether to sign in, and where).
func (s *Server) serveClientConfig(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, struct {
		Auth     bool   `json:"auth"`
		TokenURL string `json:"tokenURL,omitempty"`
	}{Auth: s.opts.Tokens != nil, TokenURL: s.opts.TokenURL})
}

// adminCredential reports whether a request carries an admin's credential:
// a program's API key, or a token with admin: true.
func (s *Server) adminCredential(r *http.Request) bool {
	cred := bearer(r)
	if cred == "" || s.opts.Tokens == nil {
		return false
	}
	if s.opts.APIKey != nil {
		if _, ok := s.opts.APIKey(cred); ok {
			return true
		}
	}
	id, err := s.opts.Tokens.Verify(cred)
	return err == nil && id.Admin
}
