package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"

	"chatr/internal/bench"
)

const benchUsage = `Usage: chatr bench [flags]

A load generator that drives nodes through the public WebSocket protocol,
like real clients. Connection i joins room i%rooms on node (i/rooms)%nodes;
the first --senders connections send --rate messages a second between them,
once every connection is open. It prints a progress line each second and a
report: connections, messages sent and acked, deliveries a second, latency
from send to delivery (p50 p90 p99 p99.9 max), and a check that every member
of a room got every message acked in it exactly once (lost, duplicated, and
late: still on the way when the drain ended). It stops by itself after
--duration plus at most --drain. A URL given twice gets twice the
connections. Past the ephemeral port range (~28k) it spreads connections
over the source addresses 127.0.0.1, 127.0.0.2, ...

A node limits what one client may do: raise its limits on a node you
measure, e.g. chatr serve --send-rate 100000 --send-burst 1000
--max-conns-per-ip 0; otherwise they show as errors (rate_limited, dial).

Exit status: 0 when the check holds, 1 when it does not, 2 for bad flags.

  chatr bench --conns 1000 --rooms 1 --senders 4 --rate 1000 --duration 10s

Flags:
`

func benchMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("chatr bench", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfg := bench.Config{Progress: stderr}
	urls := fs.String("url", "ws://127.0.0.1:5080/chatr/ws", "node `URL[,URL...]`: ws://, http:// or host:port; clients spread over them")
	fs.IntVar(&cfg.Conns, "conns", 100, "WebSocket connections")
	fs.IntVar(&cfg.Rooms, "rooms", 10, "rooms, the connections spread over them")
	fs.IntVar(&cfg.Senders, "senders", 10, "connections that also send")
	fs.Float64Var(&cfg.Rate, "rate", 1000, "messages a second, all senders together; 0 for idle connections")
	fs.IntVar(&cfg.Window, "window", 0, "most unacked sends per sender; with a --rate above what the nodes take, measures their throughput without flooding them (0: no limit)")
	fs.IntVar(&cfg.Size, "size", 64, "`bytes` of each message text (at least its ~30-byte header)")
	fs.DurationVar(&cfg.Duration, "duration", bench.DefaultDuration, "length of the run, ramp included")
	fs.DurationVar(&cfg.Ramp, "ramp", 0, "spread the opening of connections over this time")
	fs.DurationVar(&cfg.Drain, "drain", bench.DefaultDrain, "after --duration, wait at most this long for deliveries in flight")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	quiet := fs.Bool("quiet", false, "no progress lines")
	fs.BoolVar(&cfg.Failover, "failover", false, "a connection its node drops resumes on another node of --url (hello, then join with since its last cursor; a sender sends its unacked messages again, same ref, and a send answered unavailable again a moment later), as a client that fails over does; the report says how many resumed and how long from the first drop to the last synced")
	fs.BoolVar(&cfg.AllowRemote, "allow-remote", false, "allow nodes that are not on this machine (loopback)")
	cpuProfile := fs.String("cpuprofile", "", "write the load generator's own CPU profile to `file` (to see what the client costs)")
	if code, done := parseFlags(fs, args, benchUsage, stdout, stderr); done {
		return code
	}
	for _, u := range strings.Split(*urls, ",") {
		if u = strings.TrimSpace(u); u != "" {
			cfg.URLs = append(cfg.URLs, u)
		}
	}
	if *quiet {
		cfg.Progress = nil
	}
	if _, err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "chatr bench: %v\n", err)
		return 2
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintf(stderr, "chatr bench: %v\n", err)
			return 2
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(stderr, "chatr bench: cpu profile: %v\n", err)
			return 2
		}
		defer pprof.StopCPUProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := bench.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintf(stderr, "chatr bench: %v\n", err)
		return 2
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(rep)
	} else {
		err = rep.WriteText(stdout)
	}
	if err != nil {
		fmt.Fprintf(stderr, "chatr bench: %v\n", err)
		return 1
	}
	if !rep.OK() {
		return 1
	}
	return 0
}
