package node

import (
	"chatr/internal/config"
	"chatr/internal/keys"
	"chatr/internal/store"
)

// cursorKey is the key of the MAC of this node's cursors. A client resumes
// its cursor on any node of the cluster, so every node must hold the key
// that made it:
//   - with --secret-file, it is derived from the secret: every node of the
//     cluster has it, nobody without the secret can make a cursor;
//   - in a cluster without a secret, it is derived from the cluster name:
//     every node still takes every other's cursors, but anyone who knows the
//     name can make one, as anyone can join such a cluster;
//   - a single node uses its own random key, kept in its store, so its
//     cursors survive a restart.
//
// Cursors made under one key are refused under another (a client then
// joins with history): when a node joins a cluster, or the secret changes.
func cursorKey(cfg config.Config, st *store.Store) []byte {
	switch {
	case len(cfg.Secret) > 0:
		return keys.Derive(cfg.Secret, keys.Cursor)
	case cfg.Clustered():
		return keys.Derive([]byte(cfg.ClusterName), keys.Cursor)
	}
	return st.CursorKey()
}
