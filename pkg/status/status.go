// Package status publishes and reads the status events of messages: one event
// per change on sms.status.<id> in the SMS_STATUS stream.
//
// Every message ends in exactly one terminal status. Publish makes that hold
// across stages, instances and crashes, and for as long as the stream keeps
// the history: every event is published with a compare-and-set on the
// message's subject (Nats-Expected-Last-Subject-Sequence) after reading the
// latest event, so once a terminal event is last nothing lands after it,
// even when writers race (a receipt for a duplicate submit against a
// permanent failure, say, or a replayed "queued" hours later). A Nats-Msg-Id
// derived from (id, status, attempt) drops quick replays on top.
package status

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/smsflow/smsflow/pkg/jspub"
)

// Statuses of DESIGN.md, and the history entries that are not statuses.
const (
	Accepted    = "accepted"
	Rejected    = "rejected"
	Scheduled   = "scheduled"
	Queued      = "queued"
	Submitted   = "submitted"
	Delivered   = "delivered"
	Undelivered = "undelivered"
	Expired     = "expired"
	Failed      = "failed"

	Retry         = "retry"
	Throttled     = "throttled"
	SubmitUnknown = "submit_unknown"

	// Released records that the server released a scheduled message to the
	// policy stage. It is written before the message is forwarded, with the
	// compare-and-set every event has, so a cancel (which must find
	// "scheduled" last) and a release never both win.
	Released = "released"
)

// Reasons for rejected, and for failed.
const (
	ReasonInvalid   = "invalid"
	ReasonBlacklist = "blacklist"
	ReasonOptedOut  = "opted_out"
	ReasonDuplicate = "duplicate"
	ReasonDailyCP   = "daily_cp"
	ReasonWeeklyCP  = "weekly_cp"
	ReasonNoRoute   = "no_route"
	ReasonCancelled = "cancelled" // a scheduled message cancelled before its send_at

	ReasonPermanent   = "permanent"    // the SMSC refused it for good
	ReasonMaxAttempts = "max_attempts" // retried as often as configured
)

// GivenBack starts the detail of the retry event egress writes when it
// gives a message back unsent (link paused or unbound, shutting down): a
// record that the delivery made no submit, not a submit's outcome.
const GivenBack = "given back before submit: "

// IsGiveBack reports whether ev is such a record.
func IsGiveBack(ev Event) bool {
	return ev.Status == Retry && strings.HasPrefix(ev.Detail, GivenBack)
}

// Terminal reports whether s ends a message's life.
func Terminal(s string) bool {
	switch s {
	case Rejected, Delivered, Undelivered, Expired, Failed:
		return true
	}
	return false
}

// rank orders a message's life: an event never lands after one of a later
// stage. Attempt records (retry, throttled, submit_unknown) sit with queued:
// they come between queued and submitted, in any order.
func rank(s string) int {
	switch {
	case Terminal(s):
		return 5
	case s == Submitted:
		return 4
	case s == Queued, s == Released, s == Retry, s == Throttled, s == SubmitUnknown:
		return 3
	case s == Scheduled:
		return 2
	default: // accepted
		return 1
	}
}

// Event is one status change, the JSON body on sms.status.<id>.
type Event struct {
	ID       string    `json:"id"`
	Status   string    `json:"status"`
	Reason   string    `json:"reason,omitempty"`
	Detail   string    `json:"detail,omitempty"`
	At       time.Time `json:"at"`
	Stage    string    `json:"stage,omitempty"`
	Campaign string    `json:"campaign,omitempty"`
	Pool     string    `json:"pool,omitempty"`
	Link     string    `json:"link,omitempty"`
	SMSCID   string    `json:"smsc_id,omitempty"`
	Parts    int       `json:"parts,omitempty"`
	Code     int       `json:"code,omitempty"`    // SMPP command_status, or the receipt's err
	Attempt  int       `json:"attempt,omitempty"` // delivery attempt of the stage that wrote it
	// CallbackURL is the envelope's callback_url, on the events policy
	// writes; the webhooks stage POSTs every status of the message there.
	CallbackURL string `json:"callback_url,omitempty"`
}

