// Package keys derives the keys a cluster needs from its one shared secret
// (--secret-file), so that every node of the cluster derives the same key
// for each purpose and no two purposes share one.
package keys

import (
	"crypto/hkdf"
	"crypto/sha256"
)

// Size is the length of a derived key: 32 bytes, SHA-256's output, as RFC
// 2104 advises for an HMAC-SHA256 key.
const Size = 32

// Purposes, one per key. A purpose string is part of the key: changing one
// changes the key on the nodes that run the new release, which then refuse
// what the others made (cursors, say), so a new scheme gets a new string.
const (
	// Cursor keys the MAC of resume cursors (proto.EncodeCursor).
	Cursor = "chatr cursor v1"
)

// Derive returns the key for purpose from secret, with HKDF-SHA256 (RFC
// 5869): no salt, since the secret is already a uniformly random key (16,
// 24 or 32 bytes), and purpose as the info. The same secret and purpose
// give the same key on every node and in every release.
func Derive(secret []byte, purpose string) []byte {
	if len(secret) == 0 {
		// A key derived from nothing would be known to everyone.
		panic("keys: Derive with an empty secret")
	}
	k, err := hkdf.Key(sha256.New, secret, nil, purpose, Size)
	if err != nil {
		panic("keys: " + err.Error()) // only for a length over 255*32
	}
	return k
}
