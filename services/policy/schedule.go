package policy

// Scheduled sending: a message whose send_at is in the future is held by the
// server's message scheduling (Nats-Schedule, nats-server 2.12+), not by a
// timer here. The first time policy sees it, it publishes the envelope as a
// schedule on sms.scheduled.<id> of SMS_OUTBOUND:
//
//	Nats-Schedule:        @at <send_at, UTC, to the nanosecond>
//	Nats-Schedule-Target: sms.outbound
//	Nats-TTL:             never   (the stream's max age must not drop it)
//	Nats-Msg-Id:          schedule:<id>
//
// then the `scheduled` status, then acks. At send_at the server stores a copy
// on sms.outbound (the schedule's headers minus Nats-Schedule*, Nats-Msg-Id
// and Nats-TTL, plus Nats-Scheduler: sms.scheduled.<id> and
// Nats-Schedule-Next: purge) and purges the schedule in the same step. That
// copy is a release: policy writes `released`, then runs the checks as for
// any message, so caps count at release, not when the message was queued.
//
// A release is never held again, whatever its send_at says against this
// process's clock: the server's clock decided. A cancel (the HTTP API) only
// wins against a `scheduled` latest status with a compare-and-set, and the
// release writes `released` with the same compare-and-set before it
// forwards, so exactly one of them wins.

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/smsflow/smsflow/pkg/consume"
	"github.com/smsflow/smsflow/pkg/envelope"
	"github.com/smsflow/smsflow/pkg/status"
	"github.com/smsflow/smsflow/streams"
)

// Headers of the server's message scheduling (ADR-51).
const (
	hdrSchedule       = "Nats-Schedule"
	hdrScheduleTarget = "Nats-Schedule-Target"
	hdrScheduler      = "Nats-Scheduler" // on a release: the schedule's subject
	hdrTTL            = "Nats-TTL"
)

// releaseTarget is where the server puts a released message: the subject
// producers publish on, so it goes through policy like any other message.
const releaseTarget = "sms.outbound"

// scheduleMsgID is the Nats-Msg-Id of id's schedule: a redelivery of the
// message that was held (a crash between the schedule and the ack) does not
// schedule it twice within SMS_OUTBOUND's dedup window, even after the first
// schedule has fired and been purged.
func scheduleMsgID(id string) string { return "schedule:" + id }

// isRelease reports whether msg is a copy the server made from a schedule.
func isRelease(msg jetstream.Msg) bool {
	return strings.HasPrefix(msg.Headers().Get(hdrScheduler), "sms.scheduled.")
}

// releasing reports whether msg is a release whose latest status says it is
// still on its way: `scheduled`, or `released` by an attempt that did not
// finish. Every other status means the release was handled or cancelled.
func releasing(msg jetstream.Msg, latest string) bool {
	return (latest == status.Scheduled || latest == status.Released) && isRelease(msg)
}

// hold decides whether m waits for its send_at. It is called once m is valid
// and before any check. held is true when o settles the message: it was
// scheduled, or it is a release that was cancelled in the meantime. A
// release that goes on is marked `released` first.
func (s *Stage) hold(ctx context.Context, msg jetstream.Msg, m envelope.Message) (o consume.Outcome, held bool) {
	if isRelease(msg) {
		return s.release(ctx, msg, m)
	}
	if m.SendAt.IsZero() || !m.SendAt.After(s.now()) {
		return o, false
	}
	data, err := envelope.Encode(m)
	if err == nil && len(data) > maxForwardBytes {
		err = fmt.Errorf("envelope is %d bytes once encoded, more than %d", len(data), maxForwardBytes)
	}
	if err != nil {
		return s.reject(ctx, msg, m, status.ReasonInvalid, err.Error()), true
	}
	if err := s.schedule(ctx, m, data); err != nil {
		return s.retry(msg, err), true
	}
	at := m.SendAt.UTC().Format(time.RFC3339Nano)
	if err := s.pub.Publish(ctx, status.Event{ID: m.ID, Status: status.Scheduled, Stage: "policy", Campaign: m.Campaign, Detail: "until " + at}); err != nil {
		return s.retry(msg, err), true
	}
	s.m.out.WithLabelValues("scheduled").Inc()
	s.log.Debug("message scheduled", "msg_id", m.ID, "send_at", at)
	return consume.Ack(), true
}

// schedule publishes m, encoded as data, as a schedule that the server
// releases to sms.outbound at m.SendAt.
func (s *Stage) schedule(ctx context.Context, m envelope.Message, data []byte) error {
	h := nats.Header{}
	// @at is read as RFC 3339, fractions of a second included: the release
	// is not rounded to the second.
	h.Set(hdrSchedule, "@at "+m.SendAt.UTC().Format(time.RFC3339Nano))
	h.Set(hdrScheduleTarget, releaseTarget)
	h.Set(hdrTTL, "never")
	_, err := s.js.PublishMsg(ctx, &nats.Msg{Subject: streams.ScheduledSubject(m.ID), Header: h, Data: data}, jetstream.WithMsgID(scheduleMsgID(m.ID)))
	if err != nil {
		return fmt.Errorf("schedule %s at %s: %w", m.ID, m.SendAt.Format(time.RFC3339Nano), err)
	}
	return nil
}

// release marks a released message `released` and reports whether a cancel
// got there first. Publish writes with a compare-and-set on the latest
// event; a cancel writes its terminal event only on top of `scheduled`, also
// by compare-and-set. So after the write, a terminal latest status means the
// cancel won and the message must not go on; anything else means it can no
// longer be cancelled.
func (s *Stage) release(ctx context.Context, msg jetstream.Msg, m envelope.Message) (o consume.Outcome, held bool) {
	if err := s.pub.Publish(ctx, status.Event{ID: m.ID, Status: status.Released, Stage: "policy", Campaign: m.Campaign}); err != nil {
		return s.retry(msg, err), true
	}
	latest, err := s.pub.Latest(ctx, m.ID)
	if err != nil {
		return s.retry(msg, err), true
	}
	if status.Terminal(latest.Status) {
		s.m.out.WithLabelValues("already_handled").Inc()
		s.log.Info("released message was cancelled; not sent", "msg_id", m.ID, "status", latest.Status, "reason", latest.Reason)
		return consume.Ack(), true
	}
	return o, false
}