// Subject is the subject of a message's events.
func Subject(id string) string { return "sms.status." + id }

// ErrAlreadyFinal is returned by Publish for a terminal event when the message
// already has a terminal status: the event was not written. Callers treat it
// as done (ack), since the message's fate is settled.
var ErrAlreadyFinal = errors.New("status: message already has a terminal status")

// ErrNotFound is returned by Latest and History for an id with no events.
var ErrNotFound = errors.New("status: no such message")

// Publisher writes status events. It is safe for concurrent use.
type Publisher struct {
	js     jetstream.JetStream
	stream jetstream.Stream
}

// NewPublisher binds to the SMS_STATUS stream, which must exist.
func NewPublisher(ctx context.Context, js jetstream.JetStream) (*Publisher, error) {
	s, err := js.Stream(ctx, "SMS_STATUS")
	if err != nil {
		return nil, fmt.Errorf("status: stream SMS_STATUS: %w", err)
	}
	return &Publisher{js: js, stream: s}, nil
}

// casAttempts bounds the compare-and-set loop of a terminal event; each lost
// round means another event landed in between, which cannot go on for long.
const casAttempts = 8

// Publish writes ev (At defaults to now). Every event is written with a
// compare-and-set on the message's subject, after reading its latest event:
// nothing lands after a terminal one. A nil error means the event is in the
// stream, or was a replay the stream dropped, or was a non-terminal event for
// a message already final (dropped: history stays in order and the terminal
// status stays last); ErrAlreadyFinal means a terminal event lost to an
// earlier one; any other error means nothing is known and the caller should
// retry (nak).
func (p *Publisher) Publish(ctx context.Context, ev Event) error {
	_, err := p.PublishSeq(ctx, ev)
	return err
}

// PublishSeq is Publish, and returns the event's sequence in SMS_STATUS: 0
// when the event was not written (a replay, or a late non-terminal event),
// so a stage that publishes the message's next event can skip its read
// (PublishNext after it).
func (p *Publisher) PublishSeq(ctx context.Context, ev Event) (uint64, error) {
	msg, msgID, err := encode(ev)
	if err != nil {
		return 0, err
	}
	terminal := Terminal(ev.Status)
	for range casAttempts {
		var last uint64
		raw, err := p.stream.GetLastMsgForSubject(ctx, msg.Subject)
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
		case err != nil:
			return 0, fmt.Errorf("status: read last of %s: %w", ev.ID, err)
		default:
			if prev, err := DecodeEvent(raw.Data); err == nil {
				if terminal && Terminal(prev.Status) {
					return 0, ErrAlreadyFinal
				}
				if !terminal && rank(ev.Status) < rank(prev.Status) {
					// Late: "queued" racing egress's "submitted", or a replay.
					// The history keeps the stages in order, and "submitted"
					// stays what a redelivery finds.
					return 0, nil
				}
			}
			last = raw.Sequence
		}
		ack, err := p.js.PublishMsg(ctx, msg, jetstream.WithMsgID(msgID), jetstream.WithExpectLastSequencePerSubject(last))
		if wrongLast(err) {
			continue // someone wrote in between: look again
		}
		if err != nil {
			return 0, fmt.Errorf("status: publish %s %s: %w", ev.ID, ev.Status, err)
		}
		if ack.Duplicate {
			return 0, nil
		}
		return ack.Sequence, nil
	}
	return 0, fmt.Errorf("status: publish %s %s: lost the compare-and-set %d times", ev.ID, ev.Status, casAttempts)
}

// ErrNotNext is returned by PublishNext when the message's latest event is
// not the one the caller expected: nothing was written.
var ErrNotNext = errors.New("status: the message's latest event is not the one expected")

