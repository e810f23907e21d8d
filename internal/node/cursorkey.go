package node

import (
	"chatr/internal/config"
	"chatr/internal/secret"
	"chatr/internal/store"
)

// cursorKey is the key of the MAC of this node's cursors. A client resumes
// its cursor on any node of the cluster, so every node must hold the key
// that made it:
//   - in a cluster, it is derived from the cluster secret (sec, given or
//     kept): every node of the cluster has it, nobody without the secret
//     can make a cursor;
//   - in a cluster without a secret (--insecure-no-secret), it is derived
//     from the cluster name: every node still takes every other's cursors,
//     but anyone who knows the name can make one, as anyone can join such a
//     cluster;
//   - a single node uses its own random key, kept in its store, so its
//     cursors survive a restart.
//
// Cursors made under one key are refused under another (a client then
// joins with history): when a node joins a cluster, or the secret changes.
func cursorKey(cfg config.Config, sec []byte, st *store.Store) []byte {
	switch {
	case len(sec) > 0:
		return secret.Derive(sec, secret.Cursor)
	case cfg.Clustered():
		return secret.Derive([]byte(cfg.ClusterName), secret.Cursor)
	}
	return st.Key("cursor")
}
