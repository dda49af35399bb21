package dlr

import (
	"encoding/base64"
	"strings"
)

// NormalizeID returns the form used to correlate an SMSC message id between
// submit_sm_resp and receipts: trimmed of white space and NULs, and ASCII
// lower-cased (other bytes are kept as they are, so distinct ids stay distinct).
// It is the text form of CanonicalID, which egress and receipts both call, so
// that one place decides which ids are the same; hex/decimal and leading
// zeros are reconciled there, only for links configured to write numbers.
func NormalizeID(id string) string {
	id = strings.TrimFunc(id, isSpaceOrNUL)
	for i := 0; i < len(id); i++ {
		if 'A' <= id[i] && id[i] <= 'Z' {
			b := []byte(id)
			for j := i; j < len(b); j++ {
				if 'A' <= b[j] && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return id
}

// Key returns the sms_dlr_index KV key for (link, smsc id): "<link>.<id>" when
// id is made only of [A-Za-z0-9_=-] and does not start with "x", else
// "<link>.x" followed by the id in unpadded URL base64. Ids starting with "x"
// take the encoded form too, so no plain id can equal an encoded one: different
// ids on a link always give different keys. Key does not normalise: pass
// CanonicalID(id, form) from both sides. A link that is not a single token of
// [A-Za-z0-9_=-] (config allows no other) is encoded the same way, "x" and
// base64, so the key is always valid: [-/_=.a-zA-Z0-9]+ with one '.'.
func Key(link, smscID string) string {
	if !plain(link) {
		link = encoded(link)
	}
	id := smscID
	if !plain(id) || id[0] == 'x' {
		id = encoded(id)
	}
	return link + "." + id
}

func encoded(s string) string {
	return "x" + base64.RawURLEncoding.EncodeToString([]byte(s))
}

// plain reports whether s is a non-empty run of [A-Za-z0-9_=-].
func plain(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-' || c == '=') {
			return false
		}
	}
	return true
}
