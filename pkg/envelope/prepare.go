package envelope

import (
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/smsflow/smsflow/pkg/phone"
)

// Prepare validates m and normalises its recipient to E.164 (numbers without
// a country prefix are read in region; "" accepts only +E.164). maxChars
// limits the text in characters (0: no limit beyond MaxTextBytes). The HTTP
// API and the policy stage both call it, so a message is judged the same way
// whichever door it came in by.
func Prepare(m Message, now time.Time, region string, maxChars int) (Message, []FieldError) {
	errs := m.Validate(now)
	if strings.TrimSpace(m.To) != "" {
		to, err := phone.Normalize(m.To, region)
		if err != nil {
			errs = append(errs, FieldError{Field: "to", Msg: err.Error()})
		} else {
			m.To = to
		}
	}
	if n := utf8.RuneCountInString(m.Text); maxChars > 0 && n > maxChars {
		errs = append(errs, FieldError{Field: "text", Msg: fmt.Sprintf("is %d characters, more than %d", n, maxChars)})
	}
	return m, errs
}
