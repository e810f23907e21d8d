package auth

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the Verifier's counters; they exist (unregistered) when no
// Registerer is given, so the code never checks.
type metrics struct {
	verified *prometheus.CounterVec // result: ok, expired, invalid
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		verified: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatr_auth_verified_total",
			Help: "Tokens checked, by result: ok, expired (good but too old: the client gets a new one), invalid.",
		}, []string{"result"}),
	}
	for _, r := range []string{"ok", "expired", "invalid"} {
		m.verified.WithLabelValues(r)
	}
	if reg == nil {
		return m, nil
	}
	if err := reg.Register(m.verified); err != nil {
		return nil, fmt.Errorf("register metrics: %w", err)
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
	}
	return "invalid"
}
