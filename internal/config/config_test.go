package config

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"chatr/internal/secret"
	"time"
)

func noEnv(string) string { return "" }

func env(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

func TestDefaults(t *testing.T) {
	c, err := Parse(nil, noEnv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	if host == "" {
		host = "chatr"
	}
	want := Config{
		HTTPAddr: ":5080", DataDir: "./chatr-data", LogFormat: "text", LogLevel: "info",
		ReadLimit: 32 << 10, SendRate: 20, SendBurst: 40, MaxConns: defaultMaxConns(openFileLimit()), MaxConnsPerIP: 1000,
		SendQueue: 1024, ReplayMax: 10000, Shutdown: 10 * time.Second,
		NodeName: host, ClusterName: "chatr",
	}
	// Compare field by field what a default run relies on.
	checks := []struct {
		name      string
		got, want any
	}{
		{"HTTPAddr", c.HTTPAddr, want.HTTPAddr},
		{"DataDir", c.DataDir, want.DataDir},
		{"LogFormat", c.LogFormat, want.LogFormat},
		{"LogLevel", c.LogLevel, want.LogLevel},
		{"ReadLimit", c.ReadLimit, want.ReadLimit},
		{"SendRate", c.SendRate, want.SendRate},
		{"SendBurst", c.SendBurst, want.SendBurst},
		{"MaxConns", c.MaxConns, want.MaxConns},
		{"MaxConnsPerIP", c.MaxConnsPerIP, want.MaxConnsPerIP},
		{"SendQueue", c.SendQueue, want.SendQueue},
		{"ReplayMax", c.ReplayMax, want.ReplayMax},
		{"Shutdown", c.Shutdown, want.Shutdown},
		{"NodeName", c.NodeName, want.NodeName},
		{"ClusterName", c.ClusterName, want.ClusterName},
		{"ClusterAddr", c.ClusterAddr, ""},
		{"Discover", c.Discover, ""},
		{"AckReplicas", c.AckReplicas, 0},
		{"AdminHTTPAddr", c.AdminHTTPAddr, "127.0.0.1:5090"},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %v, want %v", ch.name, ch.got, ch.want)
		}
	}
	if c.AllowedOrigins != nil || c.Join != nil || c.Secret != nil || c.AllowFraming != nil {
		t.Errorf("lists and secret not empty: %v %v %v %v", c.AllowedOrigins, c.Join, c.Secret, c.AllowFraming)
	}
	if c.Clustered() {
		t.Error("default config is clustered")
	}
	// The read limit leaves room for the largest message.
	if c.ReadLimit < 4096+256 {
		t.Errorf("default read limit %d cannot hold a 4096-byte message", c.ReadLimit)
	}
}

func TestFlags(t *testing.T) {
	c, err := Parse([]string{
		"--http", "127.0.0.1:8080", "--data", "/tmp/x", "--log-format", "json", "--log-level", "debug",
		"--allowed-origins", " a.example , b.example:8443,,", "--read-limit", "65536", "--send-rate", "2.5",
		"--send-burst", "3", "--max-conns", "0", "--max-conns-per-ip", "0", "--send-queue", "16",
		"--replay-max", "1", "--shutdown-timeout", "3s", "--node", "n1", "--cluster", "blue",
		"--join", "10.0.0.1:7946, dns:chatr.local", "--discover", "lan", "--ack-replicas", "2",
		"--advertise", "10.0.0.9:7000", "--cluster-addr", "10.0.0.9:7000",
	}, noEnv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTPAddr != "127.0.0.1:8080" || c.DataDir != "/tmp/x" || c.LogFormat != "json" || c.LogLevel != "debug" ||
		!slices.Equal(c.AllowedOrigins, []string{"a.example", "b.example:8443"}) || c.ReadLimit != 65536 ||
		c.SendRate != 2.5 || c.SendBurst != 3 || c.MaxConns != 0 || c.MaxConnsPerIP != 0 || c.SendQueue != 16 ||
		c.ReplayMax != 1 || c.Shutdown != 3*time.Second || c.NodeName != "n1" || c.ClusterName != "blue" ||
		!slices.Equal(c.Join, []string{"10.0.0.1:7946", "dns:chatr.local"}) || c.Discover != "lan" ||
		c.AckReplicas != 2 || c.Advertise != "10.0.0.9:7000" {
		t.Fatalf("parsed %+v", c)
	}
	if !c.Clustered() {
		t.Error("--join does not make the node clustered")
	}
	// Single-dash flags work too (package flag).
	c, err = Parse([]string{"-http=:9000"}, noEnv, io.Discard)
	if err != nil || c.HTTPAddr != ":9000" {
		t.Fatalf("-http=:9000: %v %q", err, c.HTTPAddr)
	}
}

// Every validation error names the flag and what to do.
func TestValidationErrors(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--http", "nope"}, `--http "nope": want host:port`},
		{[]string{"--http", "127.0.0.1"}, `--http "127.0.0.1": want host:port`},
		{[]string{"--http", ":99999"}, `--http ":99999": port must be a number from 0 to 65535`},
		{[]string{"--http", ":http"}, `--http ":http": port must be a number from 0 to 65535`},
		{[]string{"--data", ""}, "--data: must name a directory"},
		{[]string{"--log-format", "xml"}, `--log-format "xml": want text or json`},
		{[]string{"--log-level", "loud"}, `--log-level "loud": want debug, info, warn or error`},
		{[]string{"--read-limit", "8191"}, "--read-limit 8191: must be at least 8192 bytes"},
		{[]string{"--send-rate", "0"}, "--send-rate 0: must be above 0"},
		{[]string{"--send-rate", "-1"}, "--send-rate -1: must be above 0"},
		{[]string{"--send-burst", "0"}, "--send-burst 0: must be at least 1"},
		{[]string{"--max-conns", "-1"}, "--max-conns and --max-conns-per-ip: must be 0 (no limit) or more"},
		{[]string{"--max-conns-per-ip", "-1"}, "--max-conns and --max-conns-per-ip: must be 0 (no limit) or more"},
		{[]string{"--send-queue", "15"}, "--send-queue 15: must be at least 16"},
		{[]string{"--replay-max", "0"}, "--replay-max 0: must be at least 1"},
		{[]string{"--shutdown-timeout", "0s"}, "--shutdown-timeout 0s: must be above 0"},
		{[]string{"--cluster-addr", "a:b:c"}, `--cluster-addr "a:b:c": want host:port`},
		{[]string{"--cluster-addr", "host:70000"}, `--cluster-addr "host:70000": port must be a number from 0 to 65535`},
		{[]string{"--advertise", "nohost"}, `--advertise "nohost": want host:port`},
		{[]string{"--join", "nohost"}, `--join "nohost": want host:port`},
		{[]string{"--join", "10.0.0.1:7946"}, "need --cluster-addr"},
		{[]string{"--discover", "lan"}, "need --cluster-addr"},
		{[]string{"--join", "dns:"}, "--join dns: needs a name"},
		{[]string{"--discover", "wan"}, `--discover "wan": the only discovery is lan`},
		{[]string{"--cluster", ""}, "--cluster: must not be empty"},
		{[]string{"--ack-replicas", "-1"}, "--ack-replicas -1: must be 0 or more"},
		{[]string{"--secret-file", "/nonexistent/key"}, "--secret-file:"},
		{[]string{"--http-read-timeout", "0s"}, "--http-read-timeout 0s: must be at least 100ms"},
		{[]string{"--frame-rate", "0"}, "--frame-rate 0: must be above 0"},
		{[]string{"--frame-burst", "0"}, "--frame-burst 0: must be at least 1"},
		{[]string{"--replay-rate", "0"}, "--replay-rate 0: must be above 0"},
		{[]string{"--max-rooms-per-session", "0"}, "--max-rooms-per-session 0: must be at least 1"},
		{[]string{"--get-rate", "0"}, "--get-rate 0: must be above 0"},
		{[]string{"--get-burst", "0"}, "--get-burst 0: must be at least 1"},
		{[]string{"--new-rooms-per-minute", "0"}, "--new-rooms-per-minute 0: must be at least 1"},
		{[]string{"--presence-interval", "-1ms"}, "--presence-interval -1ms: must be from 0 to 10s"},
		{[]string{"--presence-interval", "1m"}, "--presence-interval 1m0s: must be from 0 to 10s"},
		{[]string{"--replay-bytes-rate", "-1"}, "--replay-bytes-rate -1: must be above 0"},
		{[]string{"--replay-bytes-burst", "1000"}, "--replay-bytes-burst 1000: must be at least 65536"},
		{[]string{"--http-write-timeout", "50ms"}, "--http-write-timeout 50ms: must be at least 100ms"},
		{[]string{"--http-idle-timeout", "-1s"}, "--http-idle-timeout -1s: must be at least 100ms"},
		{[]string{"--public-url", "chat.example.com"}, `--public-url "chat.example.com": want an http:// or https:// URL`},
		{[]string{"--public-url", "ftp://chat.example.com"}, `--public-url "ftp://chat.example.com": want an http:// or https:// URL`},
		{[]string{"--public-url", "https://"}, `--public-url "https://": want scheme://host[:port]`},
		{[]string{"--admin-http", "nope"}, `--admin-http "nope": want host:port`},
		{[]string{"--admin-http", "127.0.0.1:70000"}, `--admin-http "127.0.0.1:70000": port must be a number from 0 to 65535`},
		{[]string{"--http", ":65530"}, "--admin-http: the default, the --http port + 10, is past 65535"},
		{[]string{"--pprof", "--admin-http", "off"}, "--pprof serves profiles on the admin listener, which --admin-http off turns off"},
		{[]string{"--allow-framing", "intranet.example.com"}, `--allow-framing "intranet.example.com": want an origin`},
		{[]string{"--allow-framing", "https://intranet.example.com/chat"}, `--allow-framing "https://intranet.example.com/chat": want an origin`},
		{[]string{"--allow-framing", "https://a.example;script-src *"}, `--allow-framing "https://a.example;script-src *": want an origin`},
		{[]string{"--allow-framing", "https://a.example:0"}, `--allow-framing "https://a.example:0": port must be a number from 1 to 65535`},
		{[]string{"--engine", "kafka"}, `--engine "kafka": must be local or nats`},
		{[]string{"--engine", "nats"}, "--engine nats needs --nats-url"},
		{[]string{"--nats-url", "nats://127.0.0.1:4222"}, "--nats-url: only with --engine nats"},
		{[]string{"--history-max-age", "1h"}, "--history-max-age: only with --engine nats"},
		{[]string{"--engine", "nats", "--nats-url", "nats://h:4222", "--join", "h:7946", "--cluster-addr", "127.0.0.1:7946"}, "--engine nats: the NATS servers are the cluster"},
		{[]string{"--engine", "nats", "--nats-url", "nats://h:4222", "--nats-replicas", "7"}, "--nats-replicas 7: must be from 1 to 5"},
		{[]string{"--engine", "nats", "--nats-url", "nats://h:4222", "--nats-stream", ""}, "--nats-stream: must not be empty"},
		{[]string{"--engine", "nats", "--nats-url", "nats://h:4222", "--nats-creds-file", "a", "--nats-token-file", "b"}, "give one or neither"},
		{[]string{"--engine", "nats", "--nats-url", "nats://h:4222", "--history-max-per-room", "-1"}, "--history-max-age and --history-max-per-room: must be 0"},
		{[]string{"serve"}, `unexpected argument "serve"`},
		{[]string{"--bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"--send-rate", "fast"}, `invalid value "fast" for flag -send-rate`},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var out bytes.Buffer
			_, err := Parse(tc.args, noEnv, &out)
			if err == nil {
				t.Fatalf("accepted %v", tc.args)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q, want it to contain %q", err, tc.want)
			}
		})
	}
}

// All the problems are reported at once, not one per run.
func TestValidationJoinsErrors(t *testing.T) {
	_, err := Parse([]string{"--log-format", "xml", "--send-queue", "1", "--http", "x"}, noEnv, io.Discard)
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{"--log-format", "--send-queue", "--http"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %s", err, want)
		}
	}
}

