package auth

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"os"
	"strings"
)

// Limits of an API key file.
const (
	MinAPIKey       = 24  // characters of a key: 24 base64 characters are 144 random bits
	MaxAPIKey       = 256 // characters of a key
	MaxAPIKeyName   = 64  // characters of a key's name
	MaxAPIKeyLine   = 1024
	maxAPIKeysCount = 10000
)

// APIKeys are the keys of programs that use the HTTP API
// (`Authorization: Bearer <key>`), each with a name for the logs. They are
// kept only as SHA-256 digests, so neither a log nor an error can show one.
// An APIKeys is read-only, safe for concurrent use; nil holds no key.
type APIKeys struct {
	keys []apiKey
}

type apiKey struct {
	name   string
	digest [sha256.Size]byte
}

// LoadAPIKeys reads the API keys of path: one a line, `key` or
// `name:key` (split at the first colon, so a key with a colon needs a
// name), blank lines and lines starting with # ignored. A key has
// MinAPIKey to MaxAPIKey characters of printable ASCII, no white space;
// a name 1 to MaxAPIKeyName letters, digits and `_ - . @`. A key without
// a name is named after its line: "key3". Keys and names are each unique.
func LoadAPIKeys(path string) (*APIKeys, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	k, err := parseAPIKeys(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

func parseAPIKeys(data []byte) (*APIKeys, error) {
	k := &APIKeys{}
	names := map[string]int{}              // name -> line
	digests := map[[sha256.Size]byte]int{} // digest -> line
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, MaxAPIKeyLine)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, key, named := strings.Cut(line, ":")
		if !named {
			name, key = fmt.Sprintf("key%d", n), line
		}
		if err := checkAPIKeyName(name); err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		if err := checkAPIKey(key); err != nil {
			return nil, fmt.Errorf("line %d (%s): %w", n, name, err)
		}
		d := sha256.Sum256([]byte(key))
		if prev, ok := digests[d]; ok {
			return nil, fmt.Errorf("line %d (%s): the same key as line %d: give each program its own", n, name, prev)
		}
		if prev, ok := names[name]; ok {
			return nil, fmt.Errorf("line %d: the name %s again (line %d): names tell keys apart in the logs", n, name, prev)
		}
		if len(k.keys) == maxAPIKeysCount {
			return nil, fmt.Errorf("more than %d keys", maxAPIKeysCount)
		}
		digests[d], names[name] = n, n
		k.keys = append(k.keys, apiKey{name: name, digest: d})
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("a line of more than %d bytes", MaxAPIKeyLine)
		}
		return nil, err
	}
	if len(k.keys) == 0 {
		return nil, errors.New("no API key in it (one a line, `key` or `name:key`; make one with `head -c 24 /dev/urandom | base64`)")
	}
	return k, nil
}

func checkAPIKeyName(name string) error {
	if name == "" || len(name) > MaxAPIKeyName {
		return fmt.Errorf("a key name of %d characters: want 1 to %d", len(name), MaxAPIKeyName)
	}
	for _, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("_-.@", r)
		if !ok {
			return fmt.Errorf("the key name %q: use letters, digits and _ - . @", name)
		}
	}
	return nil
}

// checkAPIKey says what is wrong with a key without showing it.
func checkAPIKey(key string) error {
	if len(key) < MinAPIKey || len(key) > MaxAPIKey {
		return fmt.Errorf("a key of %d characters: want %d to %d (make one with `head -c 24 /dev/urandom | base64`)", len(key), MinAPIKey, MaxAPIKey)
	}
	for i := 0; i < len(key); i++ {
		if key[i] < '!' || key[i] > '~' {
			return errors.New("a key with white space or a character that is not printable ASCII in it")
		}
	}
	return nil
}

// Len is the number of keys.
func (k *APIKeys) Len() int {
	if k == nil {
		return 0
	}
	return len(k.keys)
}

// Lookup returns the name of the key presented, if it is one of k. It
// compares the SHA-256 digest of presented with every key's, each in
// constant time, so the time it takes tells nothing of the keys (not even
// their length).
func (k *APIKeys) Lookup(presented string) (name string, ok bool) {
	if k == nil || presented == "" {
		return "", false
	}
	d := sha256.Sum256([]byte(presented))
	found := -1
	for i := range k.keys {
		eq := subtle.ConstantTimeCompare(d[:], k.keys[i].digest[:])
		found = subtle.ConstantTimeSelect(eq, i, found)
	}
	if found < 0 {
		return "", false
	}
	return k.keys[found].name, true
}