// PublishNext writes ev on the condition that the message's latest event is
// the one at sequence after (0: that the message has no event yet), and
// returns the new event's sequence. It is Publish without the read before
// the write, for a stage that knows what it wrote last (the sequence
// PublishNext returned) or that the message is new: one round trip instead of
// two. Any doubt gives ErrNotNext and writes nothing: another event landed in
// between, or the stream dropped the event as a replay (a redelivery whose
// first attempt got this far), and the caller takes the careful path (Latest,
// then Publish).
func (p *Publisher) PublishNext(ctx context.Context, ev Event, after uint64) (uint64, error) {
	msg, msgID, err := encode(ev)
	if err != nil {
		return 0, err
	}
	// The hot path of every stage that writes events: jspub, not the
	// jetstream package, for the CPU.
	ack, err := jspub.Publish(ctx, p.js.Conn(), msg, jspub.Options{MsgID: msgID, Expect: true, ExpectLast: after})
	if wrongLast(err) {
		return 0, ErrNotNext
	}
	if err != nil {
		return 0, fmt.Errorf("status: publish %s %s: %w", ev.ID, ev.Status, err)
	}
	if ack.Duplicate {
		return 0, ErrNotNext
	}
	return ack.Sequence, nil
}

// PublishAfter writes ev right after the event at sequence after, the one
// the caller wrote or was told of, without reading it back (PublishNext,
// one round trip); when after is not known (0), or another event landed in
// between (or ev was written already), it takes Publish's careful path: a
// read, then a compare-and-set, which also tells a message already final.
func (p *Publisher) PublishAfter(ctx context.Context, ev Event, after uint64) error {
	if after != 0 {
		if _, err := p.PublishNext(ctx, ev, after); !errors.Is(err, ErrNotNext) {
			return err
		}
	}
	return p.Publish(ctx, ev)
}

// encode is ev's message on its subject (At defaults to now) and its
// Nats-Msg-Id: one per (id, status, attempt), and one terminal per message.
func encode(ev Event) (*nats.Msg, string, error) {
	if ev.At.IsZero() {
		ev.At = time.Now().UTC()
	}
	data, err := EncodeEvent(ev)
	if err != nil {
		return nil, "", err
	}
	msgID := eventMsgID(ev)
	if Terminal(ev.Status) {
		msgID = ev.ID + ".final"
	}
	return &nats.Msg{Subject: Subject(ev.ID), Data: data}, msgID, nil
}

// wrongLast reports whether err is the server refusing a write because the
// subject's last sequence was not the one expected.
func wrongLast(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

func eventMsgID(ev Event) string {
	id := ev.ID + "." + ev.Status
	if ev.Attempt > 0 {
		id += "." + strconv.Itoa(ev.Attempt)
	}
	return id
}

// Latest returns the newest event of a message.
func (p *Publisher) Latest(ctx context.Context, id string) (Event, error) {
	raw, err := p.stream.GetLastMsgForSubject(ctx, Subject(id))
	return decodeOne(raw, err, "latest", id)
}

// decodeOne is the event of a direct get's answer (raw, err), named what for
// errors: ErrNotFound when the message has none.
func decodeOne(raw *jetstream.RawStreamMsg, err error, what, id string) (Event, error) {
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return Event{}, ErrNotFound
	}
	if err != nil {
		return Event{}, fmt.Errorf("status: %s of %s: %w", what, id, err)
	}
	ev, err := DecodeEvent(raw.Data)
	if err != nil {
		return Event{}, fmt.Errorf("status: %s of %s: %w", what, id, err)
	}
	return ev, nil
}

// History returns every event of a message, oldest first, up to max events.
// It walks the message's subject with direct gets (next message on the
// subject from a sequence), one request per event: no consumer is made, so a
// dashboard polling it every second leaves nothing behind on the server.
func (p *Publisher) History(ctx context.Context, id string, max int) ([]Event, error) {
	var out []Event
	for seq := uint64(1); len(out) < max; {
		raw, err := p.stream.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(Subject(id)))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return out, fmt.Errorf("status: history of %s: %w", id, err)
		}
		if ev, err := DecodeEvent(raw.Data); err == nil {
			out = append(out, ev)
		}
		seq = raw.Sequence + 1
	}
	if len(out) == 0 {
		return nil, ErrNotFound
	}
	return out, nil
}

// First returns the oldest event of a message still in the stream: the one
// policy wrote, with its campaign and callback_url, which later stages' events
// may leave out. One direct get.
func (p *Publisher) First(ctx context.Context, id string) (Event, error) {
	raw, err := p.stream.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(Subject(id)))
	return decodeOne(raw, err, "first", id)
}
