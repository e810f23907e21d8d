// Package config holds chatr serve's settings: one Config struct, parsed
// from flags and CHATR_* environment variables, with documented defaults and
// validation that says what to fix.
package config

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"chatr/internal/cluster"
	"chatr/internal/secret"
)

// Config is everything a node needs to start. Parse fills the defaults.
type Config struct {
	HTTPAddr  string // --http: HTTP listen address
	DataDir   string // --data: data directory
	LogFormat string // --log-format: text or json
	LogLevel  string // --log-level: debug, info, warn, error

	AllowedOrigins []string      // --allowed-origins: extra Origin hosts for WebSocket (this node's own pages always are; "*" allows any)
	ReadLimit      int64         // --read-limit: largest WebSocket frame accepted, bytes
	SendRate       float64       // --send-rate: messages per second per session (and per IP over HTTP)
	SendBurst      int           // --send-burst: messages a session may send at once before the rate applies
	MaxConns       int           // --max-conns: HTTP connections in total, WebSockets included (0: no limit)
	MaxConnsPerIP  int           // --max-conns-per-ip: HTTP connections per client IP (IPv6: per /64), WebSockets included (0: no limit)
	SendQueue      int           // --send-queue: frames queued for one session before it is closed as too slow
	WriteDelay     time.Duration // --write-delay: how long a session's first queued frame waits for others before a write
	ReplayMax      int           // --replay-max: most messages replayed by a join with since
	Shutdown       time.Duration
	Pprof          bool   // --pprof: serve /debug/pprof/ on the admin listener
	TLSCertFile    string // --tls-cert-file: PEM certificate (chain) to serve HTTPS and WSS with
	TLSKeyFile     string // --tls-key-file: its PEM private key

	// AdminHTTPAddr (--admin-http) is the admin listener's address: metrics,
	// profiles, probes and the full cluster view, trusted by its binding.
	// Parse fills the default (adminDefault: the loopback address with the
	// --http port + 10); "" when --admin-http is off.
	AdminHTTPAddr string
	// AllowFraming (--allow-framing) are the origins whose pages may frame
	// the web client (CSP frame-ancestors); none may without it.
	AllowFraming []string

	NodeName    string   // --node: display name
	ClusterAddr string   // --cluster-addr: gossip listener host:port
	Advertise   string   // --advertise: gossip address peers should use
	Join        []string // --join: members to join (host:port or dns:NAME)
	Discover    string   // --discover: "lan" for mDNS discovery
	ClusterName string   // --cluster: cluster name
	SecretKey   string   // --secret: the cluster secret as `chatr secret` prints it
	SecretFile  string   // --secret-file: file holding the cluster secret
	AckReplicas int      // --ack-replicas: peers that must store a message before its ack
	// InsecureNoSecret (--insecure-no-secret) runs a cluster node without a
	// secret: anyone who reaches its ports can join. For tests only.
	InsecureNoSecret bool

	// Secret is the cluster secret from --secret or --secret-file (nil when
	// neither is given: a cluster node then uses the one kept in its data
	// directory, made at its first start).
	Secret []byte

	Engine // where messages live (engine.go)
	Limits // caps and checks against strangers (limits.go)
	Auth   // who is who: token keys and API keys (auth.go)
}

// TLS reports whether the HTTP listener serves TLS.
func (c *Config) TLS() bool { return c.TLSCertFile != "" }

// Clustered reports whether the node runs in cluster mode.
func (c *Config) Clustered() bool {
	return c.ClusterAddr != "" || len(c.Join) > 0 || c.Discover != ""
}

// defaultClusterPort is the gossip port when --cluster-addr names none:
// the cluster package's, defined there once.
var defaultClusterPort = strconv.Itoa(cluster.DefaultPort)

