package phone

import (
	"regexp"
	"sync"

	"github.com/nyaruka/phonenumbers"
)

// Canonical reports whether raw is certainly its own E.164 form, which
// Normalize would return unchanged: false means "ask Normalize", not
// "invalid". It answers in well under a microsecond and allocates nothing,
// where libphonenumber's parser, which Normalize runs twice, takes about
// twenty: Normalize tries it first, and so does a list parser on each line
// (it takes bytes too, so a parser need not make a string a line).
//
// For "+digits" input the parser does only three things that matter: it
// splits off the country code, strips a national prefix when the country's
// national-prefix-for-parsing pattern matches the start of the national
// number, and checks the national number's length against the country's
// possible lengths. Canonical does the first and third from tables built
// once from libphonenumber's own metadata, and says false whenever the
// second could apply (the pattern matches), the national number starts with
// 0 (Italian leading zeros) or the length is not possible (so the error is
// the parser's). TestCanonicalMatchesTheParser and FuzzCanonical check that
// the two agree.
func Canonical[T string | []byte](raw T) bool {
	// "+" and 7 to 15 digits, the bounds Normalize enforces.
	if len(raw) < minDigits+1 || len(raw) > maxDigits+1 || raw[0] != '+' || raw[1] == '0' {
		return false
	}
	for i := 1; i < len(raw); i++ {
		if raw[i] < '0' || raw[i] > '9' {
			return false
		}
	}
	plans := countryPlans()
	cc := 0
	for n := 1; n <= 3; n++ {
		cc = cc*10 + int(raw[n]-'0')
		if !plans.known[cc] {
			continue // the parser takes the shortest known code, as here
		}
		p := plans.byCode[cc]
		if p == nil {
			return false
		}
		national := raw[1+n:]
		if national[0] == '0' || !p.possible[len(national)] {
			return false
		}
		if p.nationalPrefix == nil {
			return true
		}
		switch v := any(national).(type) {
		case string:
			return !p.nationalPrefix.MatchString(v)
		case []byte:
			return !p.nationalPrefix.Match(v)
		}
		return false
	}
	return false
}

// plan is what Canonical needs of one country calling code.
type plan struct {
	// nationalPrefix is "^(?:" + national_prefix_for_parsing + ")", the very
	// pattern libphonenumber tries; nil when the country has none.
	nationalPrefix *regexp.Regexp
	// possible[l]: a national number of l digits is possible (or possible
	// locally), as phonenumbers.IsPossibleNumberWithReason says.
	possible [phonenumbers.MAX_LENGTH_FOR_NSN + 1]bool
}

// plans holds a plan for each country calling code (1 to 999).
type plans struct {
	known  [1000]bool  // the codes the parser recognises
	byCode [1000]*plan // nil: no fast path for that code
}

// countryPlans is derived once from libphonenumber's embedded metadata and
// never changes, hence a package-level cache rather than state.
var countryPlans = sync.OnceValue(func() *plans {
	out := &plans{}
	for cc := range phonenumbers.GetSupportedCallingCodes() {
		if cc > 0 && cc < len(out.known) {
			out.known[cc] = true
		}
	}
	coll, err := phonenumbers.MetadataCollection()
	if err != nil {
		return out // every number takes the slow, exact path
	}
	for _, md := range coll.GetMetadata() {
		cc := int(md.GetCountryCode())
		if cc <= 0 || cc >= len(out.byCode) {
			continue
		}
		// The parser uses the main region's metadata for a code shared by
		// several regions (+1: US, +7: RU), and "001" for non-geographic codes.
		if main := phonenumbers.GetRegionCodeForCountryCode(cc); md.GetId() != main {
			continue
		}
		p := &plan{}
		if np := md.GetNationalPrefixForParsing(); np != "" {
			re, err := regexp.Compile("^(?:" + np + ")")
			if err != nil {
				continue // no fast path for this country
			}
			p.nationalPrefix = re
		}
		for l := 1; l < len(p.possible); l++ {
			// Only the national number's length matters to the check.
			n := &phonenumbers.PhoneNumber{}
			n.CountryCode = ptr(int32(cc))
			n.NationalNumber = ptr(pow10(l - 1))
			switch phonenumbers.IsPossibleNumberWithReason(n) {
			case phonenumbers.IS_POSSIBLE, phonenumbers.IS_POSSIBLE_LOCAL_ONLY:
				p.possible[l] = true
			}
		}
		out.byCode[cc] = p
	}
	return out
})

func ptr[T any](v T) *T { return &v }

func pow10(n int) uint64 {
	v := uint64(1)
	for range n {
		v *= 10
	}
	return v
}
