// Package natsengine is chatr's second engine (--engine nats): the log of
// messages, its replication and the fan-out between chatr nodes live in a
// NATS JetStream stream, run the way its operators already know, instead of
// in each node's own store and peer links.
//
// Every room is one subject of the stream, chatr.room.<room> (a dot in
// the room's name written ~).
// A send is acked once JetStream's PubAck says a quorum of the stream's
// replicas stored it; a re-send with the same ref is dropped by JetStream's
// duplicate window (Nats-Msg-Id from sender, room and ref). Each chatr node
// reads the whole stream live, in stream order, with an ordered consumer
// (which refetches from the last sequence it saw after a gap or an outage)
// and hands it to its hub; history, before and since pages are read from
// the stream with a subject filter.
//
// A message's id is <origin>-<stream sequence>, origin being an id the
// stream's name and creation time give (the same on every chatr node), so
// that ids, `before` and cursors keep the forms of docs/protocol.md: a
// cursor holds the stream sequence of the newest message of its room that
// the client has.
package natsengine

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"chatr/internal/proto"
)

// Config is what the --nats-* flags say.
type Config struct {
	URL        string        // --nats-url: nats://h1:4222,nats://h2:4222
	CredsFile  string        // --nats-creds-file
	TokenFile  string        // --nats-token-file
	TLSCAFile  string        // --nats-tls-ca-file
	Stream     string        // --nats-stream; DefaultStream when ""
	Replicas   int           // --nats-replicas; 1 to 5
	MaxAge     time.Duration // --history-max-age; 0: keep forever
	MaxPerRoom int64         // --history-max-per-room; 0: no limit
	Name       string        // the client connection's name (the chatr node)
}

// DefaultStream is the stream's name unless --nats-stream says otherwise.
const DefaultStream = "CHATR"

// Subjects of the stream: one per room.
const (
	roomPrefix   = "chatr.room."
	roomSubjects = roomPrefix + "*"
)

// DuplicateWindow is how long JetStream remembers a send's Nats-Msg-Id: a
// re-send with the same ref within it is stored once (as the local
// engine's dedup window).
const DuplicateWindow = 10 * time.Minute

// connectTimeout bounds the first connection and the stream's setup.
const connectTimeout = 10 * time.Second

// Engine is one chatr node's connection to the stream.
type Engine struct {
	cfg    Config
	log    *slog.Logger
	nc     *nats.Conn
	js     jetstream.JetStream
	stream jetstream.Stream
	origin string // the id of the stream, as the origin of its messages

	healthy atomic.Bool // the stream answered the last check (Health)
	tails   *tails      // the newest messages of rooms read lately, from the live feed
	stored  lastStored  // the stream's last sequence, asked for many reads at once

	pubMu    sync.Mutex     // publishes and their place in acks, in one order
	closed   bool           // Close began: Post refuses
	acks     chan published // publishes waiting for their PubAck, in order (answer)
	answered chan struct{}  // closed when answer has answered them all
}

// Open connects to NATS, creates the stream or checks that the one there
// keeps chatr's guarantees, and returns the engine. It fails with a clear
// error when NATS does not answer or the stream cannot be used.
func Open(ctx context.Context, cfg Config, log *slog.Logger) (*Engine, error) {
	if cfg.Stream == "" {
		cfg.Stream = DefaultStream
	}
	if cfg.Replicas == 0 {
		cfg.Replicas = 3
	}
	opts := []nats.Option{
		nats.Name(cfg.Name),
		nats.Timeout(connectTimeout),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.RetryOnFailedConnect(false),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Warn("nats: disconnected", "err", err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("nats: reconnected", "server", nc.ConnectedUrlRedacted())
		}),
	}
	if cfg.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(cfg.CredsFile))
	}
	if cfg.TokenFile != "" {
		b, err := os.ReadFile(cfg.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("--nats-token-file: %w", err)
		}
		token := strings.TrimSpace(string(b))
		if token == "" {
			return nil, fmt.Errorf("--nats-token-file %s: the file is empty", cfg.TokenFile)
		}
		opts = append(opts, nats.Token(token))
	}
	if cfg.TLSCAFile != "" {
		opts = append(opts, nats.RootCAs(cfg.TLSCAFile))
	}
	nc, err := nats.Connect(cfg.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("--nats-url %s: %w", cfg.URL, err)
	}
	e := &Engine{cfg: cfg, log: log, nc: nc, tails: newTails(cfg.MaxPerRoom, cfg.MaxAge), acks: make(chan published, maxUnacked), answered: make(chan struct{})}
	if err := e.setup(ctx); err != nil {
		nc.Close()
		return nil, err
	}
	e.stored.ask = func(ctx context.Context) (uint64, error) {
		info, err := e.stream.Info(ctx)
		if err != nil {
			return 0, err
		}
		return info.State.LastSeq, nil
	}
	go e.answer()
	return e, nil
}

