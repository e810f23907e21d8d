package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/gobwas/ws/wsutil"

	"chatr/internal/proto"
)

// With --window W, a sender never has more than W sends waiting for their
// ack, however high --rate is, and each answer lets one more go.
func TestWindowLimitsSendsInFlight(t *testing.T) {
	const window = 3
	got := make(chan error, 1)
	url := fakeNode(t, func(c net.Conn) {
		got <- func() error {
			if _, err := wsutil.ReadClientText(c); err != nil { // join
				return err
			}
			wsutil.WriteServerText(c, []byte(`{"type":"synced","room":"x","cursor":""}`))
			read := func(d time.Duration) (string, error) {
				c.SetReadDeadline(time.Now().Add(d))
				b, err := wsutil.ReadClientText(c)
				if err != nil {
					return "", err
				}
				var in proto.Inbound
				return in.Ref, json.Unmarshal(b, &in)
			}
			var refs []string
			for len(refs) < window {
				ref, err := read(10 * time.Second)
				if err != nil {
					return fmt.Errorf("send %d: %w", len(refs)+1, err)
				}
				refs = append(refs, ref)
			}
			if ref, err := read(300 * time.Millisecond); err == nil {
				return fmt.Errorf("send %q past a window of %d", ref, window)
			}
			// An ack and an error each make room for one more send.
			for _, answer := range []string{
				`{"type":"ack","ref":"` + refs[0] + `","id":"0123456789ab-1","created":"2026-11-28T00:00:00Z"}`,
				`{"type":"error","ref":"` + refs[1] + `","code":"rate_limited","message":"slow down"}`,
			} {
				wsutil.WriteServerText(c, []byte(answer))
				if _, err := read(10 * time.Second); err != nil {
					return fmt.Errorf("no send after %s: %w", answer, err)
				}
				if ref, err := read(300 * time.Millisecond); err == nil {
					return fmt.Errorf("send %q past the window after %s", ref, answer)
				}
			}
			return nil
		}()
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		Run(ctx, Config{URLs: []string{url}, Conns: 1, Rooms: 1, Senders: 1, Rate: 100000, Window: window,
			Size: 64, Duration: 20 * time.Second, Drain: time.Millisecond})
	}()
	defer func() { cancel(); <-done }()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the fake node heard nothing")
	}
}
