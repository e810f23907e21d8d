package node

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"chatr/internal/auth"
	"chatr/internal/config"
	"chatr/internal/gateway"
)

// signIn builds what the gateway needs to take tokens and API keys from
// the --auth-* flags; nil and nil with auth off.
func signIn(cfg config.Config, log *slog.Logger, reg prometheus.Registerer) (gateway.Tokens, func(string) (string, bool), error) {
	if !cfg.AuthOn() {
		return nil, nil, nil
	}
	opts := auth.Options{JWKSURL: cfg.JWKSURL, Issuer: cfg.Issuer, Audience: cfg.Audience,
		Log: log.With("part", "auth"), Metrics: reg}
	for _, f := range []string{cfg.HMACSecretFile, cfg.HMACPreviousSecretFile} {
		if f == "" {
			continue
		}
		s, err := auth.LoadHMACSecret(f)
		if err != nil {
			return nil, nil, err
		}
		opts.HMACSecrets = append(opts.HMACSecrets, s)
	}
	if cfg.PublicKeyFile != "" {
		keys, err := auth.LoadPublicKeys(cfg.PublicKeyFile)
		if err != nil {
			return nil, nil, err
		}
		opts.PublicKeys = keys
	}
	v, err := auth.New(opts)
	if err != nil {
		return nil, nil, fmt.Errorf("auth: %w", err)
	}
	var apiKey func(string) (string, bool)
	if cfg.APIKeyFile != "" {
		keys, err := auth.LoadAPIKeys(cfg.APIKeyFile)
		if err != nil {
			return nil, nil, err
		}
		apiKey = keys.Lookup
	}
	return verifier{v}, apiKey, nil
}

// verifier is auth's Verifier as the gateway sees it.
type verifier struct{ v *auth.Verifier }

func (a verifier) Verify(token string) (gateway.Identity, error) {
	id, err := a.v.Verify(token)
	switch {
	case errors.Is(err, auth.ErrExpired):
		return gateway.Identity{}, fmt.Errorf("%w: %v", gateway.ErrTokenExpired, err)
	case errors.Is(err, auth.ErrUnavailable):
		return gateway.Identity{}, fmt.Errorf("%w: %v", gateway.ErrTokensUnavailable, err)
	case err != nil:
		return gateway.Identity{}, err
	case strings.HasPrefix(id.User, "key:"):
		// Programs with API keys post as key:<name>: no user may look like one.
		return gateway.Identity{}, fmt.Errorf("%w: a sub may not start with %q", auth.ErrInvalid, "key:")
	}
	return gateway.Identity{User: id.User, Name: id.Name, Expires: id.Expires, Admin: id.Admin,
		CanJoin: id.CanJoin, CanSend: id.CanSend}, nil
}
