package egress

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/smsflow/smsflow/pkg/consume"
	"github.com/smsflow/smsflow/pkg/envelope"
	"github.com/smsflow/smsflow/pkg/status"
	"github.com/smsflow/smsflow/streams"
)

// A message that the SMSC may have without our knowing (the process died
// mid-submit, the connection dropped before the response, it accepted some
// parts) comes back as a redelivery and is submitted again: that submit may
// deliver it twice. The process that submitted first may be gone (kill -9)
// with its counters, so the one that submits again counts it, in
// resubmits_unknown_total, and logs it (ResubmitLog).
//
// It tells from the message's latest status, which a redelivery reads anyway
// (redelivered), so the hot path pays nothing. Every delivery that ends
// without a submit or with a known refusal leaves a record of it in the
// history, an egress event with the delivery's attempt:
//   - retry or throttled: the SMSC answered with an error (0x14, 0x58, ...);
//     parts is how many parts of a long message it had accepted before;
//   - retry with detail "given back ...": the message went back unsent
//     (link paused or unbound, shutdown), recorded by giveBack.
// A delivery that leaves none may have reached the SMSC: the process died
// or lost NATS, or the outcome was submit_unknown. So a submit at delivery
// n is risky unless the latest event is such a record of delivery n-1
// (unknownBefore). A give-back records itself only when the message was not
// risky when it came (else the gap must stay for the next delivery to see),
// so records chain: each risky state is counted at the next submit, once.
//
// It over-counts a message a dead process held without submitting it (at
// most the window per death) and one whose record could not be written
// (NATS unreachable); it never misses a submit that can double, since each
// accepted submit that is not the first follows a delivery with no record
// of a known refusal, and the first submit after that delivery is counted.

// ResubmitLog is the log line of every counted resubmit (warn level): a
// count that outlives the process, which the crash tests read.
const ResubmitLog = "submitting again a message whose earlier submit may have reached the SMSC: it may be delivered twice"

// unknownBefore reports whether a submit at delivery attempt may send the
// message a second time, given its latest status event: whether an earlier
// delivery may have reached the SMSC without a record of its refusal.
func unknownBefore(attempt int, latest status.Event) bool {
	if attempt <= 1 {
		return false
	}
	refused := latest.Stage == "egress" && latest.Attempt == attempt-1 && latest.Parts == 0 &&
		(latest.Status == status.Retry || latest.Status == status.Throttled)
	return !refused
}

// countResubmit counts and logs a risky submit, before it is made (a kill
// between the two is counted again by the next process: over, not under).
func (s *Stage) countResubmit(lo LinkOptions, m envelope.Message, attempt int, log *slog.Logger) {
	log.Warn(ResubmitLog, "msg_id", m.ID, "attempt", attempt)
	s.m.resubmitsUnknown.WithLabelValues(lo.Name).Inc()
}

// giveBack returns msg to its lane unsent, after delay, and records that
// (recordGiveBack). pr is the message's prepare result, nil when it has not
// been prepared.
func (s *Stage) giveBack(ctx context.Context, lo LinkOptions, msg jetstream.Msg, pr *prepared, delay time.Duration, why string, log *slog.Logger) {
	if pr != nil {
		s.recordGiveBack(ctx, lo, pr.m, pr.attempt, pr.risky, why, log)
	} else if m, attempt, risky, ok := s.riskOf(ctx, msg); ok {
		s.recordGiveBack(ctx, lo, m, attempt, risky, why, log)
	}
	s.settle(ctx, msg, consume.Retry(delay), log)
}

// riskOf decodes a message that was not prepared and reads, for a
// redelivery, whether it is risky (one extra read, only on this rare path).
// ok is false for a poison message (prepare terminates it when it comes).
func (s *Stage) riskOf(ctx context.Context, msg jetstream.Msg) (m envelope.Message, attempt int, risky, ok bool) {
	md, err := msg.Metadata()
	if err != nil {
		return m, 0, false, false
	}
	if m, err = envelope.Decode(msg.Data()); err != nil || !envelope.ValidID(m.ID) {
		return m, 0, false, false
	}
	attempt = int(md.NumDelivered)
	if attempt > 1 {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		ev, err := s.pub.Latest(rctx, m.ID)
		// Not found or unreadable: risky, so no record is written and the
		// next delivery decides for itself.
		risky = err != nil || unknownBefore(attempt, ev)
	}
	return m, attempt, risky, true
}

