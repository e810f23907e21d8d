// Package names tells people's names apart: it cleans a display name to
// the one form chatr keeps (the PRECIS Nickname profile of RFC 8266, then
// chatr's own limits), and says when two names look alike (the confusable
// skeletons of Unicode TR39), so that no one can take a name that passes
// for someone else's.
//
// It depends on nothing else in chatr: callers wrap its errors in their own
// protocol errors.
package names

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/mtibben/confusables"
	"golang.org/x/text/cases"
	"golang.org/x/text/language"
	"golang.org/x/text/secure/precis"
)

// MaxLen is the most characters (code points) of a cleaned name.
const MaxLen = 32

// maxInput bounds the bytes Clean looks at, before any mapping: 32
// characters of 4 bytes each, with room for the spaces and compatibility
// forms the profile folds away. A longer name is refused unread, so a
// 32 KiB hello costs no normalization.
const maxInput = 16 * MaxLen

// Why Clean refused a name; the errors it returns wrap one of these, with
// the detail a person needs to fix the name.
var (
	ErrNotUTF8   = errors.New("name is not valid UTF-8")
	ErrEmpty     = errors.New("name is empty")
	ErrTooLong   = errors.New("name is too long")
	ErrCharacter = errors.New("name may hold letters, digits, space, _ - . only")
	ErrScripts   = errors.New("name mixes scripts within a word")
)

// Clean returns the form of name that chatr keeps and shows, or why name
// cannot be one:
//
//  1. It must be valid UTF-8. White space at either end (tab and newline
//     too, which chatr always trimmed) is dropped.
//  2. The PRECIS Nickname profile (RFC 8266) is enforced: every Unicode
//     space becomes SPACE, spaces at either end are dropped and runs of
//     them become one, and the name is normalized to NFKC, so fullwidth
//     "ａｌｉｃｅ" becomes "alice" and the ligature "ﬁ" becomes "fi". The
//     profile's class refuses control characters, unassigned code points,
//     default-ignorable ones (the Hangul fillers U+3164, U+FFA0, zero-width
//     space, soft hyphen, word joiner, variation selectors, bidi controls
//     and marks), the conjoining jamo U+1100-U+11FF (fillers U+115F, U+1160
//     among them), and zero-width (non-)joiners outside the context that
//     needs them. Case is kept.
//  3. What is left is 1 to MaxLen characters of letters (of any script),
//     decimal digits, space, '_', '-' and '.'. The profile would allow
//     symbols and punctuation; chatr never did, so that "bob: hi" or a
//     zero-width joiner after a virama (which the profile allows) cannot be
//     a name.
//  4. Each word (letters and digits between spaces, '_', '-', '.') is of
//     one script, or Latin with Han and Japanese kana, Bopomofo or Hangul,
//     as the Highly Restrictive level of TR39 section 5.2 allows: "аlice"
//     with a Cyrillic а is refused whoever is present, "Иван Ivan" is not.
func Clean(name string) (string, error) {
	if !utf8.ValidString(name) {
		return "", ErrNotUTF8
	}
	if len(name) > maxInput {
		return "", fmt.Errorf("%w: %d bytes, at most %d characters allowed", ErrTooLong, len(name), MaxLen)
	}
	name = strings.TrimSpace(name)
	clean, err := precis.Nickname.String(name)
	if err != nil {
		return "", refusal(name)
	}
	if n := utf8.RuneCountInString(clean); n > MaxLen {
		return "", fmt.Errorf("%w: %d characters, at most %d allowed", ErrTooLong, n, MaxLen)
	}
	for _, r := range clean {
		if !allowed(r) {
			return "", fmt.Errorf("%w, not %U %q", ErrCharacter, r, r)
		}
	}
	if word, ok := oneScriptPerWord(clean); !ok {
		return "", fmt.Errorf("%w: %q", ErrScripts, word)
	}
	return clean, nil
}

// refusal says why the profile refused name, which it does not: empty once
// spaces are gone, or the first character its class or contextual rules
// do not allow.
func refusal(name string) error {
	class := precis.Nickname.Allowed()
	for _, r := range name {
		if !class.Contains(r) || unicode.Is(unicode.Join_Control, r) {
			return fmt.Errorf("%w, not %U %q", ErrCharacter, r, r)
		}
	}
	for _, r := range name {
		if !unicode.Is(unicode.Zs, r) {
			// Allowed one by one, refused together (a context rule).
			return fmt.Errorf("%w: the PRECIS Nickname profile refuses %q", ErrCharacter, name)
		}
	}
	return ErrEmpty
}

// allowed is chatr's own alphabet, applied after the profile.
func allowed(r rune) bool {
	return unicode.IsLetter(r) || unicode.IsDigit(r) || r == ' ' || r == '_' || r == '-' || r == '.'
}

// separator ends a word for the script rule.
func separator(r rune) bool { return r == ' ' || r == '_' || r == '-' || r == '.' }

// The script sets of TR39 5.2 "Highly Restrictive" that may share a word.
var scriptMixes = [][]*unicode.RangeTable{
	{unicode.Latin, unicode.Han, unicode.Hiragana, unicode.Katakana},
	{unicode.Latin, unicode.Han, unicode.Bopomofo},
	{unicode.Latin, unicode.Han, unicode.Hangul},
}

