package gateway

import (
	"fmt"
	"net"
	"testing"
	"time"

	"chatr/internal/client/clienttest"
	"chatr/internal/proctest"
)

// TestReplaysCountInTheSendQueue: a join's replay weighs as many frames as
// it holds in the slow-consumer bound and in the queue gauge, so a client
// that joins again and again without reading is cut off with 4000 after a
// few replays (64 x --send-queue frames waiting), not after 64 x
// --send-queue joins of up to --replay-max messages each.
func TestReplaysCountInTheSendQueue(t *testing.T) {
	t.Parallel()
	const history = 1000
	ts := startTestServer(t, func(c net.Conn) { c.(*net.TCPConn).SetWriteBuffer(16 << 10) }, "--send-queue", "16")
	ts.appendN(t, "lobby", history)
	c := clienttest.DialRaw(t, ts.ws, &clienttest.RawOptions{HTTPClient: smallReadsClient()})
	c.Hello("rejoiner")
	join := `{"type":"join","room":"lobby","history":1000}`
	// The first replay fills the socket and stalls the flusher in its
	// write; the next ones wait in the queue, each as history+2 frames.
	c.Send(join)
	proctest.Eventually(t, 5*time.Second, func() error {
		if v := ts.metric(t, "chatr_ws_frames_out_total"); v < history+2 {
			return fmt.Errorf("%v frames out: the first replay is not being written yet", v)
		}
		return nil
	})
	c.Send(join)
	proctest.Eventually(t, 5*time.Second, func() error {
		if v := ts.metric(t, "chatr_ws_queued_frames"); v < history+2 {
			return fmt.Errorf("%v frames queued: the second replay is not counted frame by frame", v)
		}
		return nil
	})
	// 64 x 16 = 1024 frames: the third replay puts the queue past it, and
	// the next item finds it so. Quickly, so the 1 s stall rule plays no part.
	for range 2 {
		c.Send(join)
	}
	c.ExpectClose(4000)
	proctest.Eventually(t, 5*time.Second, func() error {
		if v := ts.metric(t, "chatr_ws_queued_frames"); v != 0 {
			return fmt.Errorf("the queue gauge says %v after the session ended", v)
		}
		return nil
	})
}

// TestReaderPerSession: where epoll is not available (macOS, Windows), each
// session reads in a goroutine of its own; the protocol is the same.
func TestReaderPerSession(t *testing.T) {
	t.Parallel()
	ts := startTestServerWith(t, func(o *Options) { o.ReaderPerSession = true }, nil)
	if ts.srv.poller != nil {
		t.Fatal("the server made a poller")
	}
	ann, bob := ts.hello(t, "ann"), ts.hello(t, "bob")
	ann.Join("lobby", nil)
	bob.Join("lobby", nil)
	ack, msg, _ := ann.Say("lobby", "hello", "r1")
	if got := bob.Expect("message"); got.ID != ack.ID || got.Text != "hello" || msg.ID != ack.ID {
		t.Fatalf("bob got %v, ann's ack %v", got, ack)
	}
	ann.Send(`{"type":"nope"}`)
	ann.ExpectError("bad_request", "")
	ann.Conn.Close(1000, "")
	proctest.Eventually(t, 5*time.Second, func() error {
		if n := ts.srv.Sessions(); n != 1 {
			return fmt.Errorf("%d sessions after ann left", n)
		}
		return nil
	})
}
