package blacklist

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/smsflow/smsflow/pkg/phone"
)

func numbers(keys []uint64) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = "+" + strconv.FormatUint(k, 10)
	}
	return out
}

var parseCases = []struct {
	name   string
	in     string
	region string
	want   []string
}{
	{name: "one number a line, blank lines and comments skipped",
		in:   "# opted out by phone\n+420600000001\n\n  +420 600 000 002  # spaces are fine\r\n#+420600000009\n+420600000003",
		want: []string{"+420600000001", "+420600000002", "+420600000003"}},
	{name: "national numbers are read in the region",
		in: "600000001\n00420600000002\n", region: "CZ", want: []string{"+420600000001", "+420600000002"}},
	{name: "a UK number written with its trunk 0 is normalised",
		in: "+44 020 7946 0000\n", want: []string{"+442079460000"}},
	{name: "CSV with a header finds the phone column in any case",
		in:   "# export\nName,Phone,Reason\n\"Novák, Jan\",+420600000001,asked\nEva,+420 600 000 002,\n",
		want: []string{"+420600000001", "+420600000002"}},
	{name: "a CSV with semicolons is read by its header's separator",
		in: "Jméno;Phone\nJan;+420 600 000 001\n", want: []string{"+420600000001"}},
	{name: "a one-column CSV is told by its header alone",
		in: "\uFEFFMSISDN\n+420600000001\n", want: []string{"+420600000001"}},
	{name: "an empty list is empty, not an error", in: "# nothing yet\n\n", want: []string{}},
	{name: "duplicates are kept (the set drops them)",
		in: "+420600000001\n+420600000001\n", want: []string{"+420600000001", "+420600000001"}},
}

func TestParseReadsBothFormats(t *testing.T) {
	for _, c := range parseCases {
		t.Run(c.name, func(t *testing.T) {
			keys, err := Parse(strings.NewReader(c.in), c.region)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got := numbers(keys); !slices.Equal(got, c.want) {
				t.Fatalf("got %q, want %q", got, c.want)
			}
		})
	}
}

var parseErrorCases = []struct {
	name  string
	in    string
	lines []int  // the lines the error names, in order
	has   string // part of the error text
}{
	{name: "a bad number fails the list and names its line",
		in: "+420600000001\n\n+42060000000x\n+420600000002\n", lines: []int{3}, has: "letters"},
	{name: "every bad line is named, not just the first",
		in: "+420600000001\nabc\n+1\n+420600000002\n", lines: []int{2, 3}},
	{name: "a national number without a region is an error",
		in: "600000001\n", lines: []int{1}, has: "no country code"},
	{name: "a CSV without a number column names the header line",
		in: "# list\nname,reason\nJan,asked\n", lines: []int{2}, has: "no number column"},
	{name: "a CSV row without the number column is an error",
		in: "name,number\nJan,+420600000001\nEva\n", lines: []int{3}, has: "no column 2"},
	{name: "a CSV row with an empty number is an error",
		in: "number,name\n,Jan\n", lines: []int{2}, has: "empty number"},
	{name: "a CSV quoting error names its line",
		in: "number\n+420600000001\n\"+420600000002\n", lines: []int{3}},
	{name: "a line too long to be a number is an error",
		in: "+420600000001\n" + strings.Repeat("1", 70000) + "\n", lines: []int{2}, has: "longer than"},
	{name: "ten bad lines stop the parse",
		in: strings.Repeat("nope\n", 50), lines: []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, has: "stopped after 10 errors"},
}

func TestParseFailsTheWholeListOnABadLine(t *testing.T) {
	for _, c := range parseErrorCases {
		t.Run(c.name, func(t *testing.T) {
			keys, err := Parse(strings.NewReader(c.in), "")
			if err == nil {
				t.Fatalf("Parse = %d keys, no error; want an error on lines %v", len(keys), c.lines)
			}
			if keys != nil {
				t.Errorf("Parse returned %d keys with its error, want none", len(keys))
			}
			var lines []int
			for _, e := range unjoin(err) {
				var le *LineError
				if errors.As(e, &le) {
					lines = append(lines, le.Line)
				}
			}
			if !slices.Equal(lines, c.lines) {
				t.Errorf("error names lines %v, want %v: %v", lines, c.lines, err)
			}
			if !strings.Contains(err.Error(), c.has) {
				t.Errorf("error %q does not say %q", err, c.has)
			}
		})
	}
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// FuzzParse: any input either fails or yields numbers that are their own
// E.164 form, and writing them out one a line parses back to the same keys.
func FuzzParse(f *testing.F) {
	for _, c := range parseCases {
		f.Add(c.in, c.region)
	}
	for _, c := range parseErrorCases[:len(parseErrorCases)-2] {
		f.Add(c.in, "")
	}
	f.Add("number;name\n+420600000001;Jan\n", "")
	f.Add("to\n\"+420 600\n000 001\"\n", "CZ")
	f.Fuzz(func(t *testing.T, in, region string) {
		keys, err := Parse(strings.NewReader(in), region)
		if err != nil {
			if keys != nil {
				t.Fatalf("Parse returned %d keys with error %v", len(keys), err)
			}
			return
		}
		out := numbers(keys)
		for _, n := range out {
			if e, err := phone.Normalize(n, ""); err != nil || e != n {
				t.Fatalf("Parse gave %s, which normalises to %q, %v", n, e, err)
			}
		}
		again, err := Parse(strings.NewReader(strings.Join(out, "\n")), "")
		if err != nil || !slices.Equal(again, keys) {
			t.Fatalf("re-parsing %q: %v, %v; want %v", out, again, err, keys)
		}
	})
}

func TestSetHasExactlyItsKeys(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{0, 1, 7, 1000, 100_000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			in := map[uint64]bool{}
			keys := make([]uint64, 0, n)
			for range n {
				k := 420_000_000_000 + rng.Uint64N(1_000_000_000)
				in[k] = true
				keys = append(keys, k, k) // duplicates too
			}
			s := newSet(slices.Clone(keys))
			if s.len() != len(in) {
				t.Fatalf("len = %d, want %d distinct", s.len(), len(in))
			}
			for k := range in {
				if !s.contains(k) {
					t.Fatalf("key %d missing", k)
				}
			}
			misses := 0
			for range 100_000 {
				k := 420_000_000_000 + rng.Uint64N(1_000_000_000)
				if s.contains(k) != in[k] {
					t.Fatalf("contains(%d) = %v, want %v", k, s.contains(k), in[k])
				}
				if !in[k] {
					misses++
				}
			}
			if misses == 0 {
				t.Fatal("no absent key was tried")
			}
		})
	}
}

func TestUnionHasEveryKeyOnce(t *testing.T) {
	a := newSet([]uint64{420600000001, 420600000002})
	b := newSet([]uint64{420600000002, 420600000003})
	u := union(a, nil, b, newSet(nil))
	if u.len() != 3 {
		t.Fatalf("union len = %d, want 3", u.len())
	}
	for _, k := range []uint64{420600000001, 420600000002, 420600000003} {
		if !u.contains(k) {
			t.Errorf("union lacks %d", k)
		}
	}
	if u.contains(420600000004) {
		t.Error("union has 420600000004, which no set has")
	}
	if union(a, newSet(nil)) != a {
		t.Error("a union of one non-empty set copied it")
	}
	if union().len() != 0 {
		t.Error("an empty union is not empty")
	}
}
