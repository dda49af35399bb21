package dashboard

import (
	"context"
	"errors"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// Queue is one durable consumer's backlog, as the server reports it.
type Queue struct {
	Stream      string `json:"stream"`
	Consumer    string `json:"consumer"`
	Pending     uint64 `json:"pending"`     // in the stream, not yet delivered to the consumer
	AckPending  int    `json:"ack_pending"` // delivered, not yet acknowledged (being worked on)
	Redelivered int    `json:"redelivered"` // delivered more than once and not yet acknowledged
}

// Stream is one stream's size.
type Stream struct {
	Name     string `json:"stream"`
	Messages uint64 `json:"messages"`
	Bytes    uint64 `json:"bytes"`
}

// Queues reads the streams and their durable consumers from the server. It
// is read on demand (a scrape, a dashboard request) with a timeout, and the
// answer is reused for MaxAge, so a scrape and many open dashboards cost the
// server one round of requests a second. A scrape on demand rather than a
// sampler goroutine: nothing runs when nobody looks, and the figure is as
// fresh as MaxAge.
type Queues struct {
	js      jetstream.JetStream
	names   []string
	timeout time.Duration
	maxAge  time.Duration
	now     func() time.Time

	mu      sync.Mutex
	at      time.Time
	streams []Stream
	queues  []Queue
	err     error

	errors prometheus.Counter
}

// NewQueues reads the given streams; its metrics go on reg.
func NewQueues(js jetstream.JetStream, streamNames []string, reg prometheus.Registerer) *Queues {
	q := &Queues{js: js, names: streamNames, timeout: 2 * time.Second, maxAge: time.Second, now: time.Now,
		errors: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "smsflow", Subsystem: "queue", Name: "read_errors_total",
			Help: "Failed reads of stream or consumer info (the queue gauges of that scrape miss the stream)."})}
	reg.MustRegister(q) // its Collect sends errors, after the read that may count one
	return q
}

// Read returns the streams and durable consumers, at most MaxAge old. An
// error names what could not be read; what could be read is returned too.
func (q *Queues) Read(ctx context.Context) ([]Stream, []Queue, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.at.IsZero() && q.now().Sub(q.at) < q.maxAge {
		return q.streams, q.queues, q.err
	}
	ctx, cancel := context.WithTimeout(ctx, q.timeout)
	defer cancel()
	var (
		streams []Stream
		queues  []Queue
		errs    []error
	)
	for _, name := range q.names {
		st, err := q.js.Stream(ctx, name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		info := st.CachedInfo()
		streams = append(streams, Stream{Name: name, Messages: info.State.Msgs, Bytes: info.State.Bytes})
		lister := st.ListConsumers(ctx)
		for ci := range lister.Info() {
			// Only durable consumers: ephemeral ones (ordered readers such
			// as the status observer and GET /v1/messages/{id}) come and go
			// under random names, which would be unbounded label values.
			if ci.Config.Durable == "" {
				continue
			}
			queues = append(queues, Queue{Stream: name, Consumer: ci.Name, Pending: ci.NumPending,
				AckPending: ci.NumAckPending, Redelivered: ci.NumRedelivered})
		}
		if err := lister.Err(); err != nil {
			errs = append(errs, err)
		}
	}
	sort.Slice(queues, func(i, j int) bool {
		if queues[i].Stream != queues[j].Stream {
			return queues[i].Stream < queues[j].Stream
		}
		return queues[i].Consumer < queues[j].Consumer
	})
	q.at, q.streams, q.queues, q.err = q.now(), streams, queues, errors.Join(errs...)
	if q.err != nil {
		q.errors.Inc()
	}
	return streams, queues, q.err
}

var (
	queuePendingDesc = prometheus.NewDesc("smsflow_queue_pending_messages",
		"Messages in the stream not yet delivered to the durable consumer.", []string{"stream", "consumer"}, nil)
	queueAckPendingDesc = prometheus.NewDesc("smsflow_queue_ack_pending_messages",
		"Messages delivered to the durable consumer and not yet acknowledged.", []string{"stream", "consumer"}, nil)
	queueRedeliveredDesc = prometheus.NewDesc("smsflow_queue_redelivered_messages",
		"Messages delivered to the durable consumer more than once and not yet acknowledged.", []string{"stream", "consumer"}, nil)
	streamMessagesDesc = prometheus.NewDesc("smsflow_stream_messages",
		"Messages stored in the stream.", []string{"stream"}, nil)
	streamBytesDesc = prometheus.NewDesc("smsflow_stream_bytes",
		"Bytes stored in the stream.", []string{"stream"}, nil)
)

// Describe implements prometheus.Collector.
func (q *Queues) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{queuePendingDesc, queueAckPendingDesc, queueRedeliveredDesc, streamMessagesDesc, streamBytesDesc} {
		ch <- d
	}
	q.errors.Describe(ch)
}

// Collect implements prometheus.Collector: a stream that cannot be read is
// left out of this scrape (and counted in read_errors_total) rather than
// failing the whole scrape.
func (q *Queues) Collect(ch chan<- prometheus.Metric) {
	streams, queues, _ := q.Read(context.Background())
	for _, s := range streams {
		ch <- prometheus.MustNewConstMetric(streamMessagesDesc, prometheus.GaugeValue, float64(s.Messages), s.Name)
		ch <- prometheus.MustNewConstMetric(streamBytesDesc, prometheus.GaugeValue, float64(s.Bytes), s.Name)
	}
	for _, c := range queues {
		ch <- prometheus.MustNewConstMetric(queuePendingDesc, prometheus.GaugeValue, float64(c.Pending), c.Stream, c.Consumer)
		ch <- prometheus.MustNewConstMetric(queueAckPendingDesc, prometheus.GaugeValue, float64(c.AckPending), c.Stream, c.Consumer)
		ch <- prometheus.MustNewConstMetric(queueRedeliveredDesc, prometheus.GaugeValue, float64(c.Redelivered), c.Stream, c.Consumer)
	}
	q.errors.Collect(ch)
}
