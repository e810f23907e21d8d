package replication

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net"
	"time"

	"chatr/internal/replication/wire"
)

// A peer link is TLS 1.3 inside a WebSocket on the HTTP listener, so it
// needs no port of its own and is private whatever the listener serves.
// Each side presents a certificate of its identity key (Ed25519, kept in
// its store, published in membership meta) and checks the other's against
// the key the membership holds for that node: a link reaches the node it
// was meant for, and is served only to a member. Then each side proves it
// holds the cluster secret with an HMAC over a value exported from this
// TLS session, so a proof cannot be replayed on another link and a peer
// without the secret learns nothing. Everything after is framed records.

// linkExporterLabel names the keying material the proofs bind to.
const linkExporterLabel = "EXPORTER-chatr-peer-link-v1"

// handshakeTimeout bounds the TLS handshake and the hello exchange.
const handshakeTimeout = 5 * time.Second

// Frame types on a link (see wire.ReadFrame).
const (
	frameJSON  = wire.FrameJSON
	frameBatch = wire.FrameBatch
)

// Frame size limits: a leader's batches may be large; a follower sends
// only acks.
const (
	maxLeaderFrame   = 64 << 20
	maxFollowerFrame = 64 << 10
)

// errRefused is what a refused link learns: nothing of ours.
var errRefused = errors.New("peer link refused")

// identity is this node's TLS certificate for its identity key.
func identity(key ed25519.PrivateKey) (tls.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "chatr peer"}, // names nothing: any client sees it
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(10, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// peerKey is the Ed25519 key of the certificate a TLS peer presented.
func peerKey(cs tls.ConnectionState) (ed25519.PublicKey, error) {
	if len(cs.PeerCertificates) == 0 {
		return nil, errors.New("no certificate")
	}
	k, ok := cs.PeerCertificates[0].PublicKey.(ed25519.PublicKey)
	if !ok {
		return nil, errors.New("certificate key is not Ed25519")
	}
	return k, nil
}

// hello is the first record each way.
type hello = wire.Hello

// proof is the HMAC that shows the holder of the link key is on this TLS
// session (ekm), as role, from one node to the other.
func proof(key []byte, role string, ekm []byte, from, to, cluster string) []byte {
	if key == nil {
		return nil
	}
	mac := hmac.New(sha256.New, key)
	fmt.Fprintf(mac, "chatr peer link\x00%s\x00%s\x00%s\x00%s\x00", role, cluster, from, to)
	mac.Write(ekm)
	return mac.Sum(nil)
}

// linkConn is one peer link after its handshake.
type linkConn struct {
	tls *tls.Conn
	br  *bufio.Reader
	buf []byte // the writer's frame header
}

func newLinkConn(tc *tls.Conn) *linkConn {
	return &linkConn{tls: tc, br: bufio.NewReaderSize(tc, 64<<10)}
}

// write sends one frame within timeout. One goroutine writes at a time.
func (c *linkConn) write(typ byte, payload []byte, timeout time.Duration) error {
	c.buf = wire.AppendFrameHeader(c.buf[:0], typ, len(payload))
	c.tls.SetWriteDeadline(time.Now().Add(timeout))
	if _, err := (&net.Buffers{c.buf, payload}).WriteTo(c.tls); err != nil {
		return err
	}
	return nil
}

// writeJSON sends v as a JSON frame.
func (c *linkConn) writeJSON(v any, timeout time.Duration) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return c.write(frameJSON, b, timeout)
}

// read returns the next frame, of at most limit bytes, within timeout. The
// payload is the caller's.
func (c *linkConn) read(limit int, timeout time.Duration) (byte, []byte, error) {
	var deadline time.Time // 0: none
	if timeout > 0 {
		deadline = time.Now().Add(timeout)
	}
	c.tls.SetReadDeadline(deadline)
	return wire.ReadFrame(c.br, limit)
}

// readHello reads the hello record.
func (c *linkConn) readHello(limit int) (hello, error) {
	typ, b, err := c.read(limit, handshakeTimeout)
	if err != nil {
		return hello{}, err
	}
	return wire.DecodeHello(typ, b)
}

