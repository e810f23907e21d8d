// Command chatr is a clustered chat server with its web client inside.
//
//	chatr [serve] [flags]   start a node (the default)
//	chatr chat [flags]      terminal client
//	chatr bench [flags]     load generator
//	chatr secret            print a new cluster secret
//	chatr token [flags]     print a signed token for a user
//	chatr version           print the version
package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"chatr/internal/secret"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

const usage = `chatr: a clustered chat server with its web client inside.

Usage:
  chatr [serve] [flags]   start a node (the default); chatr serve --help lists the flags
  chatr chat [flags]      terminal client; chatr chat --help
  chatr bench [flags]     load generator; chatr bench --help
  chatr secret            print a new cluster secret (for --secret or --secret-file)
  chatr token [flags]     print a signed token for a user; chatr token --help
  chatr version           print the version

Open http://localhost:5080/chatr/chatr.html once a node runs.
`

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	cmd := ""
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "", "serve":
		if cmd == "" && len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "-help") {
			fmt.Fprint(stdout, usage+"\n")
		}
		return serveMain(args, stdout, stderr)
	case "chat":
		return chatMain(args, stdin, stdout, stderr)
	case "bench":
		return benchMain(args, stdout, stderr)
	case "secret":
		if len(args) > 0 {
			fmt.Fprintf(stderr, "chatr secret takes no arguments\n")
			return 2
		}
		fmt.Fprintln(stdout, secret.Format(secret.New()))
		return 0
	case "token":
		return tokenMain(args, stdout, stderr)
	case "version":
		fmt.Fprintf(stdout, "chatr %s (protocol 1)\n", version)
		return 0
	case "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "chatr: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
}
