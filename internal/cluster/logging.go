package cluster

import (
	"regexp"
	"strings"
)

// logWriter routes memberlist's and mdns's log lines into slog at debug
// level, and turns the lines that mean "a peer was refused" (another
// cluster's label, a wrong or missing secret) into a counted warning:
// memberlist refuses those before any delegate sees them.
type logWriter struct {
	c    *Cluster
	from string
}

var fromAddr = regexp.MustCompile(`from=(\S+)`)

func (w logWriter) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	w.c.log.Debug(line, "from", w.from)
	if reason := refusal(line); reason != "" {
		peer := "unknown"
		if m := fromAddr.FindStringSubmatch(line); m != nil {
			peer = m[1]
			if i := strings.LastIndexByte(peer, ':'); i > 0 {
				peer = peer[:i] // streams come from ephemeral ports: key by host
			}
		}
		w.c.refuse(reason, peer, refusedError(line))
	}
	return len(p), nil
}

type refusedError string

func (e refusedError) Error() string { return string(e) }

func refusal(line string) string {
	l := strings.ToLower(line)
	switch {
	case strings.Contains(l, "unacceptable label"):
		return "cluster"
	case strings.Contains(l, "decrypt"),
		strings.Contains(l, "encryption is not configured"),
		strings.Contains(l, "remote state is not encrypted"):
		return "secret"
	}
	return ""
}