func (c *linkConn) Close() error { return c.tls.Close() }

// ekm is the keying material of the session the proofs bind to.
func ekm(tc *tls.Conn) ([]byte, error) {
	cs := tc.ConnectionState()
	return cs.ExportKeyingMaterial(linkExporterLabel, nil, 32)
}

// clientHandshake runs the follower's side on nc: TLS with the leader whose
// identity key is want, then the hellos. It returns the link.
func (r *Replicator) clientHandshake(ctx context.Context, nc net.Conn, leader Peer, h hello) (*linkConn, error) {
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS13,
		Certificates:       []tls.Certificate{r.cert},
		InsecureSkipVerify: true, // no CA: the key is checked against the membership below
		VerifyConnection: func(cs tls.ConnectionState) error {
			k, err := peerKey(cs)
			if err != nil || !k.Equal(ed25519.PublicKey(leader.Key)) {
				return errors.New("the node is not the member it should be")
			}
			return nil
		},
	}
	tc := tls.Client(nc, cfg)
	hctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		return nil, fmt.Errorf("TLS with %s: %w", leader.ID, err)
	}
	c := newLinkConn(tc)
	m, err := ekm(tc)
	if err != nil {
		c.Close()
		return nil, err
	}
	h.Node, h.Cluster = r.opts.NodeID, r.opts.Cluster
	h.Proof = proof(r.linkKey, "follower", m, r.opts.NodeID, leader.ID, r.opts.Cluster)
	if err := c.writeJSON(h, handshakeTimeout); err != nil {
		c.Close()
		return nil, err
	}
	ans, err := c.readHello(maxFollowerFrame)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("%w (secret or cluster name differ?): %v", errRefused, err)
	}
	want := proof(r.linkKey, "leader", m, leader.ID, r.opts.NodeID, r.opts.Cluster)
	if ans.Node != leader.ID || ans.Cluster != r.opts.Cluster || !hmac.Equal(ans.Proof, want) {
		c.Close()
		return nil, fmt.Errorf("%w: the leader's proof is wrong (secret or cluster name differ?)", errRefused)
	}
	return c, nil
}

// serverHandshake runs the leader's side on nc: TLS with a member's key,
// then the hellos. It returns the link and the follower's hello; an error
// says why the link was refused, for our log only.
func (r *Replicator) serverHandshake(ctx context.Context, nc net.Conn) (*linkConn, hello, error) {
	var follower string
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{r.cert},
		ClientAuth:   tls.RequireAnyClientCert,
		VerifyConnection: func(cs tls.ConnectionState) error {
			k, err := peerKey(cs)
			if err != nil {
				return err
			}
			if follower = r.memberWithKey(k); follower == "" {
				return errors.New("the key is no alive member's")
			}
			return nil
		},
	}
	tc := tls.Server(nc, cfg)
	hctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		return nil, hello{}, fmt.Errorf("TLS: %w", err)
	}
	c := newLinkConn(tc)
	m, err := ekm(tc)
	if err != nil {
		c.Close()
		return nil, hello{}, err
	}
	h, err := c.readHello(maxFollowerFrame)
	if err != nil {
		c.Close()
		return nil, hello{}, err
	}
	if h.Node != follower || h.Cluster != r.opts.Cluster ||
		!hmac.Equal(h.Proof, proof(r.linkKey, "follower", m, follower, r.opts.NodeID, r.opts.Cluster)) {
		c.Close()
		return nil, hello{}, fmt.Errorf("member %s: wrong proof, cluster or node id in its hello", follower)
	}
	ans := hello{Node: r.opts.NodeID, Cluster: r.opts.Cluster,
		Proof: proof(r.linkKey, "leader", m, r.opts.NodeID, follower, r.opts.Cluster)}
	if err := c.writeJSON(ans, handshakeTimeout); err != nil {
		c.Close()
		return nil, hello{}, err
	}
	return c, h, nil
}
