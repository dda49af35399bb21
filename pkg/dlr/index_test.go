package dlr

import (
	"strings"
	"testing"
)

func TestCanonicalID(t *testing.T) {
	for _, tc := range []struct {
		name string
		id   string
		form IDForm
		want string
	}{
		{"text keeps leading zeros", "000123", IDText, "000123"},
		{"text lower-cases and trims", " AB12\x00", IDText, "ab12"},
		{"decimal drops leading zeros", "000123", IDDecimal, "123"},
		{"decimal zero is 0", "0000", IDDecimal, "0"},
		{"hex becomes its decimal value", "7B", IDHex, "123"},
		{"hex with leading zeros becomes the same value", "  007b", IDHex, "123"},
		{"a 64-bit hex id is exact", "FFFFFFFFFFFFFFFF", IDHex, "18446744073709551615"},
		{"a longer hex id is exact too", "1ffffffffffffffffffff", IDHex, "2417851639229258349412351"},
		{"a decimal link's non-digit id stays text", "12a", IDDecimal, "12a"},
		{"a hex link's non-hex id stays text", "12g-x", IDHex, "12g-x"},
		{"an empty id stays empty", " ", IDHex, ""},
		{"a long decimal id is exact", "0" + strings.Repeat("1", 80), IDDecimal, strings.Repeat("1", 80)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := CanonicalID(tc.id, tc.form); got != tc.want {
				t.Fatalf("CanonicalID(%q, %s) = %q, want %q", tc.id, tc.form, got, tc.want)
			}
		})
	}
}

func TestHexSubmitMatchesDecimalReceipt(t *testing.T) {
	// submit_sm_resp "00A3F1", receipt "041969": one message.
	if a, b := CanonicalID("00A3F1", IDHex), CanonicalID("041969", IDDecimal); a != b {
		t.Fatalf("hex 00A3F1 -> %q, decimal 041969 -> %q; want equal", a, b)
	}
}

func TestParseIDForm(t *testing.T) {
	for in, want := range map[string]IDForm{"": IDText, "text": IDText, "decimal": IDDecimal, "hex": IDHex} {
		if got, err := ParseIDForm(in); err != nil || got != want {
			t.Errorf("ParseIDForm(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := ParseIDForm("octal"); err == nil {
		t.Error("ParseIDForm(octal) = nil error, want one")
	}
}

// FuzzCanonicalID checks the rule's promise that makes it unambiguous: in a
// numeric form the result is either a decimal number without leading zeros
// or holds a character that is no decimal digit, so a number and a text
// fallback never meet; the text form is NormalizeID.
func FuzzCanonicalID(f *testing.F) {
	for _, s := range []string{"000123", "7B", "0", "", "12a", " 00ff\x00", "xyz", strings.Repeat("9", 70)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		if got := CanonicalID(id, IDText); got != NormalizeID(id) {
			t.Fatalf("CanonicalID(%q, text) = %q, want NormalizeID %q", id, got, NormalizeID(id))
		}
		for _, form := range []IDForm{IDDecimal, IDHex} {
			got := CanonicalID(id, form)
			if got == "" || strings.Trim(got, "0123456789") != "" {
				if got != NormalizeID(id) {
					t.Fatalf("CanonicalID(%q, %s) = %q: a text fallback must be NormalizeID", id, form, got)
				}
				continue
			}
			if len(got) > 1 && got[0] == '0' {
				t.Fatalf("CanonicalID(%q, %s) = %q: a number has no leading zeros", id, form, got)
			}
		}
	})
}
