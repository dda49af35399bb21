// Package phone normalises phone numbers to E.164 with the libphonenumber rules,
// so every stage compares, caps and routes a handset under one spelling.
package phone

import (
	"errors"
	"fmt"
	"strings"

	"github.com/nyaruka/phonenumbers"
)

// ErrInvalid is wrapped by every error Normalize returns: the number cannot be
// sent to, and retrying will not change that (status reason "invalid").
var ErrInvalid = errors.New("invalid phone number")

// maxInput bounds the raw input: nothing longer is a phone number a person
// typed, and it keeps libphonenumber's regexps away from hostile input.
const maxInput = 32

// E.164 allows at most 15 digits; fewer than 7 is no subscriber anywhere
// reachable by SMS (the shortest plans, +290 and +683, have 4-digit numbers).
const (
	minDigits = 7
	maxDigits = 15
)

// Normalize returns raw as E.164 ("+420600000001").
//
// raw may contain spaces, tabs, dashes, dots and parentheses, and start with "+"
// or the "00" international prefix. A number without either is national and is
// parsed in defaultRegion (an ISO 3166 code such as "CZ", any case); it is an
// error when defaultRegion is "". Any other character (letters included, which
// libphonenumber would read as vanity digits: 1-800-FLOWERS), empty or too long
// input (more than 32 bytes), and numbers libphonenumber does not consider
// possible are errors wrapping ErrInvalid that say what is wrong.
//
// Possible, not valid (phonenumbers.IsPossibleNumber): only the length is
// checked against the country's plan, so test ranges (+420 600 000 001,
// +1 555 01xx) pass; so does a number possible only locally, without its area
// code (a US 7-digit number). The result is stable: Normalize(out, "") == out.
func Normalize(raw, defaultRegion string) (string, error) {
	if Canonical(raw) { // most numbers: no parse, no allocation
		return raw, nil
	}
	return normalize(raw, defaultRegion, true)
}

// normalize is Normalize after the first fast path; fast false makes it
// libphonenumber's parser alone (twice), what the tests compare with.
func normalize(raw, defaultRegion string, fast bool) (string, error) {
	if raw == "" {
		return "", fmt.Errorf("%w: empty", ErrInvalid)
	}
	if len(raw) > maxInput {
		return "", fmt.Errorf("%w: %d bytes, want at most %d", ErrInvalid, len(raw), maxInput)
	}
	num, err := clean(raw)
	if err != nil {
		return "", err
	}
	region := ""
	switch {
	case strings.HasPrefix(num, "+"):
	case strings.HasPrefix(num, "00"):
		num = "+" + num[2:]
	default:
		if defaultRegion == "" {
			return "", fmt.Errorf("%w: %q has no country code (+ or 00) and no default region is set", ErrInvalid, raw)
		}
		region = strings.ToUpper(defaultRegion)
		if phonenumbers.GetCountryCodeForRegion(region) == 0 {
			return "", fmt.Errorf("%w: unknown default region %q", ErrInvalid, defaultRegion)
		}
	}
	if fast && region == "" && Canonical(num) { // written with spaces or 00: the same fast path
		return num, nil
	}
	if n := len(num) - strings.Count(num, "+"); n > maxDigits {
		return "", fmt.Errorf("%w: %q has %d digits, E.164 allows at most %d", ErrInvalid, raw, n, maxDigits)
	}
	out, err := e164(num, region)
	if err != nil {
		return "", fmt.Errorf("%w: %q: %v", ErrInvalid, raw, err)
	}
	// A national prefix that libphonenumber strips only on a second pass would
	// make the same handset two keys; refuse such a number instead.
	if again, err := e164(out, ""); err != nil || again != out {
		return "", fmt.Errorf("%w: %q: ambiguous number (%s does not normalise to itself)", ErrInvalid, raw, out)
	}
	return out, nil
}

// clean drops the formatting characters and returns the digits, with a "+" in
// front when raw had one before its first digit.
func clean(raw string) (string, error) {
	var b strings.Builder
	b.Grow(len(raw))
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		switch {
		case c >= '0' && c <= '9':
			b.WriteByte(c)
		case c == ' ' || c == '\t' || c == '-' || c == '.' || c == '(' || c == ')':
		case c == '+':
			if b.Len() > 0 {
				return "", fmt.Errorf("%w: %q has a \"+\" that is not at the start", ErrInvalid, raw)
			}
			b.WriteByte(c)
		case c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z':
			return "", fmt.Errorf("%w: %q contains letters", ErrInvalid, raw)
		default:
			return "", fmt.Errorf("%w: %q contains %q at byte %d", ErrInvalid, raw, rune(c), i)
		}
	}
	num := b.String()
	if strings.TrimPrefix(num, "+") == "" {
		return "", fmt.Errorf("%w: %q has no digits", ErrInvalid, raw)
	}
	return num, nil
}

// e164 parses num ("+" and digits, or national digits with region) and returns
// it in E.164 when libphonenumber calls it possible.
func e164(num, region string) (string, error) {
	p, err := phonenumbers.Parse(num, region)
	if err != nil {
		return "", err
	}
	switch phonenumbers.IsPossibleNumberWithReason(p) {
	case phonenumbers.IS_POSSIBLE, phonenumbers.IS_POSSIBLE_LOCAL_ONLY: // what IsPossibleNumber accepts
	case phonenumbers.INVALID_COUNTRY_CODE:
		return "", fmt.Errorf("unknown country code +%d", p.GetCountryCode())
	case phonenumbers.TOO_SHORT:
		return "", errors.New("too short for its country")
	case phonenumbers.TOO_LONG:
		return "", errors.New("too long for its country")
	default:
		return "", errors.New("not a possible length for its country")
	}
	out := phonenumbers.Format(p, phonenumbers.E164)
	if n := len(out) - 1; n < minDigits || n > maxDigits || out[0] != '+' {
		return "", fmt.Errorf("%s has %d digits, want %d to %d", out, n, minDigits, maxDigits)
	}
	return out, nil
}
