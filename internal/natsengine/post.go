package natsengine

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"chatr/internal/proto"
	"chatr/internal/store"
)

// body is a message as the stream holds it; the room is its subject, its
// id the stream's origin and sequence.
type body struct {
	Sender  string `json:"sender"`
	Text    string `json:"text"`
	Created int64  `json:"created"` // microseconds since the Unix epoch
	Ref     string `json:"ref,omitempty"`
	User    string `json:"user,omitempty"`
	Node    string `json:"node"` // the chatr node that took the send
}

// unavailable is the error of a send that NATS did not store (no
// connection, no quorum, timeout): the client is told unavailable and may
// send again with the same ref.
func unavailable(why error) *proto.Error {
	return proto.Errorf(proto.CodeUnavailable, "NATS JetStream did not store the message (%v); send it again with the same ref", why)
}

// unreadable is the error of a read NATS did not answer.
func unreadable(why error) *proto.Error {
	return proto.Errorf(proto.CodeUnavailable, "NATS JetStream did not answer a read (%v); try again shortly", why)
}

// pubTimeout bounds the wait for a PubAck.
const pubTimeout = 5 * time.Second

// msgID is the Nats-Msg-Id of a send with a ref: the same for a re-send of
// it, on any chatr node, and for nothing else.
func msgID(room, sender, ref string) string {
	h := sha256.New()
	for _, s := range []string{room, sender, ref} {
		fmt.Fprintf(h, "%d:%s", len(s), s)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Post publishes a draft (Room, Sender, Text, Ref, User) and calls done
// once JetStream stored it on a quorum of the stream's replicas, with the
// message as stored: for a repeated ref, the first one. It implements
// gateway.Poster: calls from one goroutine are published in order, and
// done runs on a goroutine of the engine.
func (e *Engine) Post(ctx context.Context, draft proto.Message, done func(proto.Message, error)) error {
	if draft.Created == 0 {
		draft.Created = time.Now().UnixMicro()
	}
	data, err := json.Marshal(body{Sender: draft.Sender, Text: draft.Text, Created: draft.Created,
		Ref: draft.Ref, User: draft.User, Node: e.cfg.Name})
	if err != nil {
		return err
	}
	m := nats.NewMsg(subject(draft.Room))
	m.Data = data
	opts := []jetstream.PublishOpt{jetstream.WithExpectStream(e.cfg.Stream)}
	if draft.Ref != "" {
		opts = append(opts, jetstream.WithMsgID(msgID(draft.Room, draft.Sender, draft.Ref)))
	}
	e.pubMu.Lock()
	defer e.pubMu.Unlock()
	if e.closed {
		return unavailable(errors.New("the node is closing its NATS connection"))
	}
	f, err := e.js.PublishMsgAsync(m, opts...)
	if err != nil {
		return unavailable(err)
	}
	e.acks <- published{f, draft, done}
	return nil
}

// published is a publish waiting for its PubAck.
type published struct {
	f     jetstream.PubAckFuture
	draft proto.Message
	done  func(proto.Message, error)
}

// maxUnacked bounds the publishes waiting for their PubAck: a Post past it
// waits (as the local store's queue makes senders wait).
const maxUnacked = 4096

// answer calls done for each publish, in the order of the publishes (so
// that a client's acks come in the order of its sends), until acks closes.
func (e *Engine) answer() {
	defer close(e.answered)
	for p := range e.acks {
		e.await(p.f, p.draft, p.done)
	}
}

// await waits for the PubAck of one publish and calls done.
func (e *Engine) await(f jetstream.PubAckFuture, draft proto.Message, done func(proto.Message, error)) {
	t := time.NewTimer(pubTimeout)
	defer t.Stop()
	select {
	case ack := <-f.Ok():
		if !ack.Duplicate {
			draft.Origin, draft.Seq = e.origin, ack.Sequence
			done(draft, nil)
			return
		}
		// A re-send: answer with the first copy, as stored.
		ctx, cancel := context.WithTimeout(context.Background(), pubTimeout)
		defer cancel()
		first, err := e.get(ctx, ack.Sequence)
		if err != nil {
			done(proto.Message{}, unavailable(fmt.Errorf("reading the first copy: %w", err)))
			return
		}
		done(first, nil)
	case err := <-f.Err():
		done(proto.Message{}, unavailable(err))
	case <-t.C:
		done(proto.Message{}, unavailable(fmt.Errorf("no PubAck in %v", pubTimeout)))
	}
}

// get reads the message at stream sequence seq.
func (e *Engine) get(ctx context.Context, seq uint64) (proto.Message, error) {
	var raw *jetstream.RawStreamMsg
	err := retry(ctx, func(ctx context.Context) (err error) {
		raw, err = e.stream.GetMsg(ctx, seq)
		return err
	})
	if err != nil {
		return proto.Message{}, err
	}
	m, ok := e.decode(raw.Subject, raw.Sequence, raw.Data)
	if !ok {
		return proto.Message{}, fmt.Errorf("stream sequence %d is not a chatr message: %w", seq, store.ErrNotFound)
	}
	return m, nil
}

// decode turns a stream message into a chatr message; ok is false for one
// that is not chatr's (another subject, a body that is not ours), which
// readers skip and count.
func (e *Engine) decode(subj string, seq uint64, data []byte) (proto.Message, bool) {
	room, ok := roomOf(subj)
	if !ok {
		return proto.Message{}, false
	}
	var b body
	if err := json.Unmarshal(data, &b); err != nil || proto.CheckName(b.Sender) != nil ||
		len(b.Text) > proto.MaxTextBytes || b.Created <= 0 {
		return proto.Message{}, false
	}
	return proto.Message{Origin: e.origin, Seq: seq, Room: room, Sender: b.Sender, Text: b.Text,
		Created: b.Created, Ref: b.Ref, User: b.User}, true
}
