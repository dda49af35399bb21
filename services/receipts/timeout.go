package receipts

import (
	"context"
	"errors"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/smsflow/smsflow/pkg/consume"
	"github.com/smsflow/smsflow/pkg/dlr"
	"github.com/smsflow/smsflow/pkg/status"
)

// Receipt timeouts: egress arms one per submit (dlr.ArmTimeout), this
// stage drops it when the final receipt is in (dropTimer) and ends the
// message expired, reason no_receipt, when it fires first (handleDue). Both
// sides publish through status.Publish, whose compare-and-set lets exactly
// one terminal status in: a receipt that comes after the timeout is counted
// as a duplicate, a timeout that fires after the receipt is counted as
// settled.

// ReasonNoReceipt is the reason of the expired status a receipt timeout
// gives: the SMSC took the message but never said what became of it.
const ReasonNoReceipt = "no_receipt"

// dropTimer removes the pending receipt timeout of a message its receipt
// settled. A failure is counted and left: the timer then fires and is
// counted as settled, which changes nothing.
func (s *Stage) dropTimer(ctx context.Context, id string) {
	if err := dlr.DropTimeout(ctx, s.timers, id); err != nil {
		s.m.timeouts.WithLabelValues("drop_failed").Inc()
		s.log.Warn("cannot drop a settled receipt timeout; it will fire and change nothing", "msg_id", id, "err", err)
		return
	}
	s.m.timeouts.WithLabelValues("dropped").Inc()
}

// handleDue ends a message whose receipt timeout fired: expired, reason
// no_receipt, unless it is final already.
func (s *Stage) handleDue(ctx context.Context, msg jetstream.Msg) consume.Outcome {
	sub, err := status.DecodeEvent(msg.Data())
	if err != nil || sub.ID == "" {
		s.log.Error("receipt timer unreadable, skipped", "subject", msg.Subject(), "err", err)
		return consume.Term("unreadable receipt timer")
	}
	ev := status.Event{ID: sub.ID, Status: status.Expired, Reason: ReasonNoReceipt, Stage: "receipts",
		Campaign: sub.Campaign, Pool: sub.Pool, Link: sub.Link, SMSCID: sub.SMSCID, Parts: sub.Parts,
		Detail: "no final receipt within " + s.opts.ReceiptTimeout.String()}
	err = s.pub.Publish(ctx, ev)
	switch {
	case errors.Is(err, status.ErrAlreadyFinal):
		s.m.timeouts.WithLabelValues("settled").Inc()
		return consume.Ack()
	case err != nil:
		return consume.Retry(consume.Backoff(msg, s.opts.BackoffMin, s.opts.BackoffMax))
	}
	s.m.timeouts.WithLabelValues("expired").Inc()
	s.log.Info("no receipt in time: expired", "msg_id", sub.ID, "link", sub.Link, "smsc_id", sub.SMSCID)
	return consume.Ack()
}
