package dlr

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf16"
)

// State is the normalised outcome of a receipt.
type State string

// The states a receipt can report. Delivered, Undelivered, Expired and
// Rejected are final; the others are progress reports.
const (
	Delivered   State = "delivered"
	Undelivered State = "undelivered"
	Expired     State = "expired"
	Rejected    State = "rejected"
	Enroute     State = "enroute"
	Unknown     State = "unknown"
)

// Final reports whether s ends the message (delivered, undelivered, expired,
// rejected): no later receipt is expected, so the message gets its terminal status.
func (s State) Final() bool {
	switch s {
	case Delivered, Undelivered, Expired, Rejected:
		return true
	}
	return false
}

// Receipt is a parsed receipt. ID is the SMSC's message id as sent (not
// normalised: see NormalizeID); State is always one of the State constants.
// Dates are the SMSC's clock, whose zone it does not say, read as UTC; zero
// when absent or unreadable.
type Receipt struct {
	ID         string
	Sub, Dlvrd int
	SubmitDate time.Time
	DoneDate   time.Time
	Stat       string // stat as sent ("DELIVRD"), or the message_state TLV's name when the text had none
	Err        string // err as sent ("000"), or the network_error_code TLV as a decimal
	Text       string // the first characters of the original message, when the SMSC sends them
	State      State
}

// ErrNotReceipt marks a text or record that is not a delivery receipt: a
// permanent condition, so the record is counted and skipped, not retried.
var ErrNotReceipt = errors.New("not a delivery receipt")

// ParseText parses the SMPP 3.4 Appendix B text form of a receipt:
//
//	id:IIIIIIIIII sub:SSS dlvrd:DDD submit date:YYMMDDhhmm done date:YYMMDDhhmm stat:DDDDDDD err:E text: ...
//
// It is as lenient as real SMSCs require: keys in any case and any order,
// spaces around values, sub, dlvrd, the dates, err and text optional, dates
// with 10 or 12 digits (YYMMDDhhmm[ss]), "submit_date"/"submitdate" spellings,
// and "text:" taking the rest of the string, keys included. A key counts only at
// the start or after white space; the first of a repeated key wins; unknown
// keys are ignored. id and stat are required: without either the error wraps
// ErrNotReceipt. Stat maps to State: DELIVRD delivered, UNDELIV and DELETED
// undelivered, EXPIRED expired, REJECTD rejected, ACCEPTD and ENROUTE enroute,
// anything else unknown.
func ParseText(text string) (Receipt, error) {
	r := scan(text)
	switch {
	case r.ID == "" && r.Stat == "":
		return Receipt{}, fmt.Errorf("%w: no id and no stat in %q", ErrNotReceipt, clip(text))
	case r.ID == "":
		return Receipt{}, fmt.Errorf("%w: no id in %q", ErrNotReceipt, clip(text))
	case r.Stat == "":
		return Receipt{}, fmt.Errorf("%w: no stat in %q", ErrNotReceipt, clip(text))
	}
	return r, nil
}

// Parse reads a stored record. The TLVs win: receipted_message_id gives the
// id, message_state the state (1 enroute, 2 delivered, 3 expired, 4 deleted as
// undelivered, 5 undeliverable, 6 accepted as enroute, 7 unknown, 8 rejected);
// the text (also tried as UCS-2 when data_coding is 8) fills the rest. A record
// with neither an id TLV nor a receipt text is an error wrapping ErrNotReceipt;
// one with only the id TLV has State Unknown unless message_state says more.
// When the text gives no err, a network_error_code TLV of two or more bytes
// gives Err as the decimal of its last two (the error code after the network type).
func Parse(r Record) (Receipt, error) {
	rc, err := ParseText(string(r.Text))
	if err != nil && r.DataCoding == 0x08 {
		if s, ok := ucs2(r.Text); ok {
			if rc2, err2 := ParseText(s); err2 == nil {
				rc, err = rc2, nil
			}
		}
	}
	id := strings.TrimFunc(r.ReceiptedID, isSpaceOrNUL)
	if err != nil {
		if id == "" {
			return Receipt{}, fmt.Errorf("record from link %q: %w", r.Link, err)
		}
		rc = scan(string(r.Text)) // partial text still fills dates and err; State is Unknown without stat
	}
	if id != "" {
		rc.ID = id
	}
	if st, name, ok := tlvState(r.MessageState); ok {
		rc.State = st
		if rc.Stat == "" {
			rc.Stat = name
		}
	}
	if rc.Err == "" && len(r.NetworkError) >= 2 {
		n := len(r.NetworkError)
		rc.Err = strconv.Itoa(int(r.NetworkError[n-2])<<8 | int(r.NetworkError[n-1]))
	}
	return rc, nil
}

// stateForStat maps the text's stat field to a State.
func stateForStat(stat string) State {
	switch strings.ToUpper(stat) {
	case "DELIVRD":
		return Delivered
	case "UNDELIV", "DELETED":
		return Undelivered
	case "EXPIRED":
		return Expired
	case "REJECTD":
		return Rejected
	case "ACCEPTD", "ENROUTE":
		return Enroute
	}
	return Unknown
}

