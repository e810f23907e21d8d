package auth

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the Verifier's counters; they exist (unregistered) when no
// Registerer is given, so the code never checks.
type metrics struct {
	verified *prometheus.CounterVec // result: ok, expired, invalid, unavailable
	fetches  *prometheus.CounterVec // result: ok, error
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		verified: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatr_auth_verified_total",
			Help: "Tokens checked, by result: ok, expired (good but too old: the client gets a new one), invalid, unavailable (its JWKS key could not be fetched).",
		}, []string{"result"}),
		fetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatr_auth_jwks_fetches_total",
			Help: "Fetches of the JWKS (--auth-jwks-url), by result: ok, error (the last good key set stays in use).",
		}, []string{"result"}),
	}
	for _, r := range []string{"ok", "expired", "invalid", "unavailable"} {
		m.verified.WithLabelValues(r)
	}
	for _, r := range []string{"ok", "error"} {
		m.fetches.WithLabelValues(r)
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.verified, m.fetches} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	return m, nil
}

// resultLabel is the result label of Verify's error.
func resultLabel(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, ErrExpired):
		return "expired"
	case errors.Is(err, ErrUnavailable):
		return "unavailable"
	}
	return "invalid"
}
