package gateway

import (
	"context"
	"testing"

	"github.com/coder/websocket"

	"chatr/internal/proto"
)

// Every frame type is rate-limited, not only sends: past --frame-burst,
// joins, leaves, pings and bad frames are answered rate_limited (sends
// keep their own --send-rate), and going on closes the session with 1008.
func TestFrameRateLimit(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, "--frame-rate", "0.001", "--frame-burst", "3")
	c := ts.hello(t, "fast") // 1
	c.Join("lobby", nil)     // 2
	c.Quiet()                // 3
	for _, f := range []struct{ frame, ref string }{
		{`{"type":"ping","ref":"p"}`, "p"},
		{`{"type":"join","room":"other","ref":"j"}`, "j"},
		{`{"type":"leave","room":"lobby","ref":"l"}`, "l"},
		{`{"type":"bogus","ref":"b"}`, "b"},
	} {
		c.Send(f.frame)
		c.ExpectError(proto.CodeRateLimited, f.ref)
	}
	// Sends have their own budget.
	c.Say("lobby", "still heard", "s1")
	if got := ts.metric(t, `chatr_limit_refused_total{limit="frame_rate"}`); got != 4 {
		t.Fatalf(`chatr_limit_refused_total{limit="frame_rate"} = %v, want 4`, got)
	}
	// Keep pinging (frames and WebSocket pings): the session is closed.
	for range maxRateBreaches {
		ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
		err := c.Conn.Write(ctx, websocket.MessageText, []byte(`{"type":"ping"}`))
		cancel()
		if err != nil {
			break // closed under us: fine
		}
	}
	c.ExpectClose(websocket.StatusPolicyViolation)
}