// Parse reads flags from args, falling back to CHATR_<FLAG> variables from
// getenv for flags not given, and validates the result. It writes --help to
// out and returns flag.ErrHelp then.
func Parse(args []string, getenv func(string) string, out io.Writer) (Config, error) {
	var c Config
	var origins, join, logLevel, framing string
	fs := flag.NewFlagSet("chatr serve", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&c.HTTPAddr, "http", ":5080", "HTTP listen `address` (web client, WebSocket, API, peer links)")
	fs.StringVar(&c.AdminHTTPAddr, "admin-http", "", "admin listen `address` (metrics, profiles, probes, the cluster view with every address), or off; trusted by its binding (default: 127.0.0.1 and the --http port + 10, e.g. 127.0.0.1:5090)")
	fs.StringVar(&framing, "allow-framing", "", "comma-separated `origins` (https://host[:port]) whose pages may show the web client in a frame (default: none may)")
	fs.StringVar(&c.DataDir, "data", "./chatr-data", "data `directory`; made when missing, refused when it holds something else")
	fs.StringVar(&c.LogFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&origins, "allowed-origins", "", "comma-separated `hosts` (host or host:port, * for any) whose pages may open WebSockets, besides this node's own (--public-url)")
	fs.Int64Var(&c.ReadLimit, "read-limit", 32<<10, "largest WebSocket frame accepted, in `bytes`; a larger one closes the session with 1009")
	fs.Float64Var(&c.SendRate, "send-rate", 20, "messages per second one session (or one IP over HTTP) may send")
	fs.IntVar(&c.SendBurst, "send-burst", 40, "messages one session may send in a burst before --send-rate applies")
	fs.IntVar(&c.MaxConns, "max-conns", defaultMaxConns(openFileLimit()), "open HTTP connections in total, plain and WebSocket alike; more are answered 503 and closed (0: no limit; default: the lower of 50000 and the open-file limit less a reserve)")
	fs.IntVar(&c.MaxConnsPerIP, "max-conns-per-ip", 1000, "open HTTP connections per client IP (IPv6: per /64), plain and WebSocket alike; more are answered 429 and closed (0: no limit)")
	fs.IntVar(&c.SendQueue, "send-queue", 1024, "`frames` waiting for a session whose socket takes nothing for 1s (or 64 times as many at all) before it is closed as too slow (4000)")
	fs.DurationVar(&c.WriteDelay, "write-delay", 0, "wait this long after a frame is queued for a session before writing, so one write carries more frames (e.g. 2ms for big rooms under load)")
	fs.IntVar(&c.ReplayMax, "replay-max", 10000, "most messages a join with since replays; past it the client is told of a gap")
	fs.DurationVar(&c.Shutdown, "shutdown-timeout", 10*time.Second, "how long a SIGTERM drain may take")
	fs.StringVar(&c.TLSCertFile, "tls-cert-file", "", "PEM certificate `file` (with its chain): --http serves HTTPS and WSS; reloaded on SIGHUP")
	fs.StringVar(&c.TLSKeyFile, "tls-key-file", "", "PEM private key `file` of --tls-cert-file")
	fs.BoolVar(&c.Pprof, "pprof", false, "serve Go profiles at /debug/pprof/ on the admin listener (--admin-http; for benchmarks)")
	host, _ := os.Hostname()
	fs.StringVar(&c.NodeName, "node", host, "node display `name`")
	fs.StringVar(&c.ClusterAddr, "cluster-addr", "", "gossip listen `host:port` (port "+defaultClusterPort+" when left out); turns on cluster mode")
	fs.StringVar(&c.Advertise, "advertise", "", "gossip `host:port` peers should use when the listen address is not reachable as is")
	fs.StringVar(&join, "join", "", "comma-separated members to join: `host:port` or dns:NAME; retried until one answers")
	fs.StringVar(&c.Discover, "discover", "", "\"lan\" to find and announce nodes with mDNS (_chatr._tcp)")
	fs.StringVar(&c.ClusterName, "cluster", "chatr", "cluster `name`; nodes of other clusters are refused")
	fs.StringVar(&c.SecretKey, "secret", "", "the cluster secret, as `key` (chatr secret prints a new one): encrypts gossip and authenticates peer links; a cluster node given none makes one in its data directory and prints the line that adds a node")
	fs.StringVar(&c.SecretFile, "secret-file", "", "`file` holding the cluster secret (the key as chatr secret prints it, or 16, 24 or 32 raw bytes)")
	fs.BoolVar(&c.InsecureNoSecret, "insecure-no-secret", false, "run a cluster node with no secret at all: anyone who reaches its ports can join, read and write the cluster (for tests only)")
	fs.IntVar(&c.AckReplicas, "ack-replicas", 0, "peers that must store a message before the sender's ack")
	c.Engine.addFlags(fs)
	c.Limits.addFlags(fs)
	c.Auth.addFlags(fs)
	fs.Usage = func() {
		fmt.Fprintf(out, "Usage: chatr [serve] [flags]\n\nStarts a chatr node. Every flag can also be set with CHATR_<FLAG>, e.g. CHATR_HTTP=:8080.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q (flags start with --)", fs.Arg(0))
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] || envErr != nil {
			return
		}
		key := "CHATR_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v := getenv(key); v != "" {
			if err := f.Value.Set(v); err != nil {
				envErr = fmt.Errorf("%s=%q: %w", key, v, err)
			}
		}
	})
	if envErr != nil {
		return c, envErr
	}
	c.AllowedOrigins = splitList(origins)
	c.Join = splitList(join)
	c.AllowFraming = splitList(framing)
	c.LogLevel = logLevel
	if err := c.validate(); err != nil {
		return c, err
	}
	return c, nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// readSecret fills Secret from --secret or --secret-file.
