package wire

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"chatr/internal/proto"
)

// Frames on a peer link (inside its TLS): a type byte, a 4-byte big-endian
// length, the payload.
const (
	FrameJSON  = 1 // a Record (presence, heartbeat, ack) or a Hello
	FrameBatch = 2 // a binary batch of messages (AppendBatch)
)

// FrameHeaderSize is the bytes before a frame's payload.
const FrameHeaderSize = 5

// AppendFrameHeader appends the header of a frame of typ with n bytes.
func AppendFrameHeader(b []byte, typ byte, n int) []byte {
	return binary.BigEndian.AppendUint32(append(b, typ), uint32(n))
}

// ReadFrame reads one frame of at most limit payload bytes from r.
func ReadFrame(r *bufio.Reader, limit int) (byte, []byte, error) {
	var hdr [FrameHeaderSize]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	switch {
	case hdr[0] != FrameJSON && hdr[0] != FrameBatch:
		return 0, nil, fmt.Errorf("unknown frame type %d", hdr[0])
	case int64(n) > int64(limit):
		return 0, nil, fmt.Errorf("frame of %d bytes is over the limit of %d", n, limit)
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(r, p); err != nil {
		return 0, nil, err
	}
	return hdr[0], p, nil
}

// Hello is the first record each way on a link: the follower's says who it
// is and what it wants, the leader's answers with its own proof.
type Hello struct {
	Node    string       `json:"node"`
	Cluster string       `json:"cluster"`
	Proof   []byte       `json:"proof,omitempty"` // absent without a secret
	Since   proto.Vector `json:"since,omitempty"` // follower: what it holds
	Skip    []string     `json:"skip,omitempty"`  // follower: origins to leave out
	// Deltas: the follower takes presence changes (Record.Joined, Left)
	// after the first snapshot; without, every change is a snapshot.
	Deltas bool `json:"deltas,omitempty"`
}

// ErrNoHello is a first frame that is not a hello.
var ErrNoHello = errors.New("no hello")

// DecodeHello decodes and checks a hello frame.
func DecodeHello(typ byte, b []byte) (Hello, error) {
	var h Hello
	if typ != FrameJSON || json.Unmarshal(b, &h) != nil {
		return Hello{}, ErrNoHello
	}
	if !proto.ValidNodeID(h.Node) {
		return Hello{}, fmt.Errorf("bad node id %q in hello", h.Node)
	}
	for o := range h.Since {
		if !proto.ValidNodeID(o) {
			return Hello{}, fmt.Errorf("bad origin %q in hello", o)
		}
	}
	for _, o := range h.Skip {
		if !proto.ValidNodeID(o) {
			return Hello{}, fmt.Errorf("bad origin %q in hello", o)
		}
	}
	return h, nil
}
