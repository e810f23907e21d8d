package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"chatr/internal/client"
	"chatr/internal/clustertest"
	"chatr/internal/proctest"
)

// writeCert writes a self-signed certificate for 127.0.0.1 and its key to
// certFile and keyFile, and returns it.
func writeCert(t *testing.T, certFile, keyFile string, serial int64) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return cert
}

// trusting is an HTTP client that trusts the certificates given.
func trusting(certs ...*x509.Certificate) *http.Client {
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return &http.Client{Timeout: requestTimeout, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

// TestTLS: with --tls-cert-file and --tls-key-file, --http serves HTTPS
// and WSS; two such nodes replicate over their WSS peer links. SIGHUP
// loads a renewed certificate: new connections get it, an open session
// stays.
func TestTLS(t *testing.T) {
	needBinary(t)
	t.Parallel()
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	first := writeCert(t, certFile, keyFile, 1)
	hc := trusting(first)
	nodes := newLocalNodes(t, 2)
	for _, n := range nodes {
		n.extra = []string{"--tls-cert-file", certFile, "--tls-key-file", keyFile}
	}
	a, b := nodes[0], nodes[1]
	a.start(t, b.gossip)
	b.start(t, a.gossip)
	apis := []clustertest.API{
		{Base: "https://" + a.http, Fetch: clustertest.HTTPFetch(hc)},
		{Base: "https://" + b.http, Fetch: clustertest.HTTPFetch(hc)},
	}
	ids := []string{selfID(t, apis[0]), selfID(t, apis[1])}
	waitAlive(t, startTimeout, apis, ids)
	post(t, apis[0], "lobby", "ann", 2, "over https to a")
	post(t, apis[1], "lobby", "bob", 2, "over https to b")
	waitSameHistory(t, convergeTimeout, apis, "lobby", 4)
	if resp, err := httpClient.Get("http://" + a.http + "/healthz"); err == nil && resp.StatusCode == http.StatusOK {
		resp.Body.Close()
		t.Fatal("the TLS listener answered plain HTTP")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := client.Dial(ctx, "wss://"+a.http, "wes", &client.Options{HTTPClient: hc})
	if err != nil {
		t.Fatalf("wss session: %v", err)
	}
	defer conn.CloseNow()

	// The node's own pages are https: an http page of the same address may
	// not open a session.
	for origin, ok := range map[string]bool{"https://" + a.http: true, "http://" + a.http: false} {
		c, err := client.Dial(ctx, "wss://"+a.http, "page", &client.Options{HTTPClient: hc, Header: http.Header{"Origin": {origin}}})
		if (err == nil) != ok {
			t.Errorf("a page of %s: %v, want allowed=%v", origin, err, ok)
		}
		if c != nil {
			c.CloseNow()
		}
	}

	second := writeCert(t, certFile, keyFile, 2)
	if err := a.proc.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	proctest.Eventually(t, startTimeout, func() error {
		c, err := tls.Dial("tcp", a.http, &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			return err
		}
		defer c.Close()
		if got := c.ConnectionState().PeerCertificates[0].SerialNumber; got.Cmp(second.SerialNumber) != 0 {
			return fmt.Errorf("after SIGHUP a new connection gets certificate %v, want %v", got, second.SerialNumber)
		}
		return nil
	})
	if err := conn.Ping(ctx); err != nil {
		t.Fatalf("the open session broke on the reload: %v", err)
	}
	if _, err := conn.ReadUntil(ctx, client.IsType(client.TypePong, "")); err != nil {
		t.Fatalf("the open session broke on the reload: %v", err)
	}
	if !a.proc.Running() {
		t.Fatal("SIGHUP stopped the node")
	}
}
