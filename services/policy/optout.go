package policy

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/smsflow/smsflow/pkg/consume"
	"github.com/smsflow/smsflow/pkg/mo"
	"github.com/smsflow/smsflow/pkg/optout"
	"github.com/smsflow/smsflow/streams"
)

// OptOuts reads the replies on sms.inbound.<link> (SMS_INBOUND, durable
// consumer policy-optout) and records STOP and START in KV sms_optout. It
// runs beside the stage; every instance may run one, they share the
// consumer. Replies are recorded with their stream sequence, so the last
// reply wins even when two are handled at once.
type OptOuts struct {
	js     jetstream.JetStream
	store  *optout.Store
	words  atomic.Pointer[optout.Keywords] // SetKeywords swaps them (reload.go)
	region string
	log    *slog.Logger
	m      *Metrics
}

// NewOptOuts makes the reader; region reads national sender numbers.
func NewOptOuts(js jetstream.JetStream, store *optout.Store, words optout.Keywords, region string, log *slog.Logger, m *Metrics) *OptOuts {
	o := &OptOuts{js: js, store: store, region: region, log: log, m: m}
	o.SetKeywords(words)
	return o
}

// Run consumes until ctx is done.
func (o *OptOuts) Run(ctx context.Context) error {
	cons, err := o.js.Consumer(ctx, streams.Inbound, streams.ConsumerOptOut)
	if err != nil {
		return fmt.Errorf("policy: opt-out consumer: %w", err)
	}
	return consume.Run(ctx, cons, o.handle, consume.Options{Batch: 64, Concurrency: 4, Log: o.log})
}

func (o *OptOuts) handle(ctx context.Context, msg jetstream.Msg) consume.Outcome {
	md, err := msg.Metadata()
	if err != nil {
		return consume.Term("no metadata: " + err.Error())
	}
	var rec mo.Message
	if err := json.Unmarshal(msg.Data(), &rec); err != nil {
		o.m.inbound.WithLabelValues("invalid").Inc()
		o.log.Warn("inbound message is not a record; skipped", "seq", md.Sequence.Stream, "err", err)
		return consume.Term("not an inbound record: " + err.Error())
	}
	action := o.words.Load().Classify(rec.Text)
	if action == optout.None {
		o.m.inbound.WithLabelValues("other").Inc()
		return consume.Ack()
	}
	number, err := optout.Sender(rec.From, o.region)
	if err != nil {
		o.m.inbound.WithLabelValues("invalid").Inc()
		o.log.Warn("STOP/START from a number that cannot be read; skipped", "seq", md.Sequence.Stream, "link", rec.Link, "err", err)
		return consume.Term("sender: " + err.Error())
	}
	r := optout.Record{OptedOut: action == optout.Stop, Seq: md.Sequence.Stream, At: rec.ReceivedAt, Link: rec.Link}
	if err := o.store.Set(ctx, number, r); err != nil {
		o.m.retries.Inc()
		o.log.Warn("opt-out not recorded, retrying", "seq", md.Sequence.Stream, "err", err)
		return consume.Retry(consume.Backoff(msg, 200*time.Millisecond, 30*time.Second))
	}
	result := "start"
	if r.OptedOut {
		result = "stop"
	}
	o.m.inbound.WithLabelValues(result).Inc()
	o.log.Info("opt-out recorded", "opted_out", r.OptedOut, "link", rec.Link, "seq", md.Sequence.Stream)
	return consume.Ack()
}
