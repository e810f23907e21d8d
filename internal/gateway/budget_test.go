package gateway

import (
	"testing"
	"time"
)

func TestBudget(t *testing.T) {
	t0 := time.Unix(1000, 0)
	b := newBudget(10, 100, t0)
	steps := []struct {
		at   time.Duration
		take float64
		want float64 // available after the take
	}{
		{0, 30, 70},
		{time.Second, 0, 80},              // refilled 10
		{2 * time.Second, 200, -110},      // debt: 90 - 200
		{12 * time.Second, 0, -10},        // 10 s later, still in debt
		{13 * time.Second, 0, 0},          // paid off
		{time.Hour, 0, 100},               // never more than the burst
		{time.Hour - time.Second, 0, 100}, // time going back changes nothing
	}
	for _, s := range steps {
		now := t0.Add(s.at)
		b.take(s.take, now)
		if got := b.available(now); got != s.want {
			t.Fatalf("at %v after taking %v: %v available, want %v", s.at, s.take, got, s.want)
		}
	}
}