// setup creates the stream, or checks the one that exists.
func (e *Engine) setup(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	js, err := jetstream.New(e.nc)
	if err != nil {
		return fmt.Errorf("nats: %w", err)
	}
	e.js = js
	want := jetstream.StreamConfig{
		Name:              e.cfg.Stream,
		Description:       "chatr messages, one subject per room: chatr.room.<room, . written ~>",
		Subjects:          []string{roomSubjects},
		Storage:           jetstream.FileStorage,
		Replicas:          e.cfg.Replicas,
		Duplicates:        DuplicateWindow,
		AllowDirect:       true,
		MaxAge:            e.cfg.MaxAge,
		MaxMsgsPerSubject: e.cfg.MaxPerRoom,
		Discard:           jetstream.DiscardOld,
	}
	if want.MaxMsgsPerSubject == 0 {
		want.MaxMsgsPerSubject = -1
	}
	// Several chatr nodes may start at once: one creates the stream, the
	// others find it (a lost race to create it is a find).
	var st jetstream.Stream
	err = retry(ctx, func(ctx context.Context) (err error) {
		st, err = js.Stream(ctx, e.cfg.Stream)
		return err
	})
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		err = retry(ctx, func(ctx context.Context) (err error) {
			st, err = js.CreateStream(ctx, want)
			return err
		})
		if err != nil {
			if st, err = js.Stream(ctx, e.cfg.Stream); err != nil {
				return fmt.Errorf("nats: create stream %s: %w", e.cfg.Stream, err)
			}
			if err := Check(st.CachedInfo().Config, want); err != nil {
				return fmt.Errorf("nats: stream %s cannot hold chatr's messages: %w", e.cfg.Stream, err)
			}
			break
		}
		e.log.Info("nats: stream created", "stream", e.cfg.Stream, "replicas", e.cfg.Replicas)
	case err != nil:
		return fmt.Errorf("nats: stream %s: %w (is JetStream enabled on %s?)", e.cfg.Stream, err, e.cfg.URL)
	default:
		if err := Check(st.CachedInfo().Config, want); err != nil {
			return fmt.Errorf("nats: stream %s cannot hold chatr's messages: %w", e.cfg.Stream, err)
		}
	}
	e.stream = st
	e.origin = streamOrigin(st.CachedInfo())
	e.healthy.Store(true)
	return nil
}

// Check returns an error naming every setting of an existing stream that
// breaks what chatr promises (have) against what it would create (want).
// Limits that only keep less history (age, per room) are the operator's to
// choose and are not checked.
func Check(have, want jetstream.StreamConfig) error {
	var bad []string
	if have.Storage != jetstream.FileStorage {
		bad = append(bad, "storage is memory: a restart of the NATS servers loses every message (want file)")
	}
	if have.Replicas < want.Replicas {
		bad = append(bad, fmt.Sprintf("%d replicas, fewer than --nats-replicas %d", have.Replicas, want.Replicas))
	}
	if have.Duplicates < DuplicateWindow {
		bad = append(bad, fmt.Sprintf("duplicate window %v: a re-send after a failover could be stored twice (want at least %v)", have.Duplicates, DuplicateWindow))
	}
	if have.NoAck {
		bad = append(bad, "no_ack is set: a send could not be acked once stored")
	}
	if !covers(have.Subjects, roomSubjects) {
		bad = append(bad, fmt.Sprintf("subjects %v do not take %s", have.Subjects, roomSubjects))
	}
	if have.Sealed {
		bad = append(bad, "the stream is sealed: nothing can be posted")
	}
	if len(bad) > 0 {
		return errors.New(strings.Join(bad, "; ") + " (fix the stream, or name another with --nats-stream)")
	}
	return nil
}

// covers reports whether one of subjects is s or a wildcard that takes
// every subject under chatr.room.
func covers(subjects []string, s string) bool {
	for _, x := range subjects {
		if x == s || x == ">" || x == "chatr.>" || x == "chatr.room.>" {
			return true
		}
	}
	return false
}

// streamOrigin is the origin id of a stream's messages: the same on every
// chatr node, and another one for a stream deleted and made again (whose
// sequences start over), so a cursor of the old one is not taken for one
// of the new.
func streamOrigin(info *jetstream.StreamInfo) string {
	h := sha256.Sum256([]byte("chatr nats stream\x00" + info.Config.Name + "\x00" + info.Created.UTC().Format(time.RFC3339Nano)))
	return hex.EncodeToString(h[:proto.NodeIDLen/2])
}

// quorum returns an error unless the stream has a leader and, with it, a
// majority of its replicas current.
func quorum(info *jetstream.StreamInfo) error {
	r := info.Config.Replicas
	if r <= 1 || info.Cluster == nil {
		return nil
	}
	if info.Cluster.Leader == "" {
		return errors.New("the stream has no leader")
	}
	current := 1 // the leader
	for _, p := range info.Cluster.Replicas {
		if p.Current && !p.Offline {
			current++
		}
	}
	if current <= r/2 {
		return fmt.Errorf("%d of the stream's %d replicas are current, fewer than a quorum", current, r)
	}
	return nil
}

