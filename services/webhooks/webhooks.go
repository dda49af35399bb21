// Package webhooks is the webhooks stage: it reads every status event of
// SMS_STATUS (durable consumer "webhooks") and POSTs each status change to
// the message's callback_url, or to the configured default URL, as the
// event's JSON, signed (see Sign).
//
// Delivery is in order per message and at least once, with one duplicate
// window only: KV sms_webhooks holds, per message, the SMS_STATUS sequence
// of the last event delivered (or given up on). An event at or below it is a
// duplicate and is not sent again; an event with an earlier one of its
// message still undelivered sends that one first. A failed POST is retried
// by the broker (nak with exponential backoff and jitter) until the event is
// MaxAge old, then given up, counted and logged, so later events of the
// message go on. A POST that succeeded but whose record was lost (a crash in
// between, or two instances at once) is sent again: the X-Smsflow-Event-Id
// header is the same on every attempt, so the receiver can drop it.
//
// Each destination host has at most PerHost requests in flight, and a host
// that failed is not tried again until its backoff has passed. Its events
// go back to the broker for a wait under a second; a longer one parks them
// on SMS_WEBHOOK_PARK (see park.go), out of the webhooks consumer, so a slow
// or dead receiver neither holds up another nor fills max_ack_pending. A
// catch-up of many earlier events tells the broker it is in progress before
// each request, so a slow host does not cause a redelivery.
// Attempt records (retry, throttled, submit_unknown) are not status changes
// and are not sent.
package webhooks

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"golang.org/x/sync/errgroup"

	"github.com/smsflow/smsflow/config"
	"github.com/smsflow/smsflow/pkg/consume"
	"github.com/smsflow/smsflow/pkg/recent"
	"github.com/smsflow/smsflow/pkg/status"
	"github.com/smsflow/smsflow/streams"
)

// Headers of a webhook request.
const (
	HeaderSignature = "X-Smsflow-Signature" // t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>
	HeaderEventID   = "X-Smsflow-Event-Id"  // <message id>.<SMS_STATUS sequence>: the same on every attempt
	HeaderMessageID = "X-Smsflow-Message-Id"
)

// Sign is the signature header value of body sent at t: "t=<unix
// seconds>,v1=<hex of HMAC-SHA256 keyed with secret over the decimal t, a
// '.', and the body>". A receiver recomputes it over the raw body and the t
// it was given, compares in constant time, and rejects a t too far from its
// clock (replays).
func Sign(secret string, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(ts))
	mac.Write([]byte("."))
	mac.Write(body)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac.Sum(nil))
}

// Options configure the stage.
type Options struct {
	DefaultURL  string        // for messages without a callback_url; "" sends those nowhere
	Secret      config.Secret // HMAC key; "" sends unsigned requests
	MaxAge      time.Duration // give up on an event this old; 24h when 0
	PerHost     int           // requests in flight per destination host; 4 when 0
	Timeout     time.Duration // per request; 10s when 0
	BackoffMin  time.Duration // first retry delay; 1s when 0
	BackoffMax  time.Duration // retry delay cap; 5m when 0
	Concurrency int           // events handled at once; 64 when 0
	Grace       time.Duration
}

// Stage is the webhooks stage.
type Stage struct {
	js     jetstream.JetStream
	pub    *status.Publisher
	kv     jetstream.KeyValue // sms_webhooks: id -> last delivered sequence
	status jetstream.Stream   // SMS_STATUS, to read a message's earlier events
	cli    *http.Client
	opts   Options
	log    *slog.Logger
	m      *Metrics
	now    func() time.Time // the stage's clock: ages and backoffs
	wall   func() time.Time // the server's clock: when a parked event is due

	urls *recent.Map[string, string] // callback_url of recently accepted messages (see destination)

	mu    sync.Mutex
	busy  map[string]bool // message ids being delivered here
	hosts map[string]*host
}

// urlCacheSize bounds Stage.urls: some seconds' worth of messages at
// thousands a second, a few MB.
const urlCacheSize = 1 << 16

