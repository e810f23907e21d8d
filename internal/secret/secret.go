// Package secret is the cluster secret: how it is written down (a printable
// key, as `chatr secret` prints it), read (--secret, --secret-file), made
// when a cluster node is given none, and how the keys of each use (gossip
// encryption, peer-link proofs, cursor MACs) are derived from it, so that
// no key is ever used for two things.
package secret

import (
	"bytes"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
)

// Size is the length of a secret made by New, in bytes.
const Size = 32

// New makes a fresh random secret.
func New() []byte {
	b := make([]byte, Size)
	if _, err := rand.Read(b); err != nil {
		panic("secret: the system's random source failed: " + err.Error())
	}
	return b
}

// Format writes a secret as a printable key: 43 characters of unpadded
// URL-safe base64 for 32 bytes, safe on a command line and in a file.
func Format(s []byte) string { return base64.RawURLEncoding.EncodeToString(s) }

// Parse reads a printable key (Format's) of 16 to 64 bytes.
func Parse(key string) ([]byte, error) {
	s, err := base64.RawURLEncoding.Strict().DecodeString(key)
	if err != nil {
		return nil, errors.New("not a chatr key (want what `chatr secret` prints: URL-safe base64 without padding)")
	}
	if len(s) < 16 || len(s) > 64 {
		return nil, fmt.Errorf("key is %d bytes; want 16 to 64 (`chatr secret` makes one)", len(s))
	}
	return s, nil
}

// ParseFile reads the contents of a --secret-file: a printable key (with
// or without a trailing newline) or, as earlier releases took, exactly 16,
// 24 or 32 raw bytes.
func ParseFile(data []byte) ([]byte, error) {
	switch len(data) {
	case 16, 24, 32:
		return bytes.Clone(data), nil
	}
	s, err := Parse(string(bytes.TrimSpace(data)))
	if err != nil {
		return nil, fmt.Errorf("%w, nor exactly 16, 24 or 32 raw bytes (it holds %d)", err, len(data))
	}
	return s, nil
}

// Derive returns the 32-byte key for one purpose (e.g. "chatr gossip v1")
// from the cluster secret, with HKDF-SHA256: keys of different purposes are
// independent, so one leaking or being misused does not give another.
func Derive(secret []byte, purpose string) []byte {
	if len(secret) == 0 {
		panic("secret: Derive with an empty secret: a key derived from nothing is known to everyone")
	}
	k, err := hkdf.Key(sha256.New, secret, nil, purpose, 32)
	if err != nil {
		panic("secret: derive " + purpose + ": " + err.Error()) // only for lengths HKDF cannot give
	}
	return k
}

// Purposes of the derived keys; each is used for that alone.
const (
	Gossip   = "chatr gossip v1"    // memberlist's AES-256 key
	PeerLink = "chatr peer link v1" // HMAC of the peer-link proofs
	Cursor   = "chatr cursor v1"    // HMAC of client cursors
)
