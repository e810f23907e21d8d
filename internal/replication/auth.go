package replication

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"chatr/internal/proto"
)

// Peer-link authentication headers. With a secret, the follower proves it
// holds it with an HMAC over the cluster, its id and the time; without one,
// the cluster name must match.
const (
	headerNode    = "X-Chatr-Node"
	headerCluster = "X-Chatr-Cluster"
	headerAuth    = "X-Chatr-Auth"
)

// authSkew is how far a peer's clock may be from ours.
const authSkew = 5 * time.Minute

func authToken(secret []byte, cluster, node string, now time.Time) string {
	ts := strconv.FormatInt(now.Unix(), 10)
	return ts + "." + sign(secret, cluster, node, ts)
}

func sign(secret []byte, cluster, node, ts string) string {
	mac := hmac.New(sha256.New, secret)
	fmt.Fprintf(mac, "chatr-peer\x00%s\x00%s\x00%s", cluster, node, ts)
	return hex.EncodeToString(mac.Sum(nil))
}

func setAuth(h http.Header, secret []byte, cluster, node string) {
	h.Set(headerNode, node)
	h.Set(headerCluster, cluster)
	if secret != nil {
		h.Set(headerAuth, authToken(secret, cluster, node, time.Now()))
	}
}

var errAuth = errors.New("peer not authenticated")

// checkAuth verifies a follower's headers and returns its node id.
func checkAuth(h http.Header, secret []byte, cluster string, now time.Time) (string, error) {
	node := h.Get(headerNode)
	if !proto.ValidNodeID(node) {
		return "", fmt.Errorf("%w: bad node id %q", errAuth, node)
	}
	if got := h.Get(headerCluster); got != cluster {
		return "", fmt.Errorf("%w: cluster %q is not ours (%q)", errAuth, got, cluster)
	}
	if secret == nil {
		return node, nil
	}
	ts, mac, ok := strings.Cut(h.Get(headerAuth), ".")
	sec, err := strconv.ParseInt(ts, 10, 64)
	if !ok || err != nil {
		return "", fmt.Errorf("%w: no valid %s header (secret missing?)", errAuth, headerAuth)
	}
	if d := now.Sub(time.Unix(sec, 0)); d > authSkew || d < -authSkew {
		return "", fmt.Errorf("%w: token time is %v away from ours", errAuth, d)
	}
	if !hmac.Equal([]byte(mac), []byte(sign(secret, cluster, node, ts))) {
		return "", fmt.Errorf("%w: wrong secret", errAuth)
	}
	return node, nil
}