// Origin is the id this engine's messages carry as their origin.
func (e *Engine) Origin() string { return e.origin }

// Stream is the name of the stream.
func (e *Engine) Stream() string { return e.cfg.Stream }

// Conn is the NATS connection (presence and membership use it too).
func (e *Engine) Conn() *nats.Conn { return e.nc }

// Close answers the publishes in flight (each waits for its PubAck at
// most pubTimeout) and drains the connection.
func (e *Engine) Close() {
	e.pubMu.Lock()
	if !e.closed {
		e.closed = true
		close(e.acks)
	}
	e.pubMu.Unlock()
	<-e.answered
	if err := e.nc.Drain(); err != nil {
		e.nc.Close()
	}
}

// subject is the subject of room: a room name is a-z 0-9 _ - . and a dot
// would split the subject, so it is written as ~ (which no room name has).
func subject(room string) string {
	return roomPrefix + strings.ReplaceAll(room, ".", "~")
}

// roomOf is the room of a subject, ok false for one that is not chatr's.
func roomOf(subj string) (string, bool) {
	tok, ok := strings.CutPrefix(subj, roomPrefix)
	if !ok || strings.Contains(tok, ".") {
		return "", false
	}
	room := strings.ReplaceAll(tok, "~", ".")
	if proto.CheckRoom(room) != nil {
		return "", false
	}
	return room, true
}

// keysBucket is the KV bucket where chatr nodes on one NATS account share
// their keys (the cursor key: a cursor made on one node resumes on any).
const keysBucket = "CHATR_KEYS"

// SharedKey returns the 32-byte key name that every chatr node of this
// NATS account shares: the first node to ask makes it at random and stores
// it in the KV bucket CHATR_KEYS (file storage, the stream's replicas);
// the others read it.
func (e *Engine) SharedKey(ctx context.Context, name string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	kv, err := e.bucket(ctx, jetstream.KeyValueConfig{Bucket: keysBucket,
		Description: "chatr: keys its nodes share", Storage: jetstream.FileStorage, Replicas: e.cfg.Replicas})
	if err != nil {
		return nil, fmt.Errorf("nats: key bucket %s: %w", keysBucket, err)
	}
	fresh := make([]byte, 32)
	rand.Read(fresh)
	err = retry(ctx, func(ctx context.Context) error {
		_, err := kv.Create(ctx, name, fresh)
		return err
	})
	if err == nil {
		return fresh, nil
	} else if !errors.Is(err, jetstream.ErrKeyExists) {
		return nil, fmt.Errorf("nats: key %s: %w", name, err)
	}
	var got jetstream.KeyValueEntry
	err = retry(ctx, func(ctx context.Context) (err error) {
		got, err = kv.Get(ctx, name)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("nats: key %s: %w", name, err)
	}
	if len(got.Value()) != 32 {
		return nil, fmt.Errorf("nats: key %s in %s holds %d bytes, not 32: delete it to make a new one (cursors made with it are then refused)", name, keysBucket, len(got.Value()))
	}
	return got.Value(), nil
}

// bucket opens the KV bucket of cfg, or makes it when there is none. As
// for the stream, several chatr nodes may start at once: a lost race to
// make it is a find, and a request left unanswered in the race is tried
// again (retry; TestOpenTogether).
func (e *Engine) bucket(ctx context.Context, cfg jetstream.KeyValueConfig) (kv jetstream.KeyValue, err error) {
	err = retry(ctx, func(ctx context.Context) (err error) {
		kv, err = e.js.KeyValue(ctx, cfg.Bucket)
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			kv, err = e.js.CreateKeyValue(ctx, cfg)
			if errors.Is(err, jetstream.ErrBucketExists) || errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
				kv, err = e.js.KeyValue(ctx, cfg.Bucket)
			}
		}
		return err
	})
	return kv, err
}

// Ready reports whether the engine can publish now: connected to NATS,
// and at its last check the stream had a leader and a quorum of replicas
// current (Health).
func (e *Engine) Ready() bool { return e.nc.IsConnected() && e.healthy.Load() }

// healthEvery is how often Health asks after the stream.
const healthEvery = time.Second

// Health asks after the stream every second until ctx ends, for Ready. A
// leader that lost its followers may still answer for a while, so an
// answer is not enough: it must name a leader, and enough current replicas
// with it to make a quorum.
func (e *Engine) Health(ctx context.Context) {
	t := time.NewTicker(healthEvery)
	defer t.Stop()
	for {
		cctx, cancel := context.WithTimeout(ctx, healthEvery)
		info, err := e.stream.Info(cctx)
		cancel()
		if err == nil {
			err = quorum(info)
		}
		if ok := err == nil; e.healthy.Swap(ok) != ok && ctx.Err() == nil {
			if ok {
				e.log.Info("nats: the stream answers again", "stream", e.cfg.Stream)
			} else {
				e.log.Warn("nats: the stream does not answer; not ready", "stream", e.cfg.Stream, "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
