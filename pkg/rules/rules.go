// Package rules is the policy's judgement on one message, shared by the
// policy stage (which decides and records: the duplicate window is claimed,
// the cap counted) and the API's on_build check (which only asks whether a
// message would pass). Stages never import each other, so the logic lives
// here, once.
//
// The rules run in order and stop at the first that rejects: blacklist,
// opt-out (marketing only), duplicate window, frequency caps (marketing, and
// transactional only when so configured). The duplicate window comes before
// the caps, so a duplicate never uses up a cap; a message refused by the caps
// has claimed its (number, text) pair, so a copy of it inside the window is
// refused as duplicate rather than daily_cp: refused either way. One
// exception saves round trips: a number this instance has already seen at its
// cap is refused daily_cp/weekly_cp at once, before the duplicate window.
package rules

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/smsflow/smsflow/pkg/caps"
	"github.com/smsflow/smsflow/pkg/dedup"
	"github.com/smsflow/smsflow/pkg/envelope"
	"github.com/smsflow/smsflow/pkg/status"
)

// Blacklist says whether a number must never get a message (pkg/blacklist).
type Blacklist interface {
	Contains(e164 string) bool
}

// OptOut says whether a number opted out of marketing (optout.View on the
// hot path, optout.Store for a fresh read).
type OptOut interface {
	OptedOut(ctx context.Context, number string) (bool, error)
}

// Rules are the checks; a nil field is a rule turned off.
type Rules struct {
	Blacklist        Blacklist
	OptOut           OptOut
	Dedup            *dedup.Window
	Caps             *caps.Counter
	CapTransactional bool             // transactional messages count against the caps too
	Now              func() time.Time // the caps' clock; time.Now when nil
}

// Verdict is a rule's rejection: Reason is a status reason ("" passes).
type Verdict struct {
	Reason string
	Detail string
}

func (r *Rules) now() time.Time {
	if r.Now == nil {
		return time.Now()
	}
	return r.Now()
}

func (r *Rules) capped(m envelope.Message) bool {
	return r.Caps != nil && (m.KindOrDefault() == envelope.Marketing || r.CapTransactional)
}

// Decide judges m (already prepared: To in E.164) and records it: the
// duplicate window is claimed and the caps counted when it passes them. A
// redelivery of a message decided before is judged the same and recorded
// nothing new. An error means nothing is known: retry.
func (r *Rules) Decide(ctx context.Context, m envelope.Message) (Verdict, error) {
	if v, err := r.static(ctx, m); err != nil || v.Reason != "" {
		return v, err
	}
	now := r.now()
	if r.capped(m) {
		// A number this instance already saw at its cap is refused without
		// a round trip (and without claiming the duplicate window).
		if v, ok := r.Caps.Known(m.To, m.ID, now); ok && v != caps.Pass {
			return capVerdict(v, r.Caps.Limits()), nil
		}
	}
	if r.Dedup != nil {
		owner, err := r.Dedup.Claim(ctx, m.To, m.Text, m.ID)
		if err != nil {
			return Verdict{}, err
		}
		if owner != "" {
			return duplicate(owner), nil
		}
	}
	if r.capped(m) {
		v, err := r.Caps.Take(ctx, m.To, m.ID, now)
		if err != nil {
			return Verdict{}, err
		}
		return capVerdict(v, r.Caps.Limits()), nil
	}
	return Verdict{}, nil
}

// static runs the rules that record nothing: blacklist and opt-out.
func (r *Rules) static(ctx context.Context, m envelope.Message) (Verdict, error) {
	if r.Blacklist != nil && r.Blacklist.Contains(m.To) {
		return Verdict{Reason: status.ReasonBlacklist, Detail: m.To + " is on the blacklist"}, nil
	}
	if r.OptOut != nil && m.KindOrDefault() == envelope.Marketing {
		out, err := r.OptOut.OptedOut(ctx, m.To)
		if err != nil {
			return Verdict{}, err
		}
		if out {
			return Verdict{Reason: status.ReasonOptedOut, Detail: m.To + " replied STOP to marketing messages"}, nil
		}
	}
	return Verdict{}, nil
}

func duplicate(owner string) Verdict {
	return Verdict{Reason: status.ReasonDuplicate, Detail: "the same text went to this number as message " + owner + " within the duplicate window"}
}

func capVerdict(v caps.Verdict, l caps.Limits) Verdict {
	switch v {
	case caps.OverDaily:
		return Verdict{Reason: status.ReasonDailyCP, Detail: "the number already had " + strconv.Itoa(l.Daily) + " message(s) today"}
	case caps.OverWeekly:
		return Verdict{Reason: status.ReasonWeeklyCP, Detail: "the number already had " + strconv.Itoa(l.Weekly) + " message(s) this week"}
	}
	return Verdict{}
}

// Preview judges the messages of one request in order, recording nothing:
// what Decide would say if they were queued now, one after another. Earlier
// messages of the request that would pass count against the later ones (the
// fourth message to a number with a cap of 3 fails even if none was sent
// before), and so do their (number, text) pairs.
type Preview struct {
	r       *Rules
	usage   map[string]caps.Usage // number -> usage read from the bucket plus this request's passes
	claimed map[string]string     // dedup key -> id of this request's message that would claim it
}

// NewPreview starts judging one request.
func (r *Rules) NewPreview() *Preview {
	return &Preview{r: r, usage: map[string]caps.Usage{}, claimed: map[string]string{}}
}

// ErrNoID is returned by Preview.Check for a message without an id.
var ErrNoID = errors.New("rules: message has no id")

// Check judges m (prepared, with its id) after the request's earlier messages.
func (p *Preview) Check(ctx context.Context, m envelope.Message) (Verdict, error) {
	if m.ID == "" {
		return Verdict{}, ErrNoID
	}
	r := p.r
	if v, err := r.static(ctx, m); err != nil || v.Reason != "" {
		return v, err
	}
	var key string
	if r.Dedup != nil {
		key = dedup.Key(m.To, m.Text)
		if owner, ok := p.claimed[key]; ok && owner != m.ID {
			return duplicate(owner), nil
		}
		owner, err := r.Dedup.Holder(ctx, m.To, m.Text)
		if err != nil {
			return Verdict{}, err
		}
		if owner != "" && owner != m.ID {
			return duplicate(owner), nil
		}
	}
	if r.capped(m) {
		u, ok := p.usage[m.To]
		if !ok {
			var counted bool
			var err error
			if u, counted, err = r.Caps.Peek(ctx, m.To, m.ID, r.now()); err != nil {
				return Verdict{}, err
			}
			if counted { // queued before (a request sent again): it passed then
				return Verdict{}, nil
			}
		}
		if v := capVerdict(r.Caps.Limits().Over(u), r.Caps.Limits()); v.Reason != "" {
			p.usage[m.To] = u
			return v, nil
		}
		u.Day++
		u.Week++
		p.usage[m.To] = u
	}
	if key != "" {
		p.claimed[key] = m.ID
	}
	return Verdict{}, nil
}
