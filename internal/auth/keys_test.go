package auth

import (
	"crypto"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestLoadHMACSecret: the file's bytes, trimmed, are the secret; a short
// one is refused with how to make a good one.
func TestLoadHMACSecret(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) string {
		p := dir + "/" + name
		writeFile(t, p, s)
		return p
	}
	s, err := LoadHMACSecret(write("good", "  "+string(secret)+"\n"))
	if err != nil || string(s) != string(secret) {
		t.Fatalf("LoadHMACSecret = %q, %v; want %q", s, err, secret)
	}
	short := write("short", strings.Repeat("k", 31)+"\n\n")
	_, err = LoadHMACSecret(short)
	if err == nil || !strings.Contains(err.Error(), short+" holds 31 bytes") || !strings.Contains(err.Error(), "at least 32") ||
		strings.Contains(err.Error(), "kkkk") {
		t.Errorf("short secret: %v", err)
	}
	if _, err := LoadHMACSecret(dir + "/missing"); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("missing file: %v", err)
	}
}

// TestLoadPublicKeys: PEM public keys and certificates of every kind are
// taken, several to a file; private keys, other blocks, weak keys and
// stray text are refused, naming the block.
func TestLoadPublicKeys(t *testing.T) {
	k := keys(t)
	certDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(1), NotAfter: t0.Add(time.Hour)},
		&x509.Certificate{SerialNumber: big.NewInt(1)}, k.p256.Public(), k.p256)
	if err != nil {
		t.Fatal(err)
	}
	privDER, err := x509.MarshalPKCS8PrivateKey(k.ed)
	if err != nil {
		t.Fatal(err)
	}
	xkey, _ := ecdh.X25519().GenerateKey(rand.Reader)
	xDER, _ := x509.MarshalPKIXPublicKey(xkey.PublicKey())

	p := writePEM(t, pkixBlock(t, &k.rsa.PublicKey), &pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&k.rsa.PublicKey)},
		pkixBlock(t, &k.p384.PublicKey), pkixBlock(t, k.ed.Public()), &pem.Block{Type: "CERTIFICATE", Bytes: certDER})
	pubs, err := LoadPublicKeys(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(pubs) != 5 {
		t.Fatalf("%d keys, want 5", len(pubs))
	}
	for i, want := range []any{&k.rsa.PublicKey, &k.rsa.PublicKey, &k.p384.PublicKey, k.ed.Public(), &k.p256.PublicKey} {
		if !pubs[i].(interface{ Equal(crypto.PublicKey) bool }).Equal(want) {
			t.Errorf("key %d is not the one written", i+1)
		}
	}

	cases := []struct {
		name    string
		file    string
		mention string
	}{
		{"private key", writePEM(t, pkixBlock(t, &k.rsa.PublicKey), &pem.Block{Type: "PRIVATE KEY", Bytes: privDER}), "PEM block 2 (PRIVATE KEY): a private key"},
		{"EC private key", writePEM(t, &pem.Block{Type: "EC PRIVATE KEY", Bytes: []byte{1}}), "a private key"},
		{"other block", writePEM(t, &pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte{1}}), "not a public key or certificate"},
		{"RSA 1024", writePEM(t, pkixBlock(t, &k.rsa1024.PublicKey)), "RSA key of 1024 bits: want at least 2048"},
		{"X25519", writePEM(t, &pem.Block{Type: "PUBLIC KEY", Bytes: xDER}), "want RSA, ECDSA or Ed25519"},
		{"bad DER", writePEM(t, &pem.Block{Type: "PUBLIC KEY", Bytes: []byte("nonsense")}), "PEM block 1 (PUBLIC KEY)"},
		{"no PEM", writeFile(t, t.TempDir()+"/k", "ssh-ed25519 AAAA... ann@host\n"), "no PEM block"},
		{"empty", writeFile(t, t.TempDir()+"/k", ""), "no PEM block"},
		{"text after", writeFile(t, t.TempDir()+"/k", string(pem.EncodeToMemory(pkixBlock(t, k.ed.Public())))+"junk\n"), "text after PEM block 1"},
		{"missing", t.TempDir() + "/none", "no such file"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadPublicKeys(tc.file)
			if err == nil || !strings.Contains(err.Error(), tc.mention) {
				t.Errorf("error %v, want it to mention %q", err, tc.mention)
			}
		})
	}
}

// TestKeyFits: a key verifies the algs of its type only, and an ECDSA key
// only the alg of its curve (the jwt library refuses to sign ES256 with a
// P-384 key, so no token can test this).
func TestKeyFits(t *testing.T) {
	k := keys(t)
	fits := map[string][]string{
		"rsa":     {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"},
		"p256":    {"ES256"},
		"p384":    {"ES384"},
		"p521":    {"ES512"},
		"ed25519": {"EdDSA"},
	}
	pubs := map[string]crypto.PublicKey{"rsa": &k.rsa.PublicKey, "p256": &k.p256.PublicKey, "p384": &k.p384.PublicKey,
		"p521": &k.p521.PublicKey, "ed25519": k.ed.Public()}
	for name, pub := range pubs {
		for _, alg := range append(algs, "none", "HS1", "") {
			if got, want := keyFits(alg, pub), slices.Contains(fits[name], alg); got != want {
				t.Errorf("keyFits(%q, %s key) = %v, want %v", alg, name, got, want)
			}
		}
		if keyFits("HS256", secret) {
			t.Error("keyFits(HS256, a secret): secrets are not public keys")
		}
	}
}