// host is what the stage knows of one destination.
type host struct {
	slots    chan struct{} // PerHost tokens
	failures uint64        // consecutive failed requests
	until    time.Time     // not tried again before
}

// New makes the stage.
func New(js jetstream.JetStream, pub *status.Publisher, opts Options, log *slog.Logger, m *Metrics) *Stage {
	if opts.MaxAge <= 0 {
		opts.MaxAge = 24 * time.Hour
	}
	if opts.PerHost <= 0 {
		opts.PerHost = 4
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	if opts.BackoffMin <= 0 {
		opts.BackoffMin = time.Second
	}
	if opts.BackoffMax < opts.BackoffMin {
		opts.BackoffMax = max(5*time.Minute, opts.BackoffMin)
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = 64
	}
	cli := &http.Client{
		Timeout: opts.Timeout,
		// A redirect is an answer, not a delivery: the receiver fixes its URL.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Transport:     &http.Transport{Proxy: http.ProxyFromEnvironment, MaxIdleConnsPerHost: opts.PerHost, IdleConnTimeout: 90 * time.Second},
	}
	return &Stage{js: js, pub: pub, cli: cli, opts: opts, log: log, m: m, now: time.Now, wall: time.Now, busy: map[string]bool{}, hosts: map[string]*host{},
		urls: recent.New[string, string](urlCacheSize)}
}

// Run consumes until ctx is done, then finishes the requests in hand. It
// returns nil when ctx ends, even before it got to consume.
func (s *Stage) Run(ctx context.Context) error {
	kv, err := s.js.KeyValue(ctx, streams.BucketWebhooks)
	if ctx.Err() != nil {
		return nil
	}
	if err != nil {
		return fmt.Errorf("webhooks: kv %s: %w", streams.BucketWebhooks, err)
	}
	s.kv = kv
	if s.status, err = s.js.Stream(ctx, streams.Status); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("webhooks: stream: %w", err)
	}
	cons, err := s.js.Consumer(ctx, streams.Status, streams.ConsumerWebhooks)
	if ctx.Err() != nil {
		return nil
	}
	if err != nil {
		return fmt.Errorf("webhooks: consumer: %w", err)
	}
	due, err := s.js.Consumer(ctx, streams.WebhookPark, streams.ConsumerWebhooksDue)
	if ctx.Err() != nil {
		return nil
	}
	if err != nil {
		return fmt.Errorf("webhooks: consumer of parked events: %w", err)
	}
	if s.opts.Secret == "" {
		s.log.Warn("webhooks.secret is empty: requests go out unsigned")
	}
	s.log.Info("webhooks stage started", "default_url", s.opts.DefaultURL != "", "max_age", s.opts.MaxAge, "per_host", s.opts.PerHost)
	defer s.log.Info("webhooks stage stopped")
	defer s.cli.CloseIdleConnections() // no keep-alive goroutine outlives the stage
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		return consume.Run(gctx, cons, s.handle, consume.Options{Batch: 256, Concurrency: s.opts.Concurrency, Grace: s.opts.Grace, Log: s.log})
	})
	g.Go(func() error {
		return consume.Run(gctx, due, s.handleDue, consume.Options{Batch: 256, Concurrency: s.opts.Concurrency, Grace: s.opts.Grace,
			Log: s.log.With("consumer", streams.ConsumerWebhooksDue)})
	})
	return g.Wait()
}

// event is one status event as read from SMS_STATUS.
type event struct {
	seq  uint64
	at   time.Time // when it was stored
	data []byte
	ev   status.Event
}

func (s *Stage) handle(ctx context.Context, msg jetstream.Msg) consume.Outcome {
	md, err := msg.Metadata()
	if err != nil {
		return consume.Term("no metadata: " + err.Error())
	}
	e := event{seq: md.Sequence.Stream, at: md.Timestamp, data: msg.Data()}
	e.ev, err = status.DecodeEvent(e.data)
	if err != nil || e.ev.ID == "" || msg.Subject() != status.Subject(e.ev.ID) {
		s.m.events.WithLabelValues("invalid").Inc()
		s.log.Warn("status event unreadable, not sent", "seq", e.seq, "subject", msg.Subject(), "err", err)
		return consume.Term("invalid status event")
	}
	if !status.IsStatus(e.ev.Status) {
		s.m.events.WithLabelValues("not_a_status").Inc()
		return consume.Ack()
	}
	return s.deliver(ctx, msg, e)
}

