package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/term"

	"chatr/internal/chat"
	"chatr/internal/proto"
)

const chatUsage = `Usage: chatr chat [flags]

A terminal client: shows the room's history, who is here and live messages,
and sends each line you type. It reconnects by itself (to another node of the
cluster if need be) and resumes where it stopped, missing nothing.

When its input is not a terminal it works in a pipe: it sends each input line,
prints messages as lines "HH:MM:SS sender: text" on standard output (status on
standard error), and at the end of the input exits 0 once every line is acked,
or 1 after --ack-timeout.

  echo "build 1234 is green" | chatr chat --name ci --room builds --history 0

Flags:
`

func chatMain(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("chatr chat", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfg := chat.Config{}
	fs.StringVar(&cfg.URL, "url", "ws://127.0.0.1:5080/chatr/ws", "node `URL`: ws://, http:// or host:port")
	fs.StringVar(&cfg.Name, "name", os.Getenv("USER"), "your `name`: 1-32 letters, digits, spaces, _ - .")
	fs.StringVar(&cfg.Room, "room", proto.DefaultRoom, "`room` to join: 1-64 of a-z 0-9 _ - .")
	fs.IntVar(&cfg.History, "history", chat.DefaultHistory, "recent messages to show on joining, 0 to 1000")
	fs.DurationVar(&cfg.AckTimeout, "ack-timeout", chat.DefaultAckTimeout, "at the end of the input, how long to wait for the node to ack the lines sent")
	fs.StringVar(&cfg.Token, "token", "", "auth `token`, where the node requires one (default $CHATR_TOKEN); the name then comes from it")
	fs.StringVar(&cfg.TokenURL, "token-url", "", "`URL` that answers {\"token\": ...}: fetched at each connect and before the token expires")
	if code, done := parseFlags(fs, args, chatUsage, stdout, stderr); done {
		return code
	}
	if cfg.Token == "" {
		cfg.Token = os.Getenv("CHATR_TOKEN")
	}
	if f, ok := stdin.(*os.File); ok {
		cfg.Interactive = term.IsTerminal(int(f.Fd()))
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "chatr chat: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := chat.Run(ctx, cfg, stdin, stdout, stderr); err != nil {
		fmt.Fprintf(stderr, "chatr chat: %v\n", err)
		return 1
	}
	return 0
}

// parseFlags parses args into fs. With --help it prints usage (the text
// and the flags) to stdout; on a bad flag it says what is wrong on stderr.
// done is true when the command should end with code.
func parseFlags(fs *flag.FlagSet, args []string, usage string, stdout, stderr io.Writer) (code int, done bool) {
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(stdout, usage)
		fs.SetOutput(stdout)
		fs.PrintDefaults()
		return 0, true
	case err != nil:
		fmt.Fprintf(stderr, "%s: %v\nSee %s --help.\n", fs.Name(), err, fs.Name())
		return 2, true
	case fs.NArg() > 0:
		fmt.Fprintf(stderr, "%s: unexpected argument %q\nSee %s --help.\n", fs.Name(), fs.Arg(0), fs.Name())
		return 2, true
	}
	return 0, false
}
