package config

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// authFiles writes good files for the auth flags and returns their paths.
type authFiles struct{ secret, previous, short, pub, keys, badKeys, garbage string }

func newAuthFiles(t *testing.T) authFiles {
	t.Helper()
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return authFiles{
		secret:   write("secret", strings.Repeat("s", 40)+"\n"),
		previous: write("previous", strings.Repeat("p", 40)+"\n"),
		short:    write("short", "too-short\n"),
		pub:      write("pub.pem", string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))),
		keys:     write("api-keys", "# programs\nci:"+strings.Repeat("k", 30)+"\n"),
		badKeys:  write("bad-keys", "ci:short\n"),
		garbage:  write("garbage", "not a PEM file\n"),
	}
}

// TestAuthDefaults: auth is off by default, with a grace of 25 s.
func TestAuthDefaults(t *testing.T) {
	c, err := Parse(nil, noEnv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.AuthOn() {
		t.Error("auth is on by default")
	}
	if c.ExpiredGrace != 25*time.Second {
		t.Errorf("--auth-expired-grace defaults to %v, want 25s", c.ExpiredGrace)
	}
	if c.Auth != (Auth{ExpiredGrace: 25 * time.Second}) {
		t.Errorf("auth settings by default: %+v", c.Auth)
	}
}

// TestAuthFlags: each key source turns auth on; the flags and their
// CHATR_ variables fill Auth.
func TestAuthFlags(t *testing.T) {
	f := newAuthFiles(t)
	for _, args := range [][]string{
		{"--auth-hmac-secret-file", f.secret},
		{"--auth-public-key-file", f.pub},
		{"--auth-jwks-url", "https://id.example/.well-known/jwks.json"},
	} {
		c, err := Parse(args, noEnv, io.Discard)
		if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		if !c.AuthOn() {
			t.Errorf("%v: auth is off", args)
		}
	}
	c, err := Parse([]string{
		"--auth-hmac-secret-file", f.secret, "--auth-hmac-previous-secret-file", f.previous, "--auth-public-key-file", f.pub,
		"--auth-jwks-url", "http://127.0.0.1:8080/jwks", "--auth-issuer", "https://id.example", "--auth-audience", "chatr",
		"--auth-expired-grace", "1m", "--auth-token-url", "/auth/token", "--api-key-file", f.keys,
	}, noEnv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := Auth{HMACSecretFile: f.secret, HMACPreviousSecretFile: f.previous, PublicKeyFile: f.pub, JWKSURL: "http://127.0.0.1:8080/jwks",
		Issuer: "https://id.example", Audience: "chatr", ExpiredGrace: time.Minute, TokenURL: "/auth/token", APIKeyFile: f.keys}
	if c.Auth != want {
		t.Errorf("parsed %+v\nwant   %+v", c.Auth, want)
	}
	c, err = Parse(nil, env("CHATR_AUTH_HMAC_SECRET_FILE", f.secret, "CHATR_AUTH_TOKEN_URL", "https://id.example/token",
		"CHATR_API_KEY_FILE", f.keys, "CHATR_AUTH_EXPIRED_GRACE", "0s"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.HMACSecretFile != f.secret || c.TokenURL != "https://id.example/token" || c.APIKeyFile != f.keys || c.ExpiredGrace != 0 || !c.AuthOn() {
		t.Errorf("from the environment: %+v", c.Auth)
	}
}

// TestAuthValidation: each auth setting that cannot work is refused with
// the flag and what to do; every problem at once.
func TestAuthValidation(t *testing.T) {
	f := newAuthFiles(t)
	on := []string{"--auth-hmac-secret-file", f.secret}
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"previous without current", []string{"--auth-hmac-previous-secret-file", f.previous}, "--auth-hmac-previous-secret-file needs --auth-hmac-secret-file"},
		{"previous same as current", append(on, "--auth-hmac-previous-secret-file", f.secret), "holds the same secret as --auth-hmac-secret-file"},
		{"short secret", []string{"--auth-hmac-secret-file", f.short}, "--auth-hmac-secret-file: " + f.short + " holds 9 bytes"},
		{"short previous secret", append(on, "--auth-hmac-previous-secret-file", f.short), "--auth-hmac-previous-secret-file: " + f.short + " holds 9 bytes"},
		{"missing secret", []string{"--auth-hmac-secret-file", f.secret + ".missing"}, "--auth-hmac-secret-file: open " + f.secret + ".missing"},
		{"public key file not PEM", []string{"--auth-public-key-file", f.garbage}, "--auth-public-key-file: " + f.garbage + ": no PEM block"},
		{"public key file holds a secret", []string{"--auth-public-key-file", f.secret}, "--auth-public-key-file:"},
		{"jwks not http", []string{"--auth-jwks-url", "ftp://id.example/jwks"}, `--auth-jwks-url "ftp://id.example/jwks": want an http:// or https:// URL`},
		{"jwks a path", []string{"--auth-jwks-url", "/jwks"}, `--auth-jwks-url "/jwks": want an http:// or https:// URL`},
		{"jwks no host", []string{"--auth-jwks-url", "https:///jwks"}, "--auth-jwks-url"},
		{"jwks not a URL", []string{"--auth-jwks-url", "http://[::1"}, "--auth-jwks-url"},
		{"token url relative", append(on, "--auth-token-url", "token"), `--auth-token-url "token": want an http:// or https:// URL or a path starting with /`},
		{"token url scheme-relative", append(on, "--auth-token-url", "//evil.example/t"), "--auth-token-url"},
		{"api keys too short", append(on, "--api-key-file", f.badKeys), "--api-key-file: " + f.badKeys + ": line 1 (ci): a key of 5 characters"},
		{"api keys missing", append(on, "--api-key-file", f.keys+".missing"), "--api-key-file: open"},
		{"api keys without auth", []string{"--api-key-file", f.keys}, "--api-key-file needs auth on"},
		{"issuer without auth", []string{"--auth-issuer", "https://id.example"}, "--auth-issuer needs auth on: give --auth-hmac-secret-file, --auth-public-key-file or --auth-jwks-url"},
		{"audience without auth", []string{"--auth-audience", "chatr"}, "--auth-audience needs auth on"},
		{"token url without auth", []string{"--auth-token-url", "/token"}, "--auth-token-url needs auth on"},
		{"negative grace", []string{"--auth-expired-grace", "-1s"}, "--auth-expired-grace -1s: must be from 0 to 5m0s"},
		{"long grace", []string{"--auth-expired-grace", "6m"}, "--auth-expired-grace 6m0s: must be from 0 to 5m0s"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(tc.args, noEnv, io.Discard)
			if err == nil {
				t.Fatalf("accepted %v", tc.args)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q, want it to contain %q", err, tc.want)
			}
		})
	}
	_, err := Parse(nil, env("CHATR_AUTH_HMAC_SECRET_FILE", f.short), io.Discard)
	if err == nil || !strings.Contains(err.Error(), "--auth-hmac-secret-file: "+f.short) {
		t.Errorf("CHATR_AUTH_HMAC_SECRET_FILE of a short secret: %v", err)
	}
	_, err = Parse([]string{"--auth-hmac-previous-secret-file", f.previous, "--api-key-file", f.badKeys, "--auth-expired-grace", "1h"}, noEnv, io.Discard)
	for _, want := range []string{"--auth-hmac-previous-secret-file", "--api-key-file:", "--api-key-file needs auth on", "--auth-expired-grace"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v lacks %s", err, want)
		}
	}
}