// deliver sends e (from SMS_STATUS, or parked) to its message's destination,
// after any earlier status of the message not yet delivered.
func (s *Stage) deliver(ctx context.Context, msg jetstream.Msg, e event) consume.Outcome {
	dest, err := s.destination(ctx, e.ev)
	if err != nil {
		return s.retry(msg, "error", err)
	}
	if dest == nil {
		s.m.events.WithLabelValues("no_url").Inc()
		return consume.Ack()
	}
	// One message's events one at a time here; a handler never waits for
	// another's request (which may hang on a slow host): it gives the event
	// back for a moment instead. Naked, not parked: such events are few (a
	// message's statuses behind one request in flight), and parking them
	// would delay a message to a healthy host by a second.
	s.mu.Lock()
	busy := s.busy[e.ev.ID]
	if !busy {
		s.busy[e.ev.ID] = true
	}
	s.mu.Unlock()
	if busy {
		return s.retry(msg, "", &deferredError{why: "busy with an earlier status of the message", wait: s.opts.BackoffMin})
	}
	defer func() {
		s.mu.Lock()
		delete(s.busy, e.ev.ID)
		s.mu.Unlock()
	}()
	return s.deliverUpTo(ctx, msg, dest, e)
}

// destination is where a message's statuses go: its callback_url (on the
// event, else on its first event), else the default; nil for nowhere.
func (s *Stage) destination(ctx context.Context, ev status.Event) (*url.URL, error) {
	// Policy writes a message's first accepted event with its envelope's
	// callback_url (empty: none), and any later one (a release, a
	// redelivery) with the same envelope's, so what an accepted event says
	// is the answer for the message's later events (three or more), which
	// would otherwise read the first event back. A miss (the accepted event
	// went to another instance, or was forgotten) reads it.
	raw := ev.CallbackURL
	if ev.Status == status.Accepted {
		s.urls.Put(ev.ID, raw)
	}
	if raw == "" {
		var known bool
		if raw, known = s.urls.Get(ev.ID); !known {
			first, err := s.pub.First(ctx, ev.ID)
			if err != nil && !errors.Is(err, status.ErrNotFound) {
				return nil, err
			}
			raw = first.CallbackURL
		}
	}
	if raw == "" {
		raw = s.opts.DefaultURL
	}
	if raw == "" {
		return nil, nil
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		s.log.Debug("callback_url unusable, not sent", "msg_id", ev.ID)
		return nil, nil // policy rejects the message as invalid; nothing to send it to
	}
	return u, nil
}

// deliverUpTo sends e, after any earlier status of its message not yet
// delivered, in order. The caller has marked the message busy.
func (s *Stage) deliverUpTo(ctx context.Context, msg jetstream.Msg, dest *url.URL, e event) consume.Outcome {
	done, rev, err := s.delivered(ctx, e.ev.ID)
	if err != nil {
		return s.retry(msg, "error", err)
	}
	if done >= e.seq {
		s.m.events.WithLabelValues("duplicate").Inc()
		return consume.Ack()
	}
	for n := 0; done < e.seq; n++ {
		if n > 0 {
			// A catch-up: each request may take up to Timeout, their sum
			// longer than the ack wait.
			_ = consume.Touch(msg)
		}
		next := e
		if done+1 < e.seq {
			if next, err = s.nextAfter(ctx, e.ev.ID, done, e.seq); err != nil {
				return s.retry(msg, "error", err)
			}
		}
		if age := s.now().Sub(next.at); age > s.opts.MaxAge {
			s.m.events.WithLabelValues("expired").Inc()
			s.log.Warn("webhook given up: event older than webhooks.max_age", "msg_id", next.ev.ID, "status", next.ev.Status, "seq", next.seq, "host", dest.Host, "age", age)
		} else if err := s.post(ctx, dest, next); err != nil {
			return s.giveBack(ctx, msg, dest, e, "failed", err)
		} else {
			s.m.events.WithLabelValues("delivered").Inc()
		}
		if rev, err = s.record(ctx, e.ev.ID, next.seq, rev); err != nil {
			// Sent, not recorded: a retry sends it again, with the same event id.
			return s.retry(msg, "error", err)
		}
		done = next.seq
	}
	return consume.Ack()
}