// oneScriptPerWord reports whether every word of name keeps to one script
// (Common and Inherited characters, such as ASCII digits, go with any), or
// to one of scriptMixes; if not, it returns the first word that does not.
func oneScriptPerWord(name string) (string, bool) {
	start := 0
	var seen []*unicode.RangeTable
	var last *unicode.RangeTable // a word's runes are nearly always of one script: look there first
	for i, r := range name + " " {
		if separator(r) {
			if !mixAllowed(seen) {
				return name[start:i], false
			}
			start, seen = i+utf8.RuneLen(r), seen[:0]
			continue
		}
		if r < utf8.RuneSelf && !('A' <= r && r <= 'Z' || 'a' <= r && r <= 'z') {
			continue // ASCII digits: Common
		}
		s := scriptOf(r, last)
		if s == nil {
			continue
		}
		last = s
		if !slices.Contains(seen, s) {
			seen = append(seen, s)
		}
	}
	return "", true
}

// scriptOf is the script table of r, nil for Common, Inherited and Unknown.
func scriptOf(r rune, guess *unicode.RangeTable) *unicode.RangeTable {
	switch {
	case r < utf8.RuneSelf:
		return unicode.Latin
	case guess != nil && unicode.Is(guess, r):
		return guess
	case unicode.Is(unicode.Common, r), unicode.Is(unicode.Inherited, r):
		return nil
	}
	for _, t := range unicode.Scripts {
		if unicode.Is(t, r) {
			return t
		}
	}
	return nil
}

func mixAllowed(seen []*unicode.RangeTable) bool {
	if len(seen) <= 1 {
		return true
	}
	for _, mix := range scriptMixes {
		if !slices.ContainsFunc(seen, func(s *unicode.RangeTable) bool { return !slices.Contains(mix, s) }) {
			return true
		}
	}
	return false
}

// lower is the case mapping of the Nickname profile's comparison (RFC 8266
// section 2.3: Unicode toLowerCase), for text the profile cannot take.
var lower = cases.Lower(language.Und)

// fold maps s as the Nickname profile does to compare two nicknames: width
// folded, lower-cased, NFKC.
func fold(s string) string {
	if k, err := precis.Nickname.CompareKey(s); err == nil {
		return k
	}
	return lower.String(s) // not a cleaned name: a peer's from an earlier release
}

// Skeleton is the TR39 skeleton of a cleaned name after the Nickname
// profile's case mapping: names that differ only in case or by letters that
// look alike share it ("Alice", "ALICE", "аlice" with a Cyrillic а all have
// "alice"; "m" and "rn" share "rn"). TR39 maps the digit 1 to l, not to i,
// so "a1ice" has the skeleton of "alice" and "al1ce" does not.
func Skeleton(name string) string {
	return confusables.Skeleton(fold(name))
}

// Keys are what name looks like: two names look alike when they share a
// key. The first is Skeleton. Case mapping first loses what a capital
// looks like, so the second is the skeleton of the name as shown,
// case-mapped after: "aIice" with a capital I looks like "alice" (TR39 maps
// I to l) though its Skeleton is "aiice". Keys returns one key when both
// are the same, as for most names.
func Keys(name string) []string {
	k1 := Skeleton(name)
	k2 := confusables.Skeleton(fold(confusables.Skeleton(name)))
	if k1 == k2 {
		return []string{k1}
	}
	return []string{k1, k2}
}

// Same reports whether names a and b look alike (share a key), whether or
// not they are the same name: with auth on, two people may not share a
// name, which only the caller, knowing who is who, can tell.
func Same(a, b string) bool {
	kb := Keys(b)
	for _, k := range Keys(a) {
		if slices.Contains(kb, k) {
			return true
		}
	}
	return false
}

// Collides returns a name of present that looks like name but is not name
// itself. When name is present too, nothing collides: a person with a
// second tab adds no lookalike to those already there.
func Collides(name string, present []string) (string, bool) {
	if slices.Contains(present, name) {
		return "", false
	}
	for _, p := range present {
		if Same(name, p) {
			return p, true
		}
	}
	return "", false
}

// reserved are names no one may take, nor anything that looks like them:
// a person could pass for the service or its staff.
var reserved = []string{
	"admin", "administrator", "chatr", "moderator", "mod", "operator",
	"root", "security", "server", "staff", "support", "system",
}

// reservedKeys holds the keys of every reserved name.
var reservedKeys = func() map[string]bool {
	m := map[string]bool{}
	for _, n := range reserved {
		for _, k := range Keys(n) {
			m[k] = true
		}
	}
	return m
}()

// Reserved lists the reserved names.
func Reserved() []string { return slices.Clone(reserved) }

// IsReserved reports whether name looks like a reserved name ("Admin",
// "аdmin" with a Cyrillic а, "adrnin").
func IsReserved(name string) bool {
	for _, k := range Keys(name) {
		if reservedKeys[k] {
			return true
		}
	}
	return false
}