// tlvState maps the message_state TLV (SMPP 3.4 5.2.28); ok is false when the
// TLV is absent (0) or holds a value 3.4 does not define.
func tlvState(v int) (s State, stat string, ok bool) {
	switch v {
	case 1:
		return Enroute, "ENROUTE", true
	case 2:
		return Delivered, "DELIVRD", true
	case 3:
		return Expired, "EXPIRED", true
	case 4:
		return Undelivered, "DELETED", true
	case 5:
		return Undelivered, "UNDELIV", true
	case 6:
		return Enroute, "ACCEPTD", true
	case 7:
		return Unknown, "UNKNOWN", true
	case 8:
		return Rejected, "REJECTD", true
	}
	return "", "", false
}

type field int

const (
	fID field = iota
	fSub
	fDlvrd
	fSubmitDate
	fDoneDate
	fStat
	fErr
	fText
	nFields
)

// keys are tried in order at each word start; two-word keys have their words
// split so that "submit date", "submit_date" and "submitdate" all match.
var keys = []struct {
	words []string
	f     field
}{
	{[]string{"submit", "date"}, fSubmitDate},
	{[]string{"done", "date"}, fDoneDate},
	{[]string{"dlvrd"}, fDlvrd},
	{[]string{"stat"}, fStat},
	{[]string{"text"}, fText},
	{[]string{"sub"}, fSub},
	{[]string{"err"}, fErr},
	{[]string{"id"}, fID},
}

// scan reads every field it finds, without deciding whether the result is a
// receipt. State is set from Stat.
func scan(text string) Receipt {
	var val [nFields]string
	var seen [nFields]bool
	cur, start := field(-1), 0
	flush := func(end int) {
		if cur >= 0 && !seen[cur] {
			seen[cur], val[cur] = true, text[start:end]
		}
	}
	for i := 0; i < len(text); i++ {
		if i > 0 && !isSpaceOrNUL(text[i-1]) {
			continue
		}
		f, next, ok := matchKey(text, i)
		if !ok {
			continue
		}
		flush(i)
		cur, start = f, next
		if f == fText {
			break
		}
		i = next - 1
	}
	flush(len(text))

	var r Receipt
	r.ID = firstToken(val[fID])
	r.Sub = number(firstToken(val[fSub]))
	r.Dlvrd = number(firstToken(val[fDlvrd]))
	r.SubmitDate = date(firstToken(val[fSubmitDate]))
	r.DoneDate = date(firstToken(val[fDoneDate]))
	r.Stat = firstToken(val[fStat])
	r.Err = firstToken(val[fErr])
	r.Text = strings.TrimFunc(val[fText], isSpaceOrNUL)
	r.State = stateForStat(r.Stat)
	return r
}

// matchKey reports whether a key and its colon start at text[i], and where its value starts.
func matchKey(text string, i int) (f field, next int, ok bool) {
	for _, k := range keys {
		j, matched := i, true
		for w, word := range k.words {
			if w > 0 {
				for j < len(text) && (text[j] == ' ' || text[j] == '_') {
					j++
				}
			}
			if !hasPrefixFold(text[j:], word) {
				matched = false
				break
			}
			j += len(word)
		}
		if !matched {
			continue
		}
		for j < len(text) && text[j] == ' ' {
			j++
		}
		if j < len(text) && text[j] == ':' {
			return k.f, j + 1, true
		}
	}
	return 0, 0, false
}

// hasPrefixFold is strings.HasPrefix ignoring ASCII case; prefix is lower case.
func hasPrefixFold(s, prefix string) bool {
	if len(s) < len(prefix) {
		return false
	}
	for i := 0; i < len(prefix); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != prefix[i] {
			return false
		}
	}
	return true
}

func firstToken(s string) string {
	s = strings.TrimLeftFunc(s, isSpaceOrNUL)
	if i := strings.IndexFunc(s, isSpaceOrNUL); i >= 0 {
		s = s[:i]
	}
	return s
}

// number reads sub and dlvrd; anything but 1 to 9 digits is 0 (unknown).
func number(s string) int {
	if s == "" || len(s) > 9 || strings.Trim(s, "0123456789") != "" {
		return 0
	}
	n, _ := strconv.Atoi(s)
	return n
}

// date reads YYMMDDhhmm or YYMMDDhhmmss as UTC; anything else is the zero time.
func date(s string) time.Time {
	var layout string
	switch len(s) {
	case 10:
		layout = "0601021504"
	case 12:
		layout = "060102150405"
	default:
		return time.Time{}
	}
	if strings.Trim(s, "0123456789") != "" {
		return time.Time{}
	}
	t, err := time.Parse(layout, s)
	if err != nil {
		return time.Time{}
	}
	return t
}

func isSpaceOrNUL[T rune | byte](c T) bool {
	switch c {
	case ' ', '\t', '\n', '\r', '\v', '\f', 0:
		return true
	}
	return false
}

// ucs2 decodes UTF-16BE, the form short_message takes with data_coding 8.
func ucs2(b []byte) (string, bool) {
	if len(b) == 0 || len(b)%2 != 0 {
		return "", false
	}
	u := make([]uint16, len(b)/2)
	for i := range u {
		u[i] = uint16(b[2*i])<<8 | uint16(b[2*i+1])
	}
	return string(utf16.Decode(u)), true
}

// clip keeps error messages short when a record holds a long message.
func clip(s string) string {
	const max = 80
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}