// nextAfter is the first status event of id after sequence done, at or
// before upTo (which is one).
func (s *Stage) nextAfter(ctx context.Context, id string, done, upTo uint64) (event, error) {
	for seq := done + 1; ; {
		raw, err := s.status.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(status.Subject(id)))
		if err != nil {
			return event{}, fmt.Errorf("status event of %s after %d: %w", id, seq, err)
		}
		if raw.Sequence > upTo {
			return event{}, fmt.Errorf("status event of %s at %d is gone", id, upTo)
		}
		e := event{seq: raw.Sequence, at: raw.Time, data: raw.Data}
		if e.ev, err = status.DecodeEvent(raw.Data); err == nil && status.IsStatus(e.ev.Status) {
			return e, nil
		}
		seq = raw.Sequence + 1
	}
}

// delivered reads the sequence of the message's last event delivered, and
// its record's revision (0 when none).
func (s *Stage) delivered(ctx context.Context, id string) (uint64, uint64, error) {
	kve, err := s.kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("read sms_webhooks %s: %w", id, err)
	}
	seq, _ := strconv.ParseUint(string(kve.Value()), 10, 64)
	return seq, kve.Revision(), nil
}

// record stores seq as the message's last delivered event, with a
// compare-and-set on rev; it returns the new revision. Losing the
// compare-and-set means another instance recorded a delivery: keep the later.
func (s *Stage) record(ctx context.Context, id string, seq, rev uint64) (uint64, error) {
	val := []byte(strconv.FormatUint(seq, 10))
	var (
		nrev uint64
		err  error
	)
	if rev == 0 {
		nrev, err = s.kv.Create(ctx, id, val)
	} else {
		nrev, err = s.kv.Update(ctx, id, val, rev)
	}
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) ||
		isWrongLast(err) {
		done, crev, rerr := s.delivered(ctx, id)
		if rerr != nil {
			return 0, rerr
		}
		if done >= seq {
			return crev, nil
		}
		return s.record(ctx, id, seq, crev)
	}
	if err != nil {
		return 0, fmt.Errorf("write sms_webhooks %s: %w", id, err)
	}
	return nrev, nil
}

func isWrongLast(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}

// deferredError is returned by post when the host is not tried now: it has
// PerHost requests in flight, or failed and waits out its backoff. The event
// goes back to the broker for about wait, without counting as a failure.
type deferredError struct {
	why  string
	wait time.Duration
}

func (e *deferredError) Error() string { return "host " + e.why }

// post sends one event to dest: a 2xx answer is a delivery, anything else,
// a timeout, or no answer, a failure.
func (s *Stage) post(ctx context.Context, dest *url.URL, e event) error {
	h := s.host(dest.Host)
	s.mu.Lock()
	wait := h.until.Sub(s.now())
	s.mu.Unlock()
	if wait > 0 {
		return &deferredError{why: "failed recently", wait: wait}
	}
	// Wait a little for a slot, then give the event back to the broker: the
	// handler is needed for other hosts.
	t := time.NewTimer(100 * time.Millisecond)
	defer t.Stop()
	select {
	case h.slots <- struct{}{}:
	case <-t.C:
		return &deferredError{why: "busy", wait: s.opts.BackoffMin}
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-h.slots }()

	req, err := http.NewRequestWithContext(ctx, http.MethodPost, dest.String(), bytes.NewReader(e.data))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "smsflow-webhooks")
	req.Header.Set(HeaderEventID, e.ev.ID+"."+strconv.FormatUint(e.seq, 10))
	req.Header.Set(HeaderMessageID, e.ev.ID)
	if s.opts.Secret != "" {
		req.Header.Set(HeaderSignature, Sign(s.opts.Secret.Reveal(), s.now(), e.data))
	}
	start := time.Now()
	resp, err := s.cli.Do(req)
	s.m.latency.Observe(time.Since(start).Seconds())
	var uerr *url.Error
	if errors.As(err, &uerr) {
		// A callback URL may carry a token in its query or user info: the
		// error (logged) names only where it went.
		uerr.URL = (&url.URL{Scheme: dest.Scheme, Host: dest.Host, Path: dest.Path}).String()
	}
	if err == nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // reuse the connection
		resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode > 299 {
			err = fmt.Errorf("answered %s", resp.Status)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		h.failures++
		h.until = s.now().Add(consume.BackoffN(h.failures, s.opts.BackoffMin, s.opts.BackoffMax, rand.Float64()))
		return fmt.Errorf("POST to %s: %w", dest.Host, err)
	}
	h.failures, h.until = 0, time.Time{}
	return nil
}

