package dlr

import (
	"fmt"
	"math/big"
	"strings"
)

// IndexEntry is the value egress writes in sms_dlr_index under each part's
// SMSC id: the message it belongs to, how many parts the message has, and
// which part (1-based) this id is. Part is 0 in entries written before parts
// were numbered; the receipts stage then tells the parts apart by SMSC id.
type IndexEntry struct {
	ID    string `json:"id"`
	Parts int    `json:"parts"`
	Part  int    `json:"part,omitempty"`
	// StatusSeq is the SMS_STATUS sequence of the submitted event egress
	// wrote before the entry (0: not known): the receipts stage writes the
	// final status right after it without reading it back (PublishNext),
	// and reads only when another event came in between.
	StatusSeq uint64 `json:"status_seq,omitempty"`
}

// IDForm says how an SMSC writes its message ids on one side of a link: in
// submit_sm_resp, or in its receipts. SMSCs disagree with themselves: some
// answer submit_sm_resp with a hex id and put the same number in decimal in
// the receipt, some pad receipt ids with leading zeros.
type IDForm string

// The id forms.
//
// IDText (the default) takes the id as an opaque string: two ids are the same
// when they are equal after NormalizeID (trimmed, ASCII lower-cased). It never
// merges ids the SMSC meant as different.
//
// IDDecimal and IDHex read the id as a number, so leading zeros and the base
// do not matter: "0000123" (decimal) and "7b" (hex) are both 123. That is
// only unambiguous when the link says which base each side uses: "10" is ten
// in decimal and sixteen in hex, and "0123" and "123" are different strings.
// So it is never guessed; a link sets it.
const (
	IDText    IDForm = "text"
	IDDecimal IDForm = "decimal"
	IDHex     IDForm = "hex"
)

// ParseIDForm reads a configured form; "" is IDText.
func ParseIDForm(s string) (IDForm, error) {
	switch f := IDForm(s); f {
	case "":
		return IDText, nil
	case IDText, IDDecimal, IDHex:
		return f, nil
	}
	return "", fmt.Errorf("unknown id form %q (want text, decimal or hex)", s)
}

// Numeric reports whether f reads ids as numbers.
func (f IDForm) Numeric() bool { return f == IDDecimal || f == IDHex }

// CanonicalID returns the form an SMSC id is indexed and looked up under,
// given how the side it came from writes ids. For a numeric form, an id made
// only of that base's digits becomes its value in decimal without leading
// zeros ("0" for zero); any other id, and every id in IDText, is
// NormalizeID(id). The two never collide on one link: a numeric canonical is
// all decimal digits, and an id that is all decimal digits always parses in
// either base, so no text fallback is all digits. Both sides of a link must
// be numeric, or both text (config validates it), or nothing matches.
func CanonicalID(id string, f IDForm) string {
	id = NormalizeID(id)
	base := 0
	switch f {
	case IDDecimal:
		base = 10
	case IDHex:
		base = 16
	}
	if base == 0 || id == "" {
		return id
	}
	if base == 10 && strings.Trim(id, "0123456789") != "" || base == 16 && strings.Trim(id, "0123456789abcdef") != "" {
		return id
	}
	var n big.Int
	if _, ok := n.SetString(id, base); !ok {
		return id
	}
	return n.String()
}
