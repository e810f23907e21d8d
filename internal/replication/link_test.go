package replication

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"chatr/internal/proctest"
	"chatr/internal/proto"
	"chatr/internal/replication/wire"
)

// A follower that does not ask for binary batches (an older release) gets
// JSON records; one that asks gets binary frames. Both hold the same.
func TestLinkEncodings(t *testing.T) {
	a := newPeer(t, "c", nil, 0)
	sent := post(t, a, "one")
	for _, enc := range []string{"", "bin"} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		h := http.Header{}
		setAuth(h, nil, "c", "0123456789ab")
		conn, _, err := websocket.Dial(ctx, "ws://"+a.addr()+"/chatr/peer/link?since=&skip=&enc="+enc, &websocket.DialOptions{HTTPHeader: h})
		if err != nil {
			t.Fatal(err)
		}
		typ, data, err := conn.Read(ctx) // the catch-up
		conn.CloseNow()
		if err != nil {
			t.Fatal(err)
		}
		var rec wire.Record
		switch enc {
		case "":
			if typ != websocket.MessageText {
				t.Fatalf("enc=%q: frame type %v, want text", enc, typ)
			}
			err = json.Unmarshal(data, &rec)
		case "bin":
			if typ != websocket.MessageBinary {
				t.Fatalf("enc=%q: frame type %v, want binary", enc, typ)
			}
			rec.Msgs, err = wire.DecodeBatch(data)
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(rec.Msgs) != 1 || rec.Msgs[0] != wire.FromMessage(sent) {
			t.Fatalf("enc=%q: got %+v, want %+v", enc, rec.Msgs, wire.FromMessage(sent))
		}
	}
}

// A fake leader sending broken binary batches costs the follower that link
// only: it stores nothing from it and keeps following the real peer.
func TestGarbageBatchesOnLink(t *testing.T) {
	a := newPeer(t, "c", nil, 0)
	post(t, a, "one")
	good := wire.AppendBatch(nil, []wire.Msg{{Origin: "0123456789ab", Seq: 1, Room: "lobby", Sender: "x", Text: "t", Created: 1}})
	garbage := [][]byte{
		{wire.BatchVersion, 12, 'x'},             // cut short
		{9},                                      // unknown version
		append(good[:len(good):len(good)], 0xff), // a good message, then a cut one
		wire.AppendBatch(nil, []wire.Msg{{Origin: "0123456789ab", Seq: 1, Room: "Bad Room", Sender: "x", Text: "t"}}), // a bad message
	}
	var conns atomic.Int64
	fake := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		i := int(conns.Add(1)-1) % len(garbage)
		c.Write(r.Context(), websocket.MessageBinary, garbage[i])
		c.Read(r.Context()) // until the follower gives up the link
	}))
	defer fake.Close()
	b := newPeer(t, "c", nil, 0)
	b.repl.SetPeers([]Peer{{ID: "0123456789ab", HTTP: strings.TrimPrefix(fake.URL, "http://")}, a.as()})
	proctest.Eventually(t, 10*time.Second, func() error { return holds(b, proto.Vector{a.st.NodeID(): 1}) })
	proctest.Eventually(t, 20*time.Second, func() error {
		if n := conns.Load(); n < int64(len(garbage)) {
			return fmt.Errorf("fake leader saw %d links, want %d", n, len(garbage))
		}
		return nil
	})
	if v := b.st.Vector()["0123456789ab"]; v != 0 {
		t.Fatalf("stored %d messages from garbage", v)
	}
}
