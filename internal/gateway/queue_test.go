package gateway

import (
	"net"
	"testing"
	"time"

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
	conn, _, err := ts.dialWith(nil, func(c net.Conn) { c.(*net.TCPConn).SetReadBuffer(4 << 10) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.CloseNow() })
	c := &wsClient{t: t, conn: conn}
	c.send(`{"type":"hello","name":"rejoiner"}`)
	c.expect("welcome")
	join := `{"type":"join","room":"lobby","history":1000}`
	// The first replay fills the socket and stalls the flusher in its
	// write; the next ones wait in the queue, each as history+2 frames.
	c.send(join)
	proctest.Eventually(t, 5*time.Second, "the first replay is being written", func() bool {
		return ts.metric(t, "chatr_ws_frames_out_total") >= history+2
	})
	c.send(join)
	proctest.Eventually(t, 5*time.Second, "the second replay is counted frame by frame", func() bool {
		return ts.metric(t, "chatr_ws_queued_frames") >= history+2
	})
	// 64 x 16 = 1024 frames: the third replay puts the queue past it, and
	// the next item finds it so. Quickly, so the 1 s stall rule plays no part.
	for range 2 {
		c.send(join)
	}
	c.expectClose(4000)
	proctest.Eventually(t, 5*time.Second, "the queue gauge falls back to 0", func() bool {
		return ts.metric(t, "chatr_ws_queued_frames") == 0
	})
}