func (c *Config) readSecret() error {
	switch {
	case c.SecretKey != "" && c.SecretFile != "":
		return errors.New("--secret and --secret-file: give one of them")
	case c.InsecureNoSecret && (c.SecretKey != "" || c.SecretFile != ""):
		return errors.New("--insecure-no-secret with a secret: drop one of them")
	case c.SecretKey != "":
		s, err := secret.Parse(c.SecretKey)
		if err != nil {
			return fmt.Errorf("--secret: %w", err)
		}
		c.Secret = s
	case c.SecretFile != "":
		data, err := os.ReadFile(c.SecretFile)
		if err != nil {
			return fmt.Errorf("--secret-file: %w", err)
		}
		s, err := secret.ParseFile(data)
		if err != nil {
			return fmt.Errorf("--secret-file %s: %w", c.SecretFile, err)
		}
		c.Secret = s
	}
	return nil
}

func checkHostPort(flagName, addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--%s %q: want host:port (e.g. 127.0.0.1:5080 or :5080): %v", flagName, addr, err)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("--%s %q: port must be a number from 0 to 65535", flagName, addr)
	}
	return nil
}

func (c *Config) validate() error {
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	add(checkHostPort("http", c.HTTPAddr))
	add(c.adminAddr())
	if c.Pprof && c.AdminHTTPAddr == "" {
		add(errors.New("--pprof serves profiles on the admin listener, which --admin-http off turns off: drop one of them"))
	}
	for i, o := range c.AllowFraming {
		add(checkOrigin("allow-framing", o))
		c.AllowFraming[i] = strings.TrimSuffix(o, "/")
	}
	if c.DataDir == "" {
		add(errors.New("--data: must name a directory"))
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		add(fmt.Errorf("--log-format %q: want text or json", c.LogFormat))
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		add(fmt.Errorf("--log-level %q: want debug, info, warn or error", c.LogLevel))
	}
	if c.ReadLimit < 8<<10 {
		add(fmt.Errorf("--read-limit %d: must be at least 8192 bytes so a 4096-byte message fits", c.ReadLimit))
	}
	if c.SendRate <= 0 {
		add(fmt.Errorf("--send-rate %v: must be above 0", c.SendRate))
	}
	if c.SendBurst < 1 {
		add(fmt.Errorf("--send-burst %d: must be at least 1", c.SendBurst))
	}
	if c.MaxConns < 0 || c.MaxConnsPerIP < 0 {
		add(errors.New("--max-conns and --max-conns-per-ip: must be 0 (no limit) or more"))
	}
	if c.SendQueue < 16 {
		add(fmt.Errorf("--send-queue %d: must be at least 16", c.SendQueue))
	}
	if c.WriteDelay < 0 || c.WriteDelay > time.Second {
		add(fmt.Errorf("--write-delay %v: must be from 0 to 1s", c.WriteDelay))
	}
	if c.ReplayMax < 1 {
		add(fmt.Errorf("--replay-max %d: must be at least 1", c.ReplayMax))
	}
	if c.Shutdown <= 0 {
		add(fmt.Errorf("--shutdown-timeout %v: must be above 0", c.Shutdown))
	}
	if c.Clustered() && c.ClusterAddr == "" {
		add(errors.New("--join and --discover need --cluster-addr IP[:PORT]: the address this node's gossip listens on (that address only) and peers reach it at"))
	}
	if c.ClusterAddr != "" {
		if _, _, err := net.SplitHostPort(c.ClusterAddr); err != nil && strings.Contains(err.Error(), "missing port") {
			c.ClusterAddr = net.JoinHostPort(strings.Trim(c.ClusterAddr, "[]"), defaultClusterPort)
		}
		add(checkHostPort("cluster-addr", c.ClusterAddr))
	}
	if c.Advertise != "" {
		add(checkHostPort("advertise", c.Advertise))
	}
	for _, j := range c.Join {
		if strings.HasPrefix(j, "dns:") {
			if len(j) == len("dns:") {
				add(errors.New("--join dns: needs a name, e.g. dns:chatr.local"))
			}
			continue
		}
		add(checkHostPort("join", j))
	}
	if c.Discover != "" && c.Discover != "lan" {
		add(fmt.Errorf("--discover %q: the only discovery is lan", c.Discover))
	}
	if c.ClusterName == "" {
		add(errors.New("--cluster: must not be empty"))
	}
	if c.NodeName == "" {
		c.NodeName = "chatr"
	}
	if c.AckReplicas < 0 {
		add(fmt.Errorf("--ack-replicas %d: must be 0 or more", c.AckReplicas))
	}
	add(c.readSecret())
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		add(errors.New("--tls-cert-file and --tls-key-file: give both or neither"))
	} else if c.TLSCertFile != "" {
		if _, err := tls.LoadX509KeyPair(c.TLSCertFile, c.TLSKeyFile); err != nil {
			add(fmt.Errorf("--tls-cert-file %s / --tls-key-file %s: %w", c.TLSCertFile, c.TLSKeyFile, err))
		}
	}
	c.Engine.validate(c, add)
	c.Limits.validate(add)
	c.Auth.validate(add)
	return errors.Join(errs...)
}
