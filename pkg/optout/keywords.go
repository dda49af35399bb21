// Package optout keeps who said STOP: a reply whose whole text is a stop
// keyword opts the sender out of marketing messages, a start keyword opts
// them back in. The state lives in KV sms_optout (one key per number), so
// every instance sees it; View mirrors the bucket in memory for the hot path.
package optout

import (
	"strings"
	"unicode"

	"golang.org/x/text/runes"
	"golang.org/x/text/transform"
	"golang.org/x/text/unicode/norm"
)

// Action is what a reply asks for.
type Action int

const (
	None  Action = iota // an ordinary reply
	Stop                // opt out of marketing
	Start               // opt back in
)

// Default keywords, always recognised; configuration adds to them.
var (
	DefaultStop  = []string{"STOP", "UNSUBSCRIBE"}
	DefaultStart = []string{"START"}
)

// Keywords recognise stop and start replies.
type Keywords struct {
	stop, start map[string]bool
}

// NewKeywords recognises the defaults plus stop and start. Keywords compare
// as Fold does: case, accents and surrounding punctuation do not matter.
func NewKeywords(stop, start []string) Keywords {
	k := Keywords{stop: map[string]bool{}, start: map[string]bool{}}
	for _, w := range append(append([]string{}, DefaultStop...), stop...) {
		if f := Fold(w); f != "" {
			k.stop[f] = true
		}
	}
	for _, w := range append(append([]string{}, DefaultStart...), start...) {
		if f := Fold(w); f != "" && !k.stop[f] {
			k.start[f] = true
		}
	}
	return k
}

// Classify says whether text, as a whole, is a stop or start keyword. "stop",
// " Stop! " and "STÓP" are; "please stop" is not: only a reply that is the
// keyword counts, so a conversation does not opt anyone out by accident.
func (k Keywords) Classify(text string) Action {
	f := Fold(text)
	switch {
	case k.stop[f]:
		return Stop
	case k.start[f]:
		return Start
	}
	return None
}

// Fold is text in the form keywords compare in: accents removed (NFD, marks
// dropped), upper case, runs of spaces made one, and spaces and punctuation
// trimmed from both ends.
func Fold(text string) string {
	if len(text) > 256 {
		return "" // no keyword is that long
	}
	t := transform.Chain(norm.NFD, runes.Remove(runes.In(unicode.Mn)), norm.NFC)
	s, _, err := transform.String(t, text)
	if err != nil {
		return ""
	}
	s = strings.Join(strings.Fields(strings.ToUpper(s)), " ")
	return strings.TrimFunc(s, func(r rune) bool { return unicode.IsPunct(r) || unicode.IsSpace(r) || unicode.IsSymbol(r) })
}
