package gateway

import "time"

// budget is a token bucket that may go into debt: work whose cost is
// known only once done (the bytes of a replay) takes it in full, and what
// comes next waits until the bucket has refilled above zero. Its owner
// serializes calls.
type budget struct {
	rate, burst float64 // tokens a second, and the most it holds
	tokens      float64
	last        time.Time
}

// newBudget returns a full budget.
func newBudget(rate, burst float64, now time.Time) *budget {
	return &budget{rate: rate, burst: burst, tokens: burst, last: now}
}

// available refills the budget to now and returns what it holds, which
// is negative while in debt.
func (b *budget) available(now time.Time) float64 {
	if now.After(b.last) {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
		b.last = now
	}
	return b.tokens
}

// take spends n tokens, going into debt if need be.
func (b *budget) take(n float64, now time.Time) {
	b.available(now)
	b.tokens -= n
}
