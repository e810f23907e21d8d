package main

import (
	"encoding/base64"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"chatr/internal/auth"
	"chatr/internal/proctest"
)

// TestTokenCommand: chatr token prints a token that a node with the same
// secret takes, carrying every flag's claim.
func TestTokenCommand(t *testing.T) {
	secret := strings.Repeat("0123456789abcdef", 3)
	file := filepath.Join(t.TempDir(), "secret")
	writeFile(t, file, []byte(secret+"\n"))
	v, err := auth.New(auth.Options{HMACSecrets: [][]byte{[]byte(secret)}, Issuer: "https://id.example", Audience: "chatr"})
	if err != nil {
		t.Fatal(err)
	}

	out := runToken(t, "--hmac-secret-file", file, "--sub", "ann", "--name", "Ann Lee", "--rooms", "team-*, ops", "--read", "news",
		"--admin", "--iss", "https://id.example", "--aud", "chatr", "--ttl", "2h", "--alg", "HS512")
	id, err := v.Verify(out)
	if err != nil {
		t.Fatalf("a node refuses the token chatr token printed: %v", err)
	}
	if id.User != "ann" || id.Name != "Ann Lee" || !slices.Equal(id.Rooms, []string{"team-*", "ops"}) || !slices.Equal(id.Read, []string{"news"}) || !id.Admin {
		t.Errorf("identity %+v", id)
	}
	if d := time.Until(id.Expires); d < 2*time.Hour-time.Minute || d > 2*time.Hour {
		t.Errorf("expires in %v, want 2h", d)
	}
	if alg := headerAlg(t, out); alg != "HS512" {
		t.Errorf("alg %q, want HS512", alg)
	}

	// The defaults: HS256, an hour, every room, the sub as the name.
	v, _ = auth.New(auth.Options{HMACSecrets: [][]byte{[]byte(secret)}})
	out = runToken(t, "--hmac-secret-file", file, "--sub", "bob")
	id, err = v.Verify(out)
	if err != nil {
		t.Fatal(err)
	}
	if id.Name != "bob" || id.Rooms != nil || id.Read != nil || id.Admin || !id.CanSend("anything") {
		t.Errorf("identity with the defaults %+v", id)
	}
	if d := time.Until(id.Expires); d < time.Hour-time.Minute || d > time.Hour {
		t.Errorf("expires in %v, want 1h", d)
	}
	if alg := headerAlg(t, out); alg != "HS256" {
		t.Errorf("alg %q, want HS256", alg)
	}
}

// runToken runs chatr token and returns the one line it prints.
func runToken(t *testing.T, args ...string) string {
	t.Helper()
	p := startProc(t, nil, append([]string{"token"}, args...)...)
	if code := p.waitExit(); code != 0 {
		t.Fatalf("chatr token: exit code %d; stderr:\n%s", code, p.Stderr.String())
	}
	out := p.Stdout.String()
	if strings.Count(out, "\n") != 1 || !strings.HasSuffix(out, "\n") || strings.Count(out, ".") != 2 {
		t.Fatalf("chatr token printed %q, want one token on a line", out)
	}
	return strings.TrimSpace(out)
}

func headerAlg(t *testing.T, tok string) string {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[0])
	if err != nil {
		t.Fatal(err)
	}
	var h struct{ Alg string }
	if err := json.Unmarshal(b, &h); err != nil {
		t.Fatal(err)
	}
	return h.Alg
}

// TestTokenBadFlags: a token chatr token cannot make stops it with exit
// code 2 and what to fix; the secret is never printed.
func TestTokenBadFlags(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "secret")
	writeFile(t, good, []byte(strings.Repeat("s", 40)))
	short := filepath.Join(dir, "short")
	writeFile(t, short, []byte("hunter2-hunter2"))
	proctest.CheckUsageErrors(t, chatrBin, []string{"token"}, []proctest.UsageError{
		{Args: []string{"--sub", "ann"}, Want: "--hmac-secret-file is required"},
		{Args: []string{"--hmac-secret-file", good}, Want: "--sub is required"},
		{Args: []string{"--hmac-secret-file", good + ".missing", "--sub", "ann"}, Want: "--hmac-secret-file: open " + good + ".missing"},
		{Args: []string{"--hmac-secret-file", short, "--sub", "ann"}, Want: short + " holds 15 bytes"},
		{Args: []string{"--hmac-secret-file", good, "--sub", "ann", "--alg", "RS256"}, Want: `alg "RS256": want HS256, HS384 or HS512`},
		{Args: []string{"--hmac-secret-file", good, "--sub", "ann", "--alg", "none"}, Want: `alg "NONE"`},
		{Args: []string{"--hmac-secret-file", good, "--sub", "ann", "--ttl", "0s"}, Want: "ttl 0s: must be at least 1s"},
		{Args: []string{"--hmac-secret-file", good, "--sub", "ann", "--ttl", "soon"}, Want: `invalid value "soon" for flag -ttl`},
		{Args: []string{"--hmac-secret-file", good, "--sub", "ann", "--rooms", "team-*,a["}, Want: `rooms pattern 2 "a["`},
		{Args: []string{"--hmac-secret-file", good, "--sub", "ann\x01"}, Want: "U+0001"},
		{Args: []string{"--hmac-secret-file", good, "--sub", "ann", "--name", strings.Repeat("n", 65)}, Want: "name of 65 bytes"},
		{Args: []string{"--hmac-secret-file", good, "--sub", "ann", "lobby"}, Want: `unexpected argument "lobby"`},
		{Args: []string{"--hmac-secret-file", good, "--sub", "ann", "--bogus"}, Want: "flag provided but not defined: -bogus"},
	})
	cmd := exec.Command(chatrBin, "token", "--hmac-secret-file", short, "--sub", "ann")
	out, _ := cmd.CombinedOutput()
	if strings.Contains(string(out), "hunter2") {
		t.Errorf("chatr token printed the secret: %s", out)
	}
}