// recordGiveBack records that delivery attempt of m ends unsent: a retry
// event whose detail starts with status.GivenBack, which tells the next delivery
// that this one did not reach the SMSC. A risky message gets none: the
// delivery before may have reached it, and the next one must still count.
// It is written even past the shutdown grace (briefly); if it cannot be,
// the next delivery counts a resubmit that was not one.
func (s *Stage) recordGiveBack(ctx context.Context, lo LinkOptions, m envelope.Message, attempt int, risky bool, why string, log *slog.Logger) {
	if risky {
		return
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	ev := status.Event{ID: m.ID, Status: status.Retry, Stage: "egress", Campaign: m.Campaign, Pool: lo.Pool, Link: lo.Name,
		Attempt: attempt, Detail: status.GivenBack + why}
	if err := s.pub.Publish(rctx, ev); err != nil && !errors.Is(err, status.ErrAlreadyFinal) {
		log.Warn("could not record a give-back; its next delivery counts as a possible duplicate", "msg_id", m.ID, "err", err)
	}
}

// A NATS server killed with its process (the embedded one, under kill -9)
// loses the last moments of its consumers' state (it writes it at most
// every 100 ms): the messages the dead process had just fetched come back
// as first deliveries, at once, ahead of every message never delivered.
// Its last acks may be forgotten too: those messages come back the same
// way, already submitted. So after an unclean stop, the first deliveries of
// each lane are checked like redeliveries: acked when already submitted or
// final, else submitted and counted as risky, until as many have been
// submitted as this process's windows on the lane (a dead process held no
// more in flight). Those that were in fact new are over-counted, at most
// that window per lane per unclean start.
//
// The stop was unclean when runningKey is still in sms_links at start: Run
// puts it and deletes it when it stops cleanly. Another instance running
// at the same time leaves it too (one more over-count of a window); with
// an external NATS server the consumers' state survives a process kill,
// and its in-flight messages come back as redeliveries anyway.

// runningKey is in sms_links while an egress stage runs.
const runningKey = "egress.running"

// markRunning puts runningKey and, when it was there already, arms the
// first-delivery checks.
func (s *Stage) markRunning(ctx context.Context) {
	_, err := s.linksKV.Get(ctx, runningKey)
	unclean := err == nil
	if _, err := s.linksKV.Put(ctx, runningKey, []byte(s.instance)); err != nil {
		s.log.Warn("cannot mark egress running; a kill now goes unnoticed at the next start", "err", err)
	}
	s.firstChecks = map[string]*atomic.Int64{}
	if !unclean {
		return
	}
	total := int64(0)
	for _, lo := range s.links {
		w := int64(max(lo.SMPP.Window, 1) * max(lo.SMPP.Sessions, 1))
		for _, subj := range []string{streams.EgressSubject(lo.Pool), streams.PrioritySubject(lo.Pool)} {
			if s.firstChecks[subj] == nil {
				s.firstChecks[subj] = &atomic.Int64{}
			}
			s.firstChecks[subj].Add(w)
			total += w
		}
	}
	s.log.Warn("egress did not stop cleanly last time: its first deliveries are checked, and counted as possible duplicates", "checks", total)
}

// markStopped deletes runningKey: this stage stopped cleanly, every
// message in hand given back.
func (s *Stage) markStopped(ctx context.Context) {
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if err := s.linksKV.Delete(dctx, runningKey); err != nil {
		s.log.Warn("cannot mark egress stopped; the next start checks its first deliveries", "err", err)
	}
}

// firstCheck reports whether a first delivery on subject is one of the
// first after an unclean stop, and takes one check of the lane's window.
func (s *Stage) firstCheck(subject string) bool {
	c := s.firstChecks[subject]
	if c == nil || c.Load() <= 0 {
		return false
	}
	if c.Add(-1) < 0 {
		c.Add(1)
		return false
	}
	return true
}

// firstCheckUndo gives back the check of a first delivery found already
// submitted or final (or unreadable): the server forgot its ack, not a
// delivery in flight, and there may be many of those (100 ms of acks).
// Only the ones that will be submitted use up the window, so the checks go
// on past them to the messages that were in flight.
func (s *Stage) firstCheckUndo(subject string) {
	if c := s.firstChecks[subject]; c != nil {
		c.Add(1)
	}
}
