package auth

import (
	"path/filepath"
	"strings"
	"testing"
)

const (
	keyCI   = "ci-key-9f8e7d6c5b4a39281706f5e4"
	keyBot  = "bot-key-0a1b2c3d4e5f60718293a4b5"
	keyAnon = "anon:key-with-a-colon-in-it-0123456" // the key of "anon"
)

// TestAPIKeys: each key of the file is found under its name (or key<line>
// without one); anything else, prefixes and near misses included, is not.
func TestAPIKeys(t *testing.T) {
	p := writeFile(t, filepath.Join(t.TempDir(), "keys"), "# programs that post\n\nci:"+keyCI+"\n   "+keyBot+"  \n"+keyAnon+"\nwith.dots-and_under@x:key:holding:colons-0123456789\n")
	k, err := LoadAPIKeys(p)
	if err != nil {
		t.Fatal(err)
	}
	if k.Len() != 4 {
		t.Fatalf("%d keys, want 4", k.Len())
	}
	found := []struct{ key, name string }{
		{keyCI, "ci"},
		{keyBot, "key4"},
		{"key-with-a-colon-in-it-0123456", "anon"},
		{"key:holding:colons-0123456789", "with.dots-and_under@x"},
	}
	for _, f := range found {
		if name, ok := k.Lookup(f.key); !ok || name != f.name {
			t.Errorf("Lookup(%q) = %q, %v; want %q", f.key, name, ok, f.name)
		}
	}
	for _, s := range []string{"", keyCI[:len(keyCI)-1], keyCI + "0", "ci:" + keyCI, " " + keyCI, strings.ToUpper(keyCI), "ci", "key4", "# programs that post"} {
		if name, ok := k.Lookup(s); ok {
			t.Errorf("Lookup(%q) = %q: not a key", s, name)
		}
	}
	var none *APIKeys
	if _, ok := none.Lookup(keyCI); ok || none.Len() != 0 {
		t.Error("a nil APIKeys holds a key")
	}
}

// TestAPIKeysRefused: a file chatr cannot use is refused with its line and
// what to fix, never showing a key.
func TestAPIKeysRefused(t *testing.T) {
	cases := []struct {
		name, file, mention string
	}{
		{"short key", "ci:" + keyCI + "\nbot:short-key-12345\n", "line 2 (bot): a key of 15 characters: want 24 to 256"},
		{"short unnamed key", "short-key-12345678\n", "line 1 (key1): a key of 18 characters"},
		{"long key", strings.Repeat("k", 257), "a key of 257 characters"},
		{"space in the key", "ci:" + keyCI[:10] + " " + keyCI[10:], "line 1 (ci): a key with white space"},
		{"control character", "ci:" + keyCI + "\x01", "not printable ASCII"},
		{"same key twice", "ci:" + keyCI + "\n#\nbot:" + keyCI + "\n", "line 3 (bot): the same key as line 1"},
		{"same name twice", "ci:" + keyCI + "\nci:" + keyBot + "\n", "line 2: the name ci again (line 1)"},
		{"unnamed key named like a line", "key2:" + keyCI + "\n" + keyBot + "\n", "the name key2 again"},
		{"empty name", ":" + keyCI, "line 1: a key name of 0 characters"},
		{"bad name", "c i:" + keyCI, `the key name "c i"`},
		{"no keys", "# nothing yet\n\n", "no API key in it"},
		{"empty file", "", "no API key in it"},
		{"line too long", strings.Repeat("k", MaxAPIKeyLine+1), "a line of more than 1024 bytes"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := writeFile(t, filepath.Join(t.TempDir(), "keys"), tc.file)
			_, err := LoadAPIKeys(p)
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tc.mention) || !strings.Contains(err.Error(), p) {
				t.Errorf("error %q does not mention %q and the file", err, tc.mention)
			}
			for _, key := range []string{keyCI, keyCI[:10], keyCI[10:], keyBot, "short-key-12345", strings.Repeat("k", 30)} {
				if strings.Contains(err.Error(), key) {
					t.Errorf("error %q shows a key", err)
				}
			}
		})
	}
	if _, err := LoadAPIKeys(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("a missing file was taken")
	}
}
