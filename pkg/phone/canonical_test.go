package phone

import (
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/nyaruka/phonenumbers"
)

// The fast path must answer exactly what the parser answers, for numbers of
// every length in every country calling code.
func TestCanonicalMatchesTheParser(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	codes := slices.Sorted(func(yield func(int) bool) {
		for cc := range phonenumbers.GetSupportedCallingCodes() {
			if !yield(cc) {
				return
			}
		}
	})
	fast, checked := 0, 0
	for _, cc := range codes {
		ccs := strconv.Itoa(cc)
		for total := 7; total <= 15; total++ {
			for range 3 {
				var b strings.Builder
				b.WriteString("+" + ccs)
				for b.Len()-1 < total {
					b.WriteByte(byte('0' + rng.IntN(10)))
				}
				raw := b.String()
				checked++
				if Canonical(raw) != Canonical([]byte(raw)) {
					t.Errorf("Canonical(%q) differs for a string and for bytes", raw)
				}
				if Canonical(raw) {
					fast++
				}
				// As written, with spaces, and with the 00 prefix.
				for _, in := range []string{raw, "+" + ccs + " " + raw[1+len(ccs):], "00" + raw[1:]} {
					want, wantErr := normalize(in, "", false)
					got, gotErr := Normalize(in, "")
					if got != want || (gotErr == nil) != (wantErr == nil) {
						t.Errorf("Normalize(%q) = %q, %v; the parser says %q, %v", in, got, gotErr, want, wantErr)
					}
				}
			}
		}
	}
	// A fast path that never triggers would pass the loop above too.
	if fast < checked/4 {
		t.Errorf("fast path taken for %d of %d numbers, want at least a quarter", fast, checked)
	}
	t.Logf("fast path taken for %d of %d numbers", fast, checked)
}

func FuzzCanonical(f *testing.F) {
	for _, s := range []string{"+420600000001", "+442079460000", "+4402079460000", "+390612345678",
		"+12125550100", "+5491123456789", "+54 9 11 2345 6789", "+8613800138000", "+999999999", "+80012345678", "00420 600 000 001", "+39 06 1234 5678"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		want, wantErr := normalize(raw, "", false)
		got, gotErr := Normalize(raw, "")
		if got != want || (gotErr == nil) != (wantErr == nil) {
			t.Fatalf("Normalize(%q) = %q, %v; the parser says %q, %v", raw, got, gotErr, want, wantErr)
		}
		if Canonical(raw) && (wantErr != nil || want != raw) {
			t.Fatalf("Canonical(%q) is true but the parser says %q, %v", raw, want, wantErr)
		}
	})
}

// BenchmarkNormalize: a number already in E.164 (the fast path) and one
// written with spaces (the parser).
//
//	go test -run '^$' -bench BenchmarkNormalize ./pkg/phone/
func BenchmarkNormalize(b *testing.B) {
	for _, raw := range []string{"+420600000001", "+420 600 000 001"} {
		b.Run(raw, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Normalize(raw, "CZ"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
