package egress

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Metrics of the egress stage, registered on the registry passed in.
type Metrics struct {
	submits              *prometheus.CounterVec
	retries              *prometheus.CounterVec
	throttles            *prometheus.CounterVec
	duplicatesRisked     *prometheus.CounterVec
	final                *prometheus.CounterVec
	poison               *prometheus.CounterVec
	receipts             *prometheus.CounterVec
	heldTwice            *prometheus.CounterVec
	inbound              *prometheus.CounterVec
	redeliveredSubmitted *prometheus.CounterVec
	resubmitsUnknown     *prometheus.CounterVec
	bound                *prometheus.GaugeVec
	paused               *prometheus.GaugeVec
	rate                 *prometheus.GaugeVec
}

// NewMetrics registers the stage's metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	f := promauto.With(reg)
	vec := func(name, help string, labels ...string) *prometheus.CounterVec {
		return f.NewCounterVec(prometheus.CounterOpts{Namespace: "smsflow", Subsystem: "egress", Name: name, Help: help}, labels)
	}
	gauge := func(name, help string) *prometheus.GaugeVec {
		return f.NewGaugeVec(prometheus.GaugeOpts{Namespace: "smsflow", Subsystem: "egress", Name: name, Help: help}, []string{"link"})
	}
	return &Metrics{
		bound:                gauge("link_bound", "1 while the link's SMPP session is bound, else 0."),
		paused:               gauge("link_paused", "1 while an operator has paused the link (sms_links control.<link>), else 0."),
		rate:                 gauge("link_rate", "The link's effective submit rate per second: configured, lowered after throttles."),
		submits:              vec("submits_total", "submit_sm attempts by link and result (ok, throttled, retryable, permanent).", "link", "result"),
		retries:              vec("retries_total", "Messages given back to the broker for another attempt, by link.", "link"),
		throttles:            vec("throttles_total", "submit_sm answered ESME_RTHROTTLED (0x58), by link.", "link"),
		duplicatesRisked:     vec("duplicates_risked_total", "Submits whose outcome is unknown (no response, or accepted but not recorded), or long messages refused after some parts were accepted: a retry may deliver twice.", "link"),
		final:                vec("final_total", "Terminal statuses written by egress, by link and status (failed, expired).", "link", "status"),
		poison:               vec("poison_total", "Messages on sms.egress that are not valid envelopes, terminated.", "link"),
		receipts:             vec("receipts_stored_total", "deliver_sm receipts stored in SMS_DLR before deliver_sm_resp, by link.", "link"),
		heldTwice:            vec("held_twice_total", "First deliveries of a message this process still held (a restarted NATS server forgot it had delivered it): given back until the held one settles, not submitted beside it.", "link"),
		inbound:              vec("inbound_stored_total", "Mobile-originated deliver_sm stored in SMS_INBOUND, by link.", "link"),
		redeliveredSubmitted: vec("redelivered_submitted_total", "Messages redelivered after the SMSC had accepted them (lost ack, crash): acked, not sent again.", "link"),
		resubmitsUnknown: vec("resubmits_unknown_total", "Submits of a message that an earlier submit may have delivered without a record of it (redelivered after a crash or lost connection mid-submit, submit_unknown, parts accepted; "+
			"or among the first deliveries after an unclean stop, which a killed embedded NATS server may have forgotten): each may deliver it twice. Counted by the process that submits again, so it outlives the one that submitted first.", "link"),
	}
}

// touch creates the series of a link at 0, so dashboards see them from start.
func (m *Metrics) touch(link string) {
	for _, r := range []string{"ok", "throttled", "retryable", "permanent"} {
		m.submits.WithLabelValues(link, r)
	}
	for _, st := range []string{"failed", "expired"} {
		m.final.WithLabelValues(link, st)
	}
	for _, v := range []*prometheus.CounterVec{m.retries, m.throttles, m.duplicatesRisked, m.poison, m.receipts, m.heldTwice, m.inbound, m.redeliveredSubmitted, m.resubmitsUnknown} {
		v.WithLabelValues(link)
	}
	for _, g := range []*prometheus.GaugeVec{m.bound, m.paused, m.rate} {
		g.WithLabelValues(link)
	}
}
