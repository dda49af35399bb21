package phone

import (
	"errors"
	"strings"
	"testing"
)

var normalizeCases = []struct {
	name   string
	raw    string
	region string
	want   string // "" when an error wrapping ErrInvalid is expected
	errHas string // part of the error message
}{
	{name: "an E.164 number is returned unchanged", raw: "+420600000001", want: "+420600000001"},
	{name: "spaces are dropped", raw: "+420 600 000 001", want: "+420600000001"},
	{name: "dashes, dots and parentheses are dropped", raw: "+1 (202) 555-01.23", want: "+12025550123"},
	{name: "a tab and surrounding spaces are dropped", raw: " \t+420 600 000 001 ", want: "+420600000001"},
	{name: "a leading 00 is the international prefix", raw: "00420 600 000 001", want: "+420600000001"},
	{name: "a leading 00 needs no default region", raw: "0044 7700 900123", region: "CZ", want: "+447700900123"},
	{name: "a national number is parsed in the default region", raw: "600 000 001", region: "CZ", want: "+420600000001"},
	{name: "the default region is case-insensitive", raw: "600000001", region: "cz", want: "+420600000001"},
	{name: "a national prefix is stripped", raw: "07700 900123", region: "GB", want: "+447700900123"},
	{name: "a bracketed national prefix after the country code is stripped", raw: "+44 (0) 20 7946 0018", want: "+442079460018"},
	{name: "a US number with its area code is parsed in US", raw: "(202) 555-0123", region: "US", want: "+12025550123"},
	{name: "the US international prefix 011 is understood in US", raw: "011 420 600 000 001", region: "US", want: "+420600000001"},
	{name: "a fictional 555-01xx number passes because only possibility is checked", raw: "+1 555 0123", want: "+15550123"},
	{name: "an Italian leading zero is kept", raw: "+39 06 1234 5678", want: "+390612345678"},
	{name: "a plus inside a bracket at the start is accepted", raw: "(+420) 600 000 001", want: "+420600000001"},
	{name: "a four-digit Niue number is possible", raw: "+683 4001", want: "+6834001"},
	{name: "an international freephone number is possible", raw: "+800 1234 5678", want: "+80012345678"},

	{name: "empty input is an error", raw: "", errHas: "empty"},
	{name: "input of only formatting is an error", raw: " ( - ) ", errHas: "no digits"},
	{name: "a lone plus is an error", raw: "+", errHas: "no digits"},
	{name: "vanity letters are an error, not digits", raw: "1-800-FLOWERS", region: "US", errHas: "letters"},
	{name: "an extension is an error", raw: "+420600000001 ext 5", errHas: "letters"},
	{name: "a hash is an error", raw: "+420600000001#5", errHas: "'#'"},
	{name: "a slash is an error", raw: "+420/600000001", errHas: "'/'"},
	{name: "a plus after digits is an error", raw: "420+600000001", errHas: "not at the start"},
	{name: "two pluses are an error", raw: "++420600000001", errHas: "not at the start"},
	{name: "non-ASCII digits are an error", raw: "+٤٢٠٦٠٠٠٠٠٠٠١", errHas: "contains"},
	{name: "input over 32 bytes is an error", raw: "+420 600 000 001                  ", errHas: "at most 32"},
	{name: "more than 15 digits is an error", raw: "+4206000000011234", errHas: "at most 15"},
	{name: "a national number without a default region is an error", raw: "600000001", errHas: "no default region"},
	{name: "an unknown default region is an error", raw: "600000001", region: "XX", errHas: "unknown default region"},
	{name: "an unknown country code is an error", raw: "+999 1234 5678", errHas: "country code"},
	{name: "a country code 0 is an error", raw: "+00420600000001", errHas: "country code"},
	{name: "a number too short for its country is an error", raw: "+420 60000000", errHas: "too short"},
	{name: "a number too long for its country is an error", raw: "+33 6 12 34 56 78 9", errHas: "too long"},
	{name: "a single digit is an error", raw: "+4", errHas: "not a number"},
}

func TestNormalize(t *testing.T) {
	for _, tc := range normalizeCases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Normalize(tc.raw, tc.region)
			if tc.want != "" {
				if err != nil || got != tc.want {
					t.Fatalf("Normalize(%q, %q) = %q, %v; want %q", tc.raw, tc.region, got, err, tc.want)
				}
				return
			}
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Normalize(%q, %q) = %q, %v; want an error wrapping ErrInvalid", tc.raw, tc.region, got, err)
			}
			if got != "" {
				t.Errorf("Normalize(%q, %q) returned %q with its error; want \"\"", tc.raw, tc.region, got)
			}
			if !strings.Contains(err.Error(), tc.errHas) {
				t.Errorf("Normalize(%q, %q) error %q does not say %q", tc.raw, tc.region, err, tc.errHas)
			}
		})
	}
}

func FuzzNormalize(f *testing.F) {
	for _, tc := range normalizeCases {
		f.Add(tc.raw, tc.region)
	}
	f.Fuzz(func(t *testing.T, raw, region string) {
		out, err := Normalize(raw, region)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Normalize(%q, %q) error %v does not wrap ErrInvalid", raw, region, err)
			}
			return
		}
		if len(out) < 8 || len(out) > 16 || out[0] != '+' {
			t.Fatalf("Normalize(%q, %q) = %q: want '+' and 7 to 15 digits", raw, region, out)
		}
		for _, c := range out[1:] {
			if c < '0' || c > '9' {
				t.Fatalf("Normalize(%q, %q) = %q: %q is not a digit", raw, region, out, c)
			}
		}
		if again, err := Normalize(out, ""); err != nil || again != out {
			t.Fatalf("Normalize(%q, \"\") = %q, %v; want it unchanged (from Normalize(%q, %q))", out, again, err, raw, region)
		}
	})
}