func TestEnv(t *testing.T) {
	c, err := Parse(nil, env("CHATR_HTTP", "127.0.0.1:9000", "CHATR_SEND_RATE", "5", "CHATR_MAX_CONNS_PER_IP", "7",
		"CHATR_ALLOWED_ORIGINS", "x.example,y.example", "CHATR_SHUTDOWN_TIMEOUT", "2s", "CHATR_LOG_FORMAT", "json"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTPAddr != "127.0.0.1:9000" || c.SendRate != 5 || c.MaxConnsPerIP != 7 ||
		!slices.Equal(c.AllowedOrigins, []string{"x.example", "y.example"}) || c.Shutdown != 2*time.Second || c.LogFormat != "json" {
		t.Fatalf("from env: %+v", c)
	}

	// A flag beats the env.
	c, err = Parse([]string{"--http", "127.0.0.1:1234", "--send-rate", "9"}, env("CHATR_HTTP", "127.0.0.1:9000", "CHATR_SEND_RATE", "5"), io.Discard)
	if err != nil || c.HTTPAddr != "127.0.0.1:1234" || c.SendRate != 9 {
		t.Fatalf("flag vs env: %v %+v", err, c)
	}

	// A bad env value names the variable.
	_, err = Parse(nil, env("CHATR_SEND_RATE", "abc"), io.Discard)
	if err == nil || !strings.Contains(err.Error(), `CHATR_SEND_RATE="abc"`) {
		t.Fatalf("bad env value: %v", err)
	}
	// A bad env value that a flag overrides does not matter.
	if _, err = Parse([]string{"--send-rate", "3"}, env("CHATR_SEND_RATE", "abc"), io.Discard); err != nil {
		t.Fatalf("overridden bad env value: %v", err)
	}
	// An env value is validated like a flag.
	_, err = Parse(nil, env("CHATR_LOG_FORMAT", "xml"), io.Discard)
	if err == nil || !strings.Contains(err.Error(), `--log-format "xml"`) {
		t.Fatalf("invalid env value: %v", err)
	}
	// Empty env values mean unset.
	if c, err = Parse(nil, env("CHATR_HTTP", ""), io.Discard); err != nil || c.HTTPAddr != ":5080" {
		t.Fatalf("empty env: %v %q", err, c.HTTPAddr)
	}
}

// --admin-http defaults to the loopback address and the --http port + 10,
// whatever --http binds; off turns it off; a given address is kept.
func TestAdminHTTP(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "127.0.0.1:5090"},
		{[]string{"--http", ":5081"}, "127.0.0.1:5091"},
		{[]string{"--http", "10.1.2.3:8080"}, "127.0.0.1:8090"},
		{[]string{"--http", "[::1]:5080"}, "127.0.0.1:5090"},
		{[]string{"--http", "127.0.0.1:0"}, "127.0.0.1:0"},
		{[]string{"--http", ":65525"}, "127.0.0.1:65535"},
		{[]string{"--admin-http", "off"}, ""},
		{[]string{"--admin-http", "10.1.2.3:9100"}, "10.1.2.3:9100"},
		{[]string{"--admin-http", ":9100", "--http", ":1"}, ":9100"},
	} {
		c, err := Parse(tc.args, noEnv, io.Discard)
		if err != nil || c.AdminHTTPAddr != tc.want {
			t.Errorf("%v: --admin-http resolves to %q (%v), want %q", tc.args, c.AdminHTTPAddr, err, tc.want)
		}
	}
	c, err := Parse(nil, env("CHATR_ADMIN_HTTP", "off"), io.Discard)
	if err != nil || c.AdminHTTPAddr != "" {
		t.Errorf("CHATR_ADMIN_HTTP=off: %q (%v), want off", c.AdminHTTPAddr, err)
	}
}

