package receipts

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/smsflow/smsflow/pkg/dlr"
)

// Metrics of the receipts stage.
type Metrics struct {
	results  *prometheus.CounterVec
	states   *prometheus.CounterVec
	parts    *prometheus.CounterVec
	timeouts *prometheus.CounterVec
	parked   prometheus.Counter
}

// NewMetrics registers the stage's metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	f := promauto.With(reg)
	m := &Metrics{
		results: f.NewCounterVec(prometheus.CounterOpts{
			Namespace: "smsflow", Subsystem: "receipts", Name: "processed_total",
			Help: "Receipts processed, by result: delivered, undelivered, expired (the message's terminal status), part (a final receipt of one part of a long message whose other parts are not all in), intermediate, duplicate (message already final), orphan (no such submit), invalid.",
		}, []string{"result"}),
		states: f.NewCounterVec(prometheus.CounterOpts{
			Namespace: "smsflow", Subsystem: "receipts", Name: "states_total",
			Help: "Receipts read, by the state they report: delivered, undelivered, expired, rejected, enroute, unknown.",
		}, []string{"state"}),
		parts: f.NewCounterVec(prometheus.CounterOpts{
			Namespace: "smsflow", Subsystem: "receipts", Name: "parts_total",
			Help: "Final receipts of parts of long messages, by result: recorded (first final receipt of the part), duplicate (the part already had one).",
		}, []string{"result"}),
		timeouts: f.NewCounterVec(prometheus.CounterOpts{
			Namespace: "smsflow", Subsystem: "receipts", Name: "timeouts_total",
			Help: "Receipt timeouts (armed by egress at each submit), by result: dropped (the final receipt came first), drop_failed (could not be dropped; it will fire and settle), expired (it fired and ended the message expired, reason no_receipt), settled (it fired after the message was already final).",
		}, []string{"result"}),
		parked: f.NewCounter(prometheus.CounterOpts{
			Namespace: "smsflow", Subsystem: "receipts", Name: "parked_total",
			Help: "Receipts without an index entry parked in SMS_RECEIPT_TIMERS to be looked at again (once per look), so they do not hold the consumer's ack-pending slots.",
		}),
	}
	for _, r := range []string{"delivered", "undelivered", "expired", "part", "intermediate", "duplicate", "orphan", "invalid"} {
		m.results.WithLabelValues(r)
	}
	for _, s := range []dlr.State{dlr.Delivered, dlr.Undelivered, dlr.Expired, dlr.Rejected, dlr.Enroute, dlr.Unknown} {
		m.states.WithLabelValues(string(s))
	}
	for _, r := range []string{"recorded", "duplicate"} {
		m.parts.WithLabelValues(r)
	}
	for _, r := range []string{"dropped", "drop_failed", "expired", "settled"} {
		m.timeouts.WithLabelValues(r)
	}
	return m
}
