package replication

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"chatr/internal/proto"
)

// record is one frame on a peer link. The leader sends batches of messages,
// its presence snapshot and heartbeats; the follower sends acks.
type record struct {
	// Msgs are messages in per-origin order.
	Msgs []wireMsg `json:"m,omitempty"`
	// Presence is the leader's own sessions' presence, room -> names. It is
	// a full snapshot; Presence with Snapshot set and no rooms means none.
	Presence map[string][]string `json:"p,omitempty"`
	Snapshot bool                `json:"ps,omitempty"`
	// Ack is the follower's vector after storing what it got.
	Ack proto.Vector `json:"a,omitempty"`
}

type wireMsg struct {
	Origin  string `json:"o"`
	Seq     uint64 `json:"s"`
	Room    string `json:"r"`
	Sender  string `json:"f"`
	Text    string `json:"t"`
	Created int64  `json:"c"`
	Ref     string `json:"x,omitempty"`
}

func toWire(m proto.Message) wireMsg {
	return wireMsg{Origin: m.Origin, Seq: m.Seq, Room: m.Room, Sender: m.Sender, Text: m.Text, Created: m.Created, Ref: m.Ref}
}

// Batches of messages travel in binary frames when the follower asks for
// them (enc=bin on the link URL; older followers get JSON records): decoding
// JSON took about a tenth of a follower's CPU. A batch is a version byte,
// then per message: origin, seq, room, sender, text, created, ref, each a
// uvarint (created a varint) or a uvarint length and the bytes.
const batchVersion = 1

func appendBatch(b []byte, msgs []wireMsg) []byte {
	b = append(b, batchVersion)
	for _, m := range msgs {
		b = appendString(b, m.Origin)
		b = binary.AppendUvarint(b, m.Seq)
		b = appendString(b, m.Room)
		b = appendString(b, m.Sender)
		b = appendString(b, m.Text)
		b = binary.AppendVarint(b, m.Created)
		b = appendString(b, m.Ref)
	}
	return b
}

func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

// decodeBatch reads a binary batch. It only splits the bytes; each message
// is checked by wireMsg.message like a JSON one.
func decodeBatch(b []byte) ([]wireMsg, error) {
	if len(b) == 0 || b[0] != batchVersion {
		return nil, errors.New("not a batch of a known version")
	}
	d := batchDecoder{b: b[1:]}
	var msgs []wireMsg
	var prev wireMsg
	for len(d.b) > 0 && d.err == nil {
		var m wireMsg
		m.Origin = d.str(prev.Origin)
		m.Seq = d.uvarint()
		m.Room = d.str(prev.Room)
		m.Sender = d.str("")
		m.Text = d.str("")
		m.Created = d.varint()
		m.Ref = d.str("")
		msgs = append(msgs, m)
		prev = m
	}
	if d.err != nil {
		return nil, fmt.Errorf("bad batch: %w", d.err)
	}
	return msgs, nil
}

type batchDecoder struct {
	b   []byte
	err error
}

var errShort = errors.New("truncated")

func (d *batchDecoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errShort
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *batchDecoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err = errShort
		return 0
	}
	d.b = d.b[n:]
	return v
}

// str reads a string; one equal to prev is returned as prev, so a batch
// keeps one copy of an origin or room, not one per message.
func (d *batchDecoder) str(prev string) string {
	n := d.uvarint()
	if d.err != nil {
		return ""
	}
	if n > uint64(len(d.b)) {
		d.err = errShort
		return ""
	}
	raw := d.b[:n]
	d.b = d.b[n:]
	if string(raw) == prev {
		return prev
	}
	return string(raw)
}

// message checks a message from a peer as strictly as one from a client: a
// peer's bytes are input like any other.
func (w wireMsg) message() (proto.Message, error) {
	m := proto.Message{Origin: w.Origin, Seq: w.Seq, Room: w.Room, Sender: w.Sender, Text: w.Text, Created: w.Created, Ref: w.Ref}
	if !proto.ValidNodeID(w.Origin) || w.Seq == 0 {
		return m, fmt.Errorf("bad message id %q-%d", w.Origin, w.Seq)
	}
	if err := proto.CheckRoom(w.Room); err != nil {
		return m, err
	}
	if _, err := proto.CleanName(w.Sender); err != nil {
		return m, err
	}
	if err := proto.CheckText(w.Text); err != nil {
		return m, err
	}
	if err := proto.CheckRef(w.Ref); err != nil {
		return m, err
	}
	return m, nil
}

// Peer-link authentication headers. With a secret, the follower proves it
// holds it with an HMAC over the cluster, its id and the time; without one,
// the cluster name must match.
const (
	headerNode    = "X-Chatr-Node"
	headerCluster = "X-Chatr-Cluster"
	headerAuth    = "X-Chatr-Auth"
)

// authSkew is how far a peer's clock may be from ours.
const authSkew = 5 * time.Minute

func authToken(secret []byte, cluster, node string, now time.Time) string {
	ts := strconv.FormatInt(now.Unix(), 10)
	return ts + "." + sign(secret, cluster, node, ts)
}

func sign(secret []byte, cluster, node, ts string) string {
	mac := hmac.New(sha256.New, secret)
	fmt.Fprintf(mac, "chatr-peer\x00%s\x00%s\x00%s", cluster, node, ts)
	return hex.EncodeToString(mac.Sum(nil))
}

func setAuth(h http.Header, secret []byte, cluster, node string) {
	h.Set(headerNode, node)
	h.Set(headerCluster, cluster)
	if secret != nil {
		h.Set(headerAuth, authToken(secret, cluster, node, time.Now()))
	}
}

var errAuth = errors.New("peer not authenticated")

// checkAuth verifies a follower's headers and returns its node id.
func checkAuth(h http.Header, secret []byte, cluster string, now time.Time) (string, error) {
	node := h.Get(headerNode)
	if !proto.ValidNodeID(node) {
		return "", fmt.Errorf("%w: bad node id %q", errAuth, node)
	}
	if got := h.Get(headerCluster); got != cluster {
		return "", fmt.Errorf("%w: cluster %q is not ours (%q)", errAuth, got, cluster)
	}
	if secret == nil {
		return node, nil
	}
	ts, mac, ok := strings.Cut(h.Get(headerAuth), ".")
	sec, err := strconv.ParseInt(ts, 10, 64)
	if !ok || err != nil {
		return "", fmt.Errorf("%w: no valid %s header (secret missing?)", errAuth, headerAuth)
	}
	if d := now.Sub(time.Unix(sec, 0)); d > authSkew || d < -authSkew {
		return "", fmt.Errorf("%w: token time is %v away from ours", errAuth, d)
	}
	if !hmac.Equal([]byte(mac), []byte(sign(secret, cluster, node, ts))) {
		return "", fmt.Errorf("%w: wrong secret", errAuth)
	}
	return node, nil
}