// --allow-framing takes origins, with a trailing slash or without.
func TestAllowFraming(t *testing.T) {
	c, err := Parse([]string{"--allow-framing", "https://a.example, http://b.example:8080/"}, noEnv, io.Discard)
	if err != nil || !slices.Equal(c.AllowFraming, []string{"https://a.example", "http://b.example:8080"}) {
		t.Fatalf("--allow-framing: %q (%v)", c.AllowFraming, err)
	}
}

func TestHelp(t *testing.T) {
	for _, arg := range []string{"--help", "-h"} {
		var out bytes.Buffer
		_, err := Parse([]string{arg}, noEnv, &out)
		if !errors.Is(err, flag.ErrHelp) {
			t.Fatalf("%s: error %v, want flag.ErrHelp", arg, err)
		}
		for _, want := range []string{"Usage: chatr", "CHATR_", "-http", "-data", "-send-rate", "-allowed-origins", "-cluster-addr", "-secret-file",
			"-public-url", "-max-conns", "open-file limit", "-http-read-timeout", "-http-write-timeout", "-http-idle-timeout",
			"-frame-rate", "-frame-burst", "-replay-rate", "-replay-bytes-rate", "-replay-bytes-burst",
			"-max-rooms-per-session", "-new-rooms-per-minute", "-get-rate", "-get-burst", "-presence-interval",
			"-admin-http", "-allow-framing",
			"-auth-hmac-secret-file", "-auth-hmac-previous-secret-file", "-auth-public-key-file", "-auth-jwks-url",
			"-auth-issuer", "-auth-audience", "-auth-expired-grace", "-auth-token-url", "-api-key-file"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("%s output lacks %q:\n%s", arg, want, out.String())
			}
		}
	}
}

