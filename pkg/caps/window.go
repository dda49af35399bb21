// Package caps enforces frequency caps per recipient (CP1): at most N
// messages a calendar day and M an ISO week, counted in a JetStream KV
// bucket so every instance sees one count, and counted once per message id,
// so a message redelivered after a crash is not counted twice.
//
// Windows are the calendar day and the ISO week (Monday to Sunday) in a
// configured time zone, not rolling 24 h / 7 d windows: that is what "three a
// day" means to the person receiving them and to the rules that set such
// caps, the count resets at a time an operator can name, and each week is
// one KV key whose every entry is known, so a whole decision (day and week)
// is one compare-and-set on one key.
package caps

import (
	"fmt"
	"time"
)

// Window is the calendar of the caps: days and ISO weeks in one time zone.
type Window struct{ loc *time.Location }

// NewWindow makes the calendar of zone (an IANA name like "Europe/Prague",
// or "UTC"; "" is UTC).
func NewWindow(zone string) (Window, error) {
	if zone == "" {
		return Window{loc: time.UTC}, nil
	}
	loc, err := time.LoadLocation(zone)
	if err != nil {
		return Window{}, fmt.Errorf("caps: time zone %q: %w", zone, err)
	}
	return Window{loc: loc}, nil
}

// Week names the ISO week of t in the window's zone, like "2026W48": the
// part of a KV key that changes every Monday at midnight.
func (w Window) Week(t time.Time) string {
	y, wk := t.In(w.loc).ISOWeek()
	return fmt.Sprintf("%04dW%02d", y, wk)
}

// Day is the ISO weekday of t in the window's zone, 1 (Monday) to 7 (Sunday):
// with Week it names the calendar day.
func (w Window) Day(t time.Time) int {
	d := int(t.In(w.loc).Weekday())
	if d == 0 {
		return 7
	}
	return d
}
