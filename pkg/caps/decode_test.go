package caps

import (
	"slices"
	"testing"
)

// FuzzDecode: a value read from the bucket either decodes into entries that
// encode back to the same value, or is an error; it never panics.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{"", "1 a\n", "1 a\n7 b-c_d\n", "0 a\n", "8 a\n", "1\n", "x a\n", "1  a\n", "1 a"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		entries, err := decode(b)
		if err != nil {
			return
		}
		for _, e := range entries {
			if e.day < 1 || e.day > 7 || e.id == "" {
				t.Fatalf("decode(%q) gave a bad entry %+v", b, e)
			}
		}
		again, err := decode(encode(entries))
		if err != nil || !slices.Equal(again, entries) {
			t.Fatalf("decode(encode(decode(%q))) = %+v, %v; want %+v", b, again, err, entries)
		}
	})
}
