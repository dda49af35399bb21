package dlr

import (
	"regexp"
	"strings"
	"testing"
)

func TestNormalizeID(t *testing.T) {
	for _, tc := range []struct{ name, id, want string }{
		{"a lower-case id is unchanged", "0a1b2c", "0a1b2c"},
		{"upper-case hex is lower-cased", "0A1B2C", "0a1b2c"},
		{"surrounding spaces and NULs are trimmed", " 12345\x00\x00", "12345"},
		{"leading zeros are kept", "000123", "000123"},
		{"inner spaces are kept", "a b", "a b"},
		{"non-ASCII bytes are kept as they are", "Ä\xffB", "Ä\xffb"},
		{"an id of only NULs is empty", "\x00\x00", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := NormalizeID(tc.id); got != tc.want {
				t.Fatalf("NormalizeID(%q) = %q, want %q", tc.id, got, tc.want)
			}
		})
	}
}

var keyCases = []struct{ name, link, id, want string }{
	{"a hex id is used as it is", "cz1", "0a1b2c", "cz1.0a1b2c"},
	{"an id of letters, digits, _, - and = is used as it is", "cz1", "AB_c-9=", "cz1.AB_c-9="},
	{"an id with a dot is encoded", "cz1", "a.b", "cz1.xYS5i"},
	{"an id with a space is encoded", "cz1", "a b", "cz1.xYSBi"},
	{"an id starting with x is encoded, so it cannot pass for an encoded id", "cz1", "xYS5i", "cz1.xeFlTNWk"},
	{"an empty id is encoded", "cz1", "", "cz1.x"},
	{"a link that is no single token is encoded too", "cz.1", "1", "xY3ouMQ.1"},
	{"an empty link is encoded", "", "1", "x.1"},
}

func TestKey(t *testing.T) {
	for _, tc := range keyCases {
		t.Run(tc.name, func(t *testing.T) {
			if got := Key(tc.link, tc.id); got != tc.want {
				t.Fatalf("Key(%q, %q) = %q, want %q", tc.link, tc.id, got, tc.want)
			}
		})
	}
}

var validKey = regexp.MustCompile(`^[-/_=.a-zA-Z0-9]+$`)

func FuzzKey(f *testing.F) {
	for _, tc := range keyCases {
		f.Add(tc.link, tc.id, "x"+tc.id)
	}
	f.Add("cz1", "a.b", "xYS5i")
	f.Fuzz(func(t *testing.T, link, a, b string) {
		ka, kb := Key(link, a), Key(link, b)
		for _, k := range []string{ka, kb} {
			if !validKey.MatchString(k) || strings.HasPrefix(k, ".") || strings.HasSuffix(k, ".") || strings.Contains(k, "..") {
				t.Fatalf("Key(%q, ...) = %q is not a valid KV key", link, k)
			}
		}
		if a != b && ka == kb {
			t.Fatalf("Key(%q, %q) == Key(%q, %q) == %q", link, a, link, b, ka)
		}
	})
}