func TestClusterAddrDefaultPort(t *testing.T) {
	cases := []struct{ in, want string }{
		{"10.0.0.1", "10.0.0.1:7946"},
		{"node1.local", "node1.local:7946"},
		{"10.0.0.1:8000", "10.0.0.1:8000"},
		{":7000", ":7000"},
		{"[::1]:7000", "[::1]:7000"},
		{"[::1]", "[::1]:7946"},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			c, err := Parse([]string{"--cluster-addr", tc.in}, noEnv, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if c.ClusterAddr != tc.want {
				t.Fatalf("cluster addr %q, want %q", c.ClusterAddr, tc.want)
			}
			if !c.Clustered() {
				t.Fatal("--cluster-addr does not make the node clustered")
			}
		})
	}
}

func TestSecretFile(t *testing.T) {
	dir := t.TempDir()
	key := secret.New()
	for _, tc := range []struct {
		name string
		data []byte
		want []byte // nil: refused
	}{
		{"printable", []byte(secret.Format(key) + "\n"), key},
		{"raw 16 bytes", bytes.Repeat([]byte{0xfe}, 16), bytes.Repeat([]byte{0xfe}, 16)},
		{"raw 32 bytes", bytes.Repeat([]byte{0xfe}, 32), bytes.Repeat([]byte{0xfe}, 32)},
		{"empty", nil, nil},
		{"raw 15 bytes", bytes.Repeat([]byte{0xfe}, 15), nil},
		{"raw 33 bytes", bytes.Repeat([]byte{0xfe}, 33), nil},
		{"printable, too short", []byte(secret.Format(make([]byte, 10))), nil},
	} {
		path := filepath.Join(dir, "key")
		if err := os.WriteFile(path, tc.data, 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := Parse([]string{"--secret-file", path}, noEnv, io.Discard)
		switch {
		case tc.want != nil && err != nil:
			t.Errorf("%s: refused: %v", tc.name, err)
		case tc.want != nil && !bytes.Equal(c.Secret, tc.want):
			t.Errorf("%s: Secret %x", tc.name, c.Secret)
		case tc.want == nil && err == nil:
			t.Errorf("%s: accepted", tc.name)
		case tc.want == nil && !strings.Contains(err.Error(), "16, 24 or 32"):
			t.Errorf("%s: error %q does not say what a key is", tc.name, err)
		}
	}
}

func TestSecretFlags(t *testing.T) {
	key := secret.New()
	c, err := Parse([]string{"--secret", secret.Format(key)}, noEnv, io.Discard)
	if err != nil || !bytes.Equal(c.Secret, key) {
		t.Fatalf("--secret: %x, %v", c.Secret, err)
	}
	env := func(k string) string {
		if k == "CHATR_SECRET" {
			return secret.Format(key)
		}
		return ""
	}
	if c, err := Parse(nil, env, io.Discard); err != nil || !bytes.Equal(c.Secret, key) {
		t.Fatalf("CHATR_SECRET: %x, %v", c.Secret, err)
	}
	path := filepath.Join(t.TempDir(), "key")
	os.WriteFile(path, []byte(secret.Format(key)), 0o600)
	for _, args := range [][]string{
		{"--secret", "not-a-key"},
		{"--secret", secret.Format(key), "--secret-file", path},
		{"--insecure-no-secret", "--secret", secret.Format(key)},
	} {
		if _, err := Parse(args, noEnv, io.Discard); err == nil {
			t.Errorf("%q accepted", args)
		}
	}
	if c, err := Parse([]string{"--insecure-no-secret", "--cluster-addr", "127.0.0.1:7947", "--join", "127.0.0.1:7946"}, noEnv, io.Discard); err != nil || !c.InsecureNoSecret {
		t.Errorf("--insecure-no-secret: %+v, %v", c.InsecureNoSecret, err)
	}
}

// The default --max-conns leaves the node files to spare: with 20,000
// files, 2,000 stay for the store, peers and refusals, so a flood of
// connections is refused rather than starving the node of files.
func TestDefaultMaxConns(t *testing.T) {
	for _, tc := range []struct {
		files uint64
		want  int
	}{
		{0, 50000}, // unknown
		{256, 128},
		{1024, 768},
		{4096, 3687},
		{20000, 18000},
		{60000, 50000},
		{1 << 20, 50000},
		{1 << 62, 50000},
	} {
		if got := defaultMaxConns(tc.files); got != tc.want {
			t.Errorf("defaultMaxConns(%d) = %d, want %d", tc.files, got, tc.want)
		}
	}
	// The default of this process follows its open-file limit.
	c, err := Parse(nil, noEnv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if files := openFileLimit(); files > 0 && uint64(c.MaxConns) >= files {
		t.Fatalf("--max-conns defaults to %d with an open-file limit of %d", c.MaxConns, files)
	}
}

func TestLimitDefaults(t *testing.T) {
	c, err := Parse(nil, noEnv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTPReadTimeout != 10*time.Second || c.HTTPWriteTimeout != 30*time.Second || c.HTTPIdleTimeout != time.Minute {
		t.Errorf("HTTP timeouts %v %v %v, want 10s 30s 1m", c.HTTPReadTimeout, c.HTTPWriteTimeout, c.HTTPIdleTimeout)
	}
	if c.FrameRate != 5 || c.FrameBurst != 50 {
		t.Errorf("frame rate %v burst %d, want 5 and 50", c.FrameRate, c.FrameBurst)
	}
	if c.ReplayRate != 1000 || c.ReplayBytesRate != 1<<20 || c.ReplayBytesBurst != 8<<20 {
		t.Errorf("replay rate %v, bytes %v burst %d, want 1000, 1 MiB and 8 MiB", c.ReplayRate, c.ReplayBytesRate, c.ReplayBytesBurst)
	}
	if c.PresenceInterval != 200*time.Millisecond {
		t.Errorf("presence interval %v, want 200ms", c.PresenceInterval)
	}
	if c.MaxRoomsPerSession != 100 || c.NewRoomsPerMinute != 30 {
		t.Errorf("rooms per session %d, new rooms per minute %d, want 100 and 30", c.MaxRoomsPerSession, c.NewRoomsPerMinute)
	}
	if c.GetRate != 20 || c.GetBurst != 100 {
		t.Errorf("GET rate %v burst %d, want 20 and 100", c.GetRate, c.GetBurst)
	}
	if c.PublicURLs != nil {
		t.Errorf("PublicURLs %v, want none", c.PublicURLs)
	}
	c, err = Parse(nil, env("CHATR_PUBLIC_URL", "https://a.example, http://b.example:8080", "CHATR_HTTP_IDLE_TIMEOUT", "5s"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.PublicURLs, []string{"https://a.example", "http://b.example:8080"}) || c.HTTPIdleTimeout != 5*time.Second {
		t.Errorf("from env: PublicURLs %v, idle timeout %v", c.PublicURLs, c.HTTPIdleTimeout)
	}
}
