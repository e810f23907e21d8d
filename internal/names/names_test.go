package names

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestClean(t *testing.T) {
	for _, tc := range []struct {
		desc, in, want string
		err            error
	}{
		{"plain", "alice", "alice", nil},
		{"spaces at the ends go", "  alice  ", "alice", nil},
		{"white space at the ends goes", "\tAda Lovelace\n", "Ada Lovelace", nil},
		{"case is kept", "Alice", "Alice", nil},
		{"fullwidth maps to ASCII", "ａｌｉｃｅ", "alice", nil},
		{"fullwidth low line and space", "ａ＿ｂ\u3000ｃ", "a_b c", nil},
		{"runs of spaces become one", "St  Peter", "St Peter", nil},
		{"no-break space is a space", "St\u00a0Peter", "St Peter", nil},
		{"ligature splits", "ﬁona", "fiona", nil},
		{"roman numeral", "Louis Ⅸ", "Louis IX", nil},
		{"composes", "Rene\u0301", "René", nil},
		{"digits", "a1ice", "a1ice", nil},
		{"digits elsewhere", "al1ce", "al1ce", nil},
		{"Arabic, right to left", "محمد علي", "محمد علي", nil},
		{"Hebrew, right to left", "שלום", "שלום", nil},
		{"Japanese", "山田 さくら", "山田 さくら", nil},
		{"Latin and Han in a word", "東京Tokyo", "東京Tokyo", nil},
		{"Cyrillic", "Иван", "Иван", nil},
		{"Greek", "Ελένη", "Ελένη", nil},
		{"a word per script", "Иван Ivan", "Иван Ivan", nil},
		{"32 characters", strings.Repeat("a", 32), strings.Repeat("a", 32), nil},
		{"32 fullwidth characters", strings.Repeat("ａ", 32), strings.Repeat("a", 32), nil},
		{"32 Han characters", strings.Repeat("山", 32), strings.Repeat("山", 32), nil},

		{"empty", "", "", ErrEmpty},
		{"only spaces", "   ", "", ErrEmpty},
		{"only ideographic spaces", "\u3000\u3000", "", ErrEmpty},
		{"33 characters", strings.Repeat("a", 33), "", ErrTooLong},
		{"33 after the mapping", "ﬁ" + strings.Repeat("a", 31), "", ErrTooLong},
		{"huge", strings.Repeat("a ", 300), "", ErrTooLong},
		{"padded past what is read", "a" + strings.Repeat(" ", 1000) + "b", "", ErrTooLong},
		{"invalid UTF-8", "al\xffce", "", ErrNotUTF8},
		{"Cyrillic а in a Latin word", "\u0430lice", "", ErrScripts},
		{"Greek ο in a Latin word", "b\u03bfb", "", ErrScripts},
		{"Arabic and Latin in a word", "محمدali", "", ErrScripts},
		{"Hangul filler U+3164", "alice\u3164", "", ErrCharacter},
		{"only a Hangul filler", "\u3164", "", ErrCharacter},
		{"halfwidth Hangul filler U+FFA0", "alice\uffa0", "", ErrCharacter},
		{"choseong filler U+115F", "alice\u115f", "", ErrCharacter},
		{"jungseong filler U+1160", "alice\u1160", "", ErrCharacter},
		{"zero-width joiner", "alice\u200d", "", ErrCharacter},
		{"zero-width non-joiner", "ali\u200cce", "", ErrCharacter},
		{"zero-width space", "ali\u200bce", "", ErrCharacter},
		{"word joiner", "ali\u2060ce", "", ErrCharacter},
		{"soft hyphen", "ali\u00adce", "", ErrCharacter},
		{"variation selector", "alice\ufe0f", "", ErrCharacter},
		{"combining grapheme joiner", "alice\u034f", "", ErrCharacter},
		{"right-to-left override", "invoice_\u202efdp", "", ErrCharacter},
		{"right-to-left isolate", "a\u2067b", "", ErrCharacter},
		{"left-to-right mark", "ali\u200ece", "", ErrCharacter},
		{"right-to-left mark", "ali\u200fce", "", ErrCharacter},
		{"Arabic letter mark", "ali\u061cce", "", ErrCharacter},
		{"tag character", "alice\U000E0041", "", ErrCharacter},
		{"tab", "a\tb", "", ErrCharacter},
		{"newline", "a\nb", "", ErrCharacter},
		{"punctuation", "bob: hi", "", ErrCharacter},
		{"symbol", "alice☺", "", ErrCharacter},
		// The profile allows a ZWJ after a virama; the virama (a mark) and
		// the joiner are not chatr letters.
		{"joiner after a virama", "क\u094d\u200dष", "", ErrCharacter},
		{"combining mark", "ali\u0332ce", "", ErrCharacter},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			got, err := Clean(tc.in)
			if !errors.Is(err, tc.err) || got != tc.want {
				t.Fatalf("Clean(%+q) = %+q, %v; want %+q, %v", tc.in, got, err, tc.want, tc.err)
			}
		})
	}
}

func TestCleanSaysWhichCharacter(t *testing.T) {
	_, err := Clean("alice\u3164")
	if err == nil || !strings.Contains(err.Error(), "U+3164") {
		t.Fatalf("Clean(alice+U+3164): %v; want it to name U+3164, which no one can see", err)
	}
}