func (s *Stage) host(name string) *host {
	s.mu.Lock()
	defer s.mu.Unlock()
	h, ok := s.hosts[name]
	if !ok {
		h = &host{slots: make(chan struct{}, s.opts.PerHost)}
		s.hosts[name] = h
	}
	return h
}

// giveBack is retry for an event its host did not take (err from post, or
// a deferredError): a wait of parkAfter or more, until the host may be tried
// again, parks it out of the consumer; a shorter one naks it.
func (s *Stage) giveBack(ctx context.Context, msg jetstream.Msg, dest *url.URL, e event, result string, err error) consume.Outcome {
	var wait time.Duration
	var d *deferredError
	if errors.As(err, &d) {
		wait = d.wait
	} else {
		h := s.host(dest.Host)
		s.mu.Lock()
		wait = h.until.Sub(s.now())
		s.mu.Unlock()
	}
	if wait = wait + time.Duration(rand.Float64()*float64(wait/2)); wait < parkAfter {
		return s.retry(msg, result, err)
	}
	if d == nil {
		s.m.events.WithLabelValues(result).Inc()
		s.log.Warn("webhook not delivered, parked", "msg_id", e.ev.ID, "seq", e.seq, "host", dest.Host, "wait", wait, "err", err)
	}
	return s.park(ctx, msg, e, wait)
}

// retry gives the event back to the broker with backoff and jitter; result
// labels the metric.
func (s *Stage) retry(msg jetstream.Msg, result string, err error) consume.Outcome {
	var d *deferredError
	if errors.As(err, &d) {
		s.m.events.WithLabelValues("deferred").Inc()
		// Back when the host may be tried again, spread over half as long again.
		return consume.Retry(d.wait + time.Duration(rand.Float64()*float64(d.wait/2)))
	}
	s.m.events.WithLabelValues(result).Inc()
	s.log.Warn("webhook not delivered, will retry", "subject", msg.Subject(), "err", err)
	return consume.Retry(consume.Backoff(msg, s.opts.BackoffMin, s.opts.BackoffMax))
}

// Metrics of the webhooks stage.
type Metrics struct {
	events  *prometheus.CounterVec
	latency prometheus.Histogram
}

// NewMetrics registers the stage's metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	f := promauto.With(reg)
	m := &Metrics{
		events: f.NewCounterVec(prometheus.CounterOpts{
			Namespace: "smsflow", Subsystem: "webhooks", Name: "events_total",
			Help: "Status events by what the webhooks stage did (delivered, failed, deferred, parked, expired, duplicate, no_url, not_a_status, invalid, error).",
		}, []string{"result"}),
		latency: f.NewHistogram(prometheus.HistogramOpts{
			Namespace: "smsflow", Subsystem: "webhooks", Name: "request_duration_seconds",
			Help:    "Time from sending a webhook request to its answer (or failure).",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 12),
		}),
	}
	for _, r := range []string{"delivered", "failed", "deferred", "parked", "expired", "duplicate", "no_url", "not_a_status", "invalid", "error"} {
		m.events.WithLabelValues(r)
	}
	return m
}
