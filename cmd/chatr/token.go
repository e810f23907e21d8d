package main

import (
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"chatr/internal/auth"
)

const tokenUsage = `Usage: chatr token --hmac-secret-file FILE --sub USER [flags]

Prints a token (a JWT) for nodes run with --auth-hmac-secret-file FILE: for
scripts, tests and operators. People's clients get theirs from an identity
provider; programs that post over the HTTP API may use an API key instead.

  chatr token --hmac-secret-file secret --sub ann --name Ann --rooms 'team-*' --ttl 1h

--rooms and --read take glob patterns (* ? [a-z]); without --rooms the
holder may join and send to every room but those of --read.

Flags:
`

func tokenMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("chatr token", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var c auth.Claims
	secretFile := fs.String("hmac-secret-file", "", "`file` holding the nodes' HMAC secret (their --auth-hmac-secret-file; required)")
	alg := fs.String("alg", "HS256", "signing alg: HS256, HS384 or HS512")
	fs.StringVar(&c.Sub, "sub", "", "the user id (required): 1-128 printable characters")
	fs.StringVar(&c.Name, "name", "", "display name (default: --sub)")
	rooms := fs.String("rooms", "", "comma-separated `patterns` of the rooms the holder may join and send to (default: every room)")
	read := fs.String("read", "", "comma-separated `patterns` of the rooms the holder may join read-only")
	fs.BoolVar(&c.Admin, "admin", false, "the holder may use the admin routes")
	fs.StringVar(&c.Issuer, "iss", "", "the token's `issuer` (for nodes run with --auth-issuer)")
	fs.StringVar(&c.Audience, "aud", "", "the token's `audience` (for nodes run with --auth-audience)")
	fs.DurationVar(&c.TTL, "ttl", time.Hour, "how long the token is valid")
	if code, done := parseFlags(fs, args, tokenUsage, stdout, stderr); done {
		return code
	}
	fail := func(format string, args ...any) int {
		fmt.Fprintf(stderr, "chatr token: "+format+"\nSee chatr token --help.\n", args...)
		return 2
	}
	switch {
	case *secretFile == "":
		return fail("--hmac-secret-file is required: the file the nodes' --auth-hmac-secret-file names")
	case c.Sub == "":
		return fail("--sub is required: the user id the token is for")
	}
	secret, err := auth.LoadHMACSecret(*secretFile)
	if err != nil {
		return fail("--hmac-secret-file: %v", err)
	}
	if strings.TrimSpace(*rooms) != "" {
		c.Rooms = splitPatterns(*rooms)
	}
	c.Read = splitPatterns(*read)
	tok, err := auth.Sign(secret, strings.ToUpper(*alg), c)
	if err != nil {
		return fail("%v", err)
	}
	fmt.Fprintln(stdout, tok)
	return 0
}

// splitPatterns splits a comma-separated list, dropping empty items.
func splitPatterns(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