func TestSkeleton(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"alice", "alice"},
		{"Alice", "alice"},
		{"ALICE", "alice"},
		{"\u0430lice", "alice"},       // Cyrillic а
		{"\u0430\u0441\u0435", "ace"}, // all Cyrillic
		{"a1ice", "alice"},            // TR39: 1 looks like l
		{"al1ce", "allce"},            // and not like i
		{"m", "rn"},
	} {
		if got := Skeleton(tc.in); got != tc.want {
			t.Errorf("Skeleton(%+q) = %+q, want %+q", tc.in, got, tc.want)
		}
	}
}

func TestSame(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		same bool
	}{
		{"alice", "alice", true},
		{"alice", "Alice", true},
		{"alice", "ALICE", true},
		{"alice", "\u0430lice", true},
		{"ace", "\u0430\u0441\u0435", true},
		{"alice", "a1ice", true},
		{"alice", "aIice", true}, // capital I for l, as shown
		{"Ian", "lan", true},
		{"Oscar", "0scar", true},
		{"alice", "al1ce", false},
		{"alice", "alicé", false},
		{"alice", "bob", false},
		{"alice", "alice bob", false},
		{"محمد", "محمود", false},
		{"山田", "山本", false},
	} {
		if got := Same(tc.a, tc.b); got != tc.same {
			t.Errorf("Same(%+q, %+q) = %v, want %v (keys %+q, %+q)", tc.a, tc.b, got, tc.same, Keys(tc.a), Keys(tc.b))
		}
		if got := Same(tc.b, tc.a); got != tc.same {
			t.Errorf("Same(%+q, %+q) = %v, want %v", tc.b, tc.a, got, tc.same)
		}
	}
}

// The issue's lookalikes of alice, once cleaned, all collide with her; the
// ones Clean refuses never get that far.
func TestIssueLookalikes(t *testing.T) {
	if clean, err := Clean("ａｌｉｃｅ"); clean != "alice" {
		t.Fatalf("Clean(fullwidth alice) = %+q, %v; want alice, who is the same person", clean, err)
	}
	for _, in := range []string{"ALICE", "Alice", "aIice", "a1ice"} {
		clean, err := Clean(in)
		if err != nil {
			t.Fatalf("Clean(%+q): %v", in, err)
		}
		if got, ok := Collides(clean, []string{"bob", "alice"}); !ok || got != "alice" {
			t.Errorf("Collides(%+q) = %q, %v; want alice", clean, got, ok)
		}
	}
	for _, in := range []string{"\u0430lice", "alice\u3164", "alice\u200d", "alice\u115f", "alice\u1160"} {
		if clean, err := Clean(in); err == nil {
			t.Errorf("Clean(%+q) = %+q, want it refused", in, clean)
		}
	}
}

func TestCollides(t *testing.T) {
	for _, tc := range []struct {
		name    string
		present []string
		want    string
		ok      bool
	}{
		{"Alice", []string{"bob", "alice"}, "alice", true},
		{"alice", nil, "", false},
		{"carol", []string{"bob", "alice"}, "", false},
		// The same name is the same person: a second tab.
		{"alice", []string{"alice"}, "", false},
		// Lookalikes already present together (met after a split): one
		// more session of one of them adds none.
		{"alice", []string{"Alice", "alice"}, "", false},
	} {
		got, ok := Collides(tc.name, tc.present)
		if got != tc.want || ok != tc.ok {
			t.Errorf("Collides(%q, %q) = %q, %v; want %q, %v", tc.name, tc.present, got, ok, tc.want, tc.ok)
		}
	}
}

func TestIsReserved(t *testing.T) {
	for _, tc := range []struct {
		name string
		want bool
	}{
		{"admin", true},
		{"Admin", true},
		{"ADMIN", true},
		{"adrnin", true},
		{"\u0430dmin", true},
		{"Systern", true},
		{"r00t", true},
		{"Support", true},
		{"chatr", true},
		{"adm1n", false}, // 1 looks like l, not i
		{"alice", false},
		{"administrators", false},
		{"admin bob", false},
	} {
		if got := IsReserved(tc.name); got != tc.want {
			t.Errorf("IsReserved(%+q) = %v, want %v", tc.name, got, tc.want)
		}
	}
	for _, n := range Reserved() {
		if !IsReserved(n) {
			t.Errorf("IsReserved(%q) = false for a name of Reserved()", n)
		}
	}
}

// FuzzClean checks what every caller relies on: a cleaned name is clean
// (Clean keeps it as it is), short and free of what Clean refuses.
func FuzzClean(f *testing.F) {
	for _, s := range []string{"alice", " ａｌｉｃｅ ", "St  Peter", "ﬁ", "Rene\u0301", "\u0430lice", "alice\u3164", "Иван Ivan", "محمد", "ǅ", "ß"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		clean, err := Clean(in)
		if err != nil {
			return
		}
		again, err := Clean(clean)
		if err != nil || again != clean {
			t.Fatalf("Clean(%+q) = %+q, but Clean of that = %+q, %v", in, clean, again, err)
		}
		if n := utf8.RuneCountInString(clean); n < 1 || n > MaxLen {
			t.Fatalf("Clean(%+q) = %+q: %d characters", in, clean, n)
		}
		if !slices.Contains(Keys(clean), Skeleton(clean)) {
			t.Fatalf("Keys(%+q) lacks its Skeleton", clean)
		}
	})
}

// Clean and Keys run on every hello and every join.
func BenchmarkCleanKeys(b *testing.B) {
	for _, name := range []string{"alice", "Alice Smith", "ａｌｉｃｅ", "山田 さくら", "Иван Петров", "محمد علي"} {
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				clean, err := Clean(name)
				if err != nil {
					b.Fatal(err)
				}
				Keys(clean)
			}
		})
	}
}
