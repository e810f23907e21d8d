package config

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"strings"
	"time"

	"chatr/internal/auth"
)

// Auth are the settings of who is who: where a node finds the keys that
// sign people's tokens, what it checks in them, and the API keys of
// programs. They are only checked here (files readable and well-formed);
// the node reads them again to build its auth.Verifier and auth.APIKeys.
type Auth struct {
	// HMACSecretFile (--auth-hmac-secret-file) holds the secret of HS256,
	// HS384 and HS512 tokens (auth.LoadHMACSecret); HMACPreviousSecretFile
	// (--auth-hmac-previous-secret-file) the one before it, still taken
	// during a rotation.
	HMACSecretFile         string
	HMACPreviousSecretFile string
	// PublicKeyFile (--auth-public-key-file) holds PEM public keys of RS*,
	// PS*, ES* and EdDSA tokens (auth.LoadPublicKeys).
	PublicKeyFile string
	// JWKSURL (--auth-jwks-url) serves a JSON Web Key Set of such keys.
	JWKSURL string
	// Issuer and Audience (--auth-issuer, --auth-audience), when set, must
	// be a token's iss and one of its aud.
	Issuer, Audience string
	// ExpiredGrace (--auth-expired-grace) is how long a session whose
	// token has expired may stay, for its client to send a new one.
	ExpiredGrace time.Duration
	// TokenURL (--auth-token-url) is where clients get a token: an http(s)
	// URL, or a path on this node.
	TokenURL string
	// APIKeyFile (--api-key-file) holds the API keys of programs, one a
	// line, `key` or `name:key` (auth.LoadAPIKeys).
	APIKeyFile string
}

// maxExpiredGrace caps --auth-expired-grace: a grace of minutes would let
// a revoked user stay as long.
const maxExpiredGrace = 5 * time.Minute

// AuthOn reports whether people need a token: a key of some kind is given.
func (a *Auth) AuthOn() bool {
	return a.HMACSecretFile != "" || a.PublicKeyFile != "" || a.JWKSURL != ""
}

// addFlags defines the flags of a on fs.
func (a *Auth) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&a.HMACSecretFile, "auth-hmac-secret-file", "", "`file` holding the secret of HS256/384/512 tokens (at least 32 bytes, taken as they are, white space trimmed): clients then need a token")
	fs.StringVar(&a.HMACPreviousSecretFile, "auth-hmac-previous-secret-file", "", "`file` holding the previous HMAC secret, whose tokens stay valid during a rotation")
	fs.StringVar(&a.PublicKeyFile, "auth-public-key-file", "", "`file` of PEM public keys or certificates (RSA for RS*/PS*, ECDSA for ES*, Ed25519 for EdDSA) that sign tokens: clients then need a token")
	fs.StringVar(&a.JWKSURL, "auth-jwks-url", "", "http(s) `URL` of a JSON Web Key Set that signs tokens (fetched when needed, again on an unknown kid at most every 10s; the last good set stays in use while it fails): clients then need a token")
	fs.StringVar(&a.Issuer, "auth-issuer", "", "`issuer` a token's iss must be (default: any)")
	fs.StringVar(&a.Audience, "auth-audience", "", "`audience` a token's aud must name (default: any)")
	fs.DurationVar(&a.ExpiredGrace, "auth-expired-grace", 25*time.Second, "how long a session whose token expired may stay for its client to send a new one (at most 5m)")
	fs.StringVar(&a.TokenURL, "auth-token-url", "", "where clients get a token: an http(s) `URL`, or a path on this node")
	fs.StringVar(&a.APIKeyFile, "api-key-file", "", "`file` of API keys, one a line (key or name:key): a program with Authorization: Bearer KEY may post to the HTTP API as any sender (needs auth on)")
}

// validate checks a, reporting each problem with add.
func (a *Auth) validate(add func(error)) {
	var current []byte
	if a.HMACSecretFile != "" {
		s, err := auth.LoadHMACSecret(a.HMACSecretFile)
		add(flagErr("auth-hmac-secret-file", err))
		current = s
	}
	switch {
	case a.HMACPreviousSecretFile != "" && a.HMACSecretFile == "":
		add(errors.New("--auth-hmac-previous-secret-file needs --auth-hmac-secret-file: the current secret, which signs new tokens"))
	case a.HMACPreviousSecretFile != "":
		s, err := auth.LoadHMACSecret(a.HMACPreviousSecretFile)
		add(flagErr("auth-hmac-previous-secret-file", err))
		if err == nil && current != nil && bytes.Equal(s, current) {
			add(errors.New("--auth-hmac-previous-secret-file holds the same secret as --auth-hmac-secret-file: give the old one, or drop the flag"))
		}
	}
	if a.PublicKeyFile != "" {
		_, err := auth.LoadPublicKeys(a.PublicKeyFile)
		add(flagErr("auth-public-key-file", err))
	}
	if a.JWKSURL != "" {
		add(checkHTTPURL("auth-jwks-url", a.JWKSURL, false))
	}
	if a.TokenURL != "" {
		add(checkHTTPURL("auth-token-url", a.TokenURL, true))
	}
	if a.APIKeyFile != "" {
		_, err := auth.LoadAPIKeys(a.APIKeyFile)
		add(flagErr("api-key-file", err))
	}
	if a.ExpiredGrace < 0 || a.ExpiredGrace > maxExpiredGrace {
		add(fmt.Errorf("--auth-expired-grace %v: must be from 0 to %v", a.ExpiredGrace, maxExpiredGrace))
	}
	if !a.AuthOn() {
		const on = "auth on: give --auth-hmac-secret-file, --auth-public-key-file or --auth-jwks-url"
		for _, f := range []struct{ name, v string }{{"auth-issuer", a.Issuer}, {"auth-audience", a.Audience}, {"auth-token-url", a.TokenURL}} {
			if f.v != "" {
				add(fmt.Errorf("--%s needs %s", f.name, on))
			}
		}
		if a.APIKeyFile != "" {
			add(fmt.Errorf("--api-key-file needs %s (without auth, the HTTP API takes any sender from anyone, and a key would add nothing)", on))
		}
	}
}

func flagErr(name string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("--%s: %w", name, err)
}

// checkHTTPURL checks that s is an http or https URL with a host (or, when
// pathOK, a path starting with /).
func checkHTTPURL(name, s string, pathOK bool) error {
	if pathOK && strings.HasPrefix(s, "/") && !strings.HasPrefix(s, "//") {
		return nil
	}
	want := "want an http:// or https:// URL"
	if pathOK {
		want += " or a path starting with /"
	}
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return fmt.Errorf("--%s %q: %v", name, s, err)
	case u.Scheme != "http" && u.Scheme != "https" || u.Host == "":
		return fmt.Errorf("--%s %q: %s", name, s, want)
	}
	return nil
}
