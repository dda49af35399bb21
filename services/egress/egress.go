// Package egress is the SMPP egress stage: each link pulls from its pool's
// consumer on SMS_EGRESS, only when it holds a pacing token and a window
// slot, submits, and settles the message: ack on success, nak with backoff on
// a retryable failure or throttle, a `failed` status and ack on a permanent
// one. A throttle also slows the link down until its SMSC keeps up (pace). It also stores every deliver_sm the link receives in SMS_DLR (receipts)
// or SMS_INBOUND (mobile-originated) before the SMSC gets its deliver_sm_resp.
package egress

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/smsflow/smsflow/pkg/consume"
	"github.com/smsflow/smsflow/pkg/dlr"
	"github.com/smsflow/smsflow/pkg/envelope"
	"github.com/smsflow/smsflow/pkg/linkstate"
	"github.com/smsflow/smsflow/pkg/pacing"
	"github.com/smsflow/smsflow/pkg/recent"
	"github.com/smsflow/smsflow/pkg/smpplink"
	"github.com/smsflow/smsflow/pkg/status"
	"github.com/smsflow/smsflow/streams"
)

// LinkOptions configure one link worker.
type LinkOptions struct {
	Name   string
	Pool   string
	SMPP   smpplink.Config
	Rate   int // submits per second
	Burst  int
	Source string // source_addr when the message has no "from"
	// RespIDs is how the SMSC writes message ids in submit_sm_resp (text,
	// decimal, hex): the parts are indexed under dlr.CanonicalID.
	RespIDs dlr.IDForm
}

// Options configure the stage.
type Options struct {
	MaxAttempts int           // deliveries before a retried message is failed
	BackoffMin  time.Duration // first retry delay
	BackoffMax  time.Duration // retry delay cap
	Grace       time.Duration // how long in-flight submits may take after shutdown begins
	// ReceiptTimeout is how long a submitted message waits for its final
	// receipt before the receipts stage ends it expired (no_receipt): the
	// timer egress arms at each submit (dlr.ArmTimeout). 48h when 0.
	ReceiptTimeout time.Duration
}

// Stage runs the link workers of every configured link.
type Stage struct {
	js       jetstream.JetStream
	pub      *status.Publisher
	index    jetstream.KeyValue
	pacingKV jetstream.KeyValue
	linksKV  jetstream.KeyValue
	instance string // host:pid, in health reports
	links    []LinkOptions
	opts     Options
	log      *slog.Logger
	m        *Metrics

	// firstChecks: after an unclean stop, how many more first deliveries
	// of each lane (by subject) are checked like redeliveries (resubmit.go).
	firstChecks map[string]*atomic.Int64

	// held and handled: the messages this process holds, and those it
	// handled lately (held.go).
	heldMu  sync.Mutex
	held    map[string]bool
	handled *recent.Map[string, struct{}]

	mu   sync.Mutex
	open map[string]*smpplink.Link
	lims map[string]*pacing.Limiter // each link's bucket, for PacingStats
}

// New makes the stage; Run binds the links and starts pulling.
func New(js jetstream.JetStream, pub *status.Publisher, links []LinkOptions, opts Options, log *slog.Logger, m *Metrics) *Stage {
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = 10
	}
	if opts.BackoffMin <= 0 {
		opts.BackoffMin = 500 * time.Millisecond
	}
	if opts.BackoffMax < opts.BackoffMin {
		opts.BackoffMax = time.Minute
	}
	if opts.ReceiptTimeout <= 0 {
		opts.ReceiptTimeout = 48 * time.Hour
	}
	if opts.Grace <= 0 {
		opts.Grace = 10 * time.Second
	}
	for _, l := range links {
		m.touch(l.Name)
	}
	return &Stage{js: js, pub: pub, links: links, opts: opts, log: log, m: m, open: map[string]*smpplink.Link{}, lims: map[string]*pacing.Limiter{}, instance: instanceName(),
		held: map[string]bool{}, handled: recent.New[string, struct{}](handledSize)}
}

// BoundLinks returns how many links are bound now (for /readyz).
func (s *Stage) BoundLinks() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, l := range s.open {
		if l.Bound() {
			n++
		}
	}
	return n
}

// PacingStats returns what each link's pacing limiter did in this instance
// so far (KV reads and writes, slots reserved, granted and wasted), by link.
func (s *Stage) PacingStats() map[string]pacing.Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]pacing.Stats, len(s.lims))
	for name, l := range s.lims {
		out[name] = l.Stats()
	}
	return out
}

// Run binds every link and runs its worker until ctx is done; then it
// finishes the submits in flight (within Grace), unbinds and returns.
func (s *Stage) Run(ctx context.Context) error {
	kv, err := s.js.KeyValue(ctx, streams.BucketDLRIndex)
	if err != nil {
		return fmt.Errorf("egress: kv %s: %w", streams.BucketDLRIndex, err)
	}
	s.index = kv
	if s.pacingKV, err = s.js.KeyValue(ctx, streams.BucketPacing); err != nil {
		return fmt.Errorf("egress: kv %s: %w", streams.BucketPacing, err)
	}
	if s.linksKV, err = s.js.KeyValue(ctx, streams.BucketLinks); err != nil {
		return fmt.Errorf("egress: kv %s: %w", streams.BucketLinks, err)
	}
	s.markRunning(ctx)
	// Every consumer first: an error must not leave links already running.
	conss := make([]lanes, len(s.links))
	for i, lo := range s.links {
		bulk, err := s.js.Consumer(ctx, streams.Egress, streams.EgressConsumerName(lo.Pool))
		if err != nil {
			return fmt.Errorf("egress: consumer of pool %s: %w", lo.Pool, err)
		}
		prio, err := s.js.Consumer(ctx, streams.Egress, streams.PriorityConsumerName(lo.Pool))
		if err != nil {
			return fmt.Errorf("egress: priority consumer of pool %s: %w", lo.Pool, err)
		}
		conss[i] = lanes{priority: prio, bulk: bulk}
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(s.links))
	for i, lo := range s.links {
		cons := conss[i]
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.runLink(ctx, lo, cons); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	s.markStopped(ctx)
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	return errors.Join(all...)
}

func (s *Stage) runLink(ctx context.Context, lo LinkOptions, cons lanes) error {
	log := s.log.With("link", lo.Name, "pool", lo.Pool)
	// The link's token bucket lives in KV sms_pacing, shared by every
	// instance that sends on the link. Every attempt, retries included, costs
	// a token because a worker takes one before it fetches, and every further
	// part of a long message costs one more.
	lim := pacing.New(s.pacingKV, lo.Name, float64(lo.Rate), max(lo.Burst, 1), pacing.Options{Log: log})
	s.mu.Lock()
	s.lims[lo.Name] = lim
	s.mu.Unlock()
	p := newPace(lim, lo.Rate)
	gate := newPauseGate()
	// Read the control before any worker starts: a link paused while this
	// instance was down must not send a thing before the watch catches up.
	if entry, err := s.linksKV.Get(ctx, linkstate.ControlKey(lo.Name)); err == nil {
		if c, err := linkstate.ParseControl(entry.Value()); err == nil && c.Paused {
			gate.set(true)
			s.m.paused.WithLabelValues(lo.Name).Set(1)
			log.Info("link starts paused", "reason", c.Reason)
		}
	}

	// closing is closed when the link is being torn down: a receipt store
	// that keeps failing gives up then, instead of blocking Close.
	closing := make(chan struct{})
	link := smpplink.Open(lo.SMPP, s.deliverFunc(lo.Name, closing, log), log)
	s.mu.Lock()
	s.open[lo.Name] = link
	s.mu.Unlock()
	defer func() {
		close(closing)
		_ = link.Close()
		s.mu.Lock()
		delete(s.open, lo.Name)
		s.mu.Unlock()
		// The last word in sms_links: this instance no longer sends on the
		// link (the others' reports stand).
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = linkstate.DeleteHealth(fctx, s.linksKV, lo.Name, s.instance)
		s.m.bound.WithLabelValues(lo.Name).Set(0)
		st := lim.Stats()
		log.Info("link stopped", "pacing_granted", st.Granted, "pacing_wasted", st.Wasted, "pacing_late", st.Late,
			"pacing_kv_reads", st.KVReads, "pacing_kv_writes", st.KVWrites, "pacing_conflicts", st.Conflicts)
	}()

	window := link.Window() // window x sessions: one worker per submit in flight
	hctx, hcancel := context.WithCancel(context.WithoutCancel(ctx))
	defer hcancel()
	stop := context.AfterFunc(ctx, func() { time.AfterFunc(s.opts.Grace, hcancel) })
	defer stop()

	w := &linkWork{lo: lo, link: link, p: p, gate: gate, cons: cons, log: log, prio: make(chan jetstream.Msg),
		bulk: newBulkFeed(cons.bulk, window)}
	var wg sync.WaitGroup
	wg.Add(4)
	go func() { defer wg.Done(); w.bulk.run(ctx) }()
	go func() { defer wg.Done(); s.watchControl(ctx, lo, gate, log) }()
	go func() { defer wg.Done(); s.reportHealth(ctx, lo, link, p, gate, log) }()
	go func() { defer wg.Done(); s.priorityFeeder(ctx, hctx, w) }()
	for range window {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.worker(ctx, hctx, w)
		}()
	}
	wg.Wait()
	return nil
}

// linkWork is what a link's workers share.
type linkWork struct {
	lo   LinkOptions
	link *smpplink.Link
	p    *pace
	gate *pauseGate
	cons lanes
	bulk *bulkFeed
	log  *slog.Logger
	// prio hands a transactional message from the priority feeder to the
	// first worker that is free or holds a token.
	prio chan jetstream.Msg
	// idle counts the workers waiting for a message: the priority feeder
	// fetches as many as are waiting (at least one), so a burst of
	// transactional messages fills the window without holding any back from
	// the pool's other links.
	idle atomic.Int32
}

// worker is one slot of the link's window: wait until bound, fetch one
// message, take a token, submit, settle.
//
// The message comes first and the token second, so that the time from the
// token to the submit is a wake-up, not a fetch: a token is a slot in time,
// and one that a slow fetch made late is wasted (sending it late would crowd
// the next one). Every attempt still costs a token, retries included, since
// nothing is submitted without one; a worker holds one message while it
// waits for its token, at most window slots ahead.
func (s *Stage) worker(ctx, hctx context.Context, w *linkWork) {
	// asked is this worker's open ask on the bulk lane: once the feed has
	// it, it always answers, and the answer must be read.
	var asked <-chan fed
	for ctx.Err() == nil {
		if asked != nil && (w.gate.isPaused() || !w.link.Bound()) {
			// Never hold a bulk message through a pause or an unbind (it
			// may be for minutes, past the ack wait, and the server would
			// deliver it again beside the one held here): it goes back,
			// for another link of the pool or for this one later.
			a := <-asked
			asked = nil
			if a.msg != nil {
				s.giveBack(hctx, w.lo, a.msg, nil, pausedRetry, "link paused or unbound", w.log)
			}
			continue
		}
		if err := w.link.WaitBound(ctx); err != nil {
			break
		}
		if err := w.gate.wait(ctx); err != nil {
			break
		}
		if asked == nil {
			if asked = w.bulk.ask(ctx); asked == nil {
				break
			}
		}
		// A free worker takes a transactional message as soon as the
		// priority feeder has one, even while its bulk ask is open (the
		// bulk message, if one comes, waits in the buffered answer).
		var pm jetstream.Msg
		var a fed
		w.idle.Add(1)
		select {
		case pm = <-w.prio:
		case a = <-asked:
			asked = nil
		case <-ctx.Done():
		}
		w.idle.Add(-1)
		if pm != nil {
			s.process(ctx, hctx, w, pm, false)
			continue
		}
		if a.err != nil {
			if ctx.Err() == nil {
				w.log.Warn("fetch failed", "err", a.err)
				sleep(ctx, time.Second)
			}
			continue
		}
		msg := a.msg
		if msg == nil {
			continue
		}
		if w.gate.isPaused() {
			// Paused while the fetch waited: a paused link sends nothing,
			// so the message goes back, for another link of the pool or
			// for this one once it is resumed.
			s.giveBack(hctx, w.lo, msg, nil, pausedRetry, "link paused", w.log)
			continue
		}
		s.process(ctx, hctx, w, msg, true)
	}
	if asked != nil {
		if a := <-asked; a.msg != nil {
			s.giveBack(hctx, w.lo, a.msg, nil, 0, "shutting down", w.log)
		}
	}
}

// pausedRetry is when a message fetched just as its link was paused comes
// back.
const pausedRetry = time.Second

// process takes msg through its checks, a token and its submit, and settles
// it. With takePrio, a transactional message waiting at the feeder when the
// token comes is submitted first, on that token, and msg waits for the next.
func (s *Stage) process(ctx, hctx context.Context, w *linkWork, msg jetstream.Msg, takePrio bool) {
	sub, o, ok := s.prepare(hctx, w.lo, msg, w.log)
	if !ok {
		s.settle(hctx, msg, o, w.log)
		return
	}
	defer s.release(sub.m.ID)
	for {
		if !s.token(ctx, w.p, w.log) {
			s.giveBack(hctx, w.lo, msg, &sub, 0, "shutting down", w.log)
			return
		}
		granted := time.Now()
		if takePrio {
			select {
			case pm := <-w.prio:
				psub, po, pok := s.prepare(hctx, w.lo, pm, w.log)
				if pok {
					po = s.send(hctx, w.lo, w.link, w.p, pm, psub, granted, w.log)
					s.settle(hctx, pm, po, w.log)
					s.release(psub.m.ID)
					continue // the token went to the transactional message
				}
				s.settle(hctx, pm, po, w.log)
				granted = time.Now()
			default:
			}
		}
		s.settle(hctx, msg, s.send(hctx, w.lo, w.link, w.p, msg, sub, granted, w.log), w.log)
		return
	}
}

// priorityFeeder pulls the pool's priority lane and hands each message to
// the first worker that is free: an idle one (waiting on the bulk lane) at
// once, a busy one at its next token, before its own bulk message. When no
// worker takes it within priorityHandoff and the link cannot send (unbound,
// paused), it goes back to the lane for another link of the pool.
func (s *Stage) priorityFeeder(ctx, hctx context.Context, w *linkWork) {
	for ctx.Err() == nil {
		if err := w.link.WaitBound(ctx); err != nil {
			return
		}
		if err := w.gate.wait(ctx); err != nil {
			return
		}
		msgs, err := fetchLane(w.cons.priority, max(1, int(w.idle.Load())), priorityWait)
		if err != nil {
			if ctx.Err() == nil {
				w.log.Warn("fetch failed", "lane", "priority", "err", err)
				sleep(ctx, time.Second)
			}
			continue
		}
		for _, pm := range msgs {
			s.handOff(ctx, hctx, w, pm)
		}
	}
}

// handOff gives pm to a worker of w, or back to the lane when the link
// stops being able to send before a worker takes it.
func (s *Stage) handOff(ctx, hctx context.Context, w *linkWork, pm jetstream.Msg) {
	t := time.NewTicker(priorityHandoff)
	defer t.Stop()
	touched := time.Now()
	for {
		if w.gate.isPaused() || !w.link.Bound() {
			s.giveBack(hctx, w.lo, pm, nil, pausedRetry, "link paused or unbound", w.log) // as in worker
			return
		}
		if time.Since(touched) > handOffTouch {
			// A slow link with a wide window can keep it waiting for a
			// worker past the ack wait: the server must not deliver it again.
			_ = consume.Touch(pm)
			touched = time.Now()
		}
		select {
		case w.prio <- pm:
			return
		case <-t.C:
		case <-ctx.Done():
			s.giveBack(hctx, w.lo, pm, nil, 0, "shutting down", w.log)
			return
		}
	}
}

// token waits for a pacing token. The bucket is in KV: a NATS hiccup is
// waited out (a worker that gave up would leave the link bound but idle
// until a restart). It returns false only when ctx is done.
func (s *Stage) token(ctx context.Context, p *pace, log *slog.Logger) bool {
	for delay := 100 * time.Millisecond; ; delay = min(delay*2, 5*time.Second) {
		err := p.wait(ctx)
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		log.Warn("pacing unavailable, waiting", "retry_in", delay, "err", err)
		sleep(ctx, delay)
	}
}

// settle carries out o; an ack waits for the server's confirmation, since a
// lost ack would bring the message back (the redelivery check then finds it
// submitted, at the cost of a status read).
func (s *Stage) settle(ctx context.Context, msg jetstream.Msg, o consume.Outcome, log *slog.Logger) {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := consume.SettleSync(sctx, msg, o); err != nil {
		log.Warn("settle failed", "outcome", o.String(), "err", err)
	}
}

// lanes are a pool's two consumers: the priority lane (transactional) and
// the bulk of its messages.
type lanes struct {
	priority, bulk jetstream.Consumer
}

// bulkWait is how long an idle worker waits on the bulk lane per fetch.
const bulkWait = 250 * time.Millisecond

// priorityWait is how long the priority feeder waits on its lane per fetch;
// a transactional message is handed over as soon as it arrives.
const priorityWait = time.Second

// priorityHandoff is how often the priority feeder, while it offers a
// message to the link's workers, checks that the link can still send it;
// it tells the server it is still working on it every handOffTouch.
const (
	priorityHandoff = 100 * time.Millisecond
	handOffTouch    = 10 * time.Second
)

// staleToken is how long after its grant a token may still be used for the
// first part (smpplink.Short.MaxLate): a submit later than that takes a fresh
// token, since a late one crowds the next slot.
const staleToken = pacing.MaxSubmitDelay

// prepared is a message that passed its checks and waits for a token.
type prepared struct {
	m       envelope.Message
	attempt int
	src     string
	// risky: an earlier delivery may have reached the SMSC without a record
	// of it (see unknownBefore), so this submit may send it twice.
	risky bool
}

// prepare decodes msg and checks it before it may cost a token: a poison
// message, one redelivered after it was submitted, one expired, one out of
// attempts. ok is false when o settles it without a submit.
func (s *Stage) prepare(ctx context.Context, lo LinkOptions, msg jetstream.Msg, log *slog.Logger) (p prepared, o consume.Outcome, ok bool) {
	md, err := msg.Metadata()
	if err != nil {
		return p, consume.Term("no metadata: " + err.Error()), false
	}
	attempt := int(md.NumDelivered)
	m, err := envelope.Decode(msg.Data())
	if err != nil || !envelope.ValidID(m.ID) {
		// Policy only forwards valid envelopes: this is someone else's
		// publish on sms.egress. It has no id to report a status under.
		s.m.poison.WithLabelValues(lo.Name).Inc()
		log.Error("poison message on egress, terminated", "seq", md.Sequence.Stream, "err", err)
		return p, consume.Term("poison: not a valid envelope"), false
	}
	if !s.hold(m.ID) {
		// This process holds another delivery of the same message: the
		// server forgot it had delivered it (a NATS restart loses the last
		// moments of consumer state) and sent it again as a first delivery.
		// It comes back once the one held here has settled, and is checked
		// then (as a redelivery).
		s.m.heldTwice.WithLabelValues(lo.Name).Inc()
		log.Warn("a message held here was delivered again; it goes back until this delivery settles", "msg_id", m.ID, "attempt", attempt)
		return p, consume.Retry(pausedRetry), false
	}
	defer func() {
		if !ok {
			s.release(m.ID)
		}
	}()
	// A first delivery of a message this process handled before is one the
	// server forgot it had delivered (it restarted): it is checked like a
	// redelivery, as are the first ones after an unclean stop (firstCheck).
	seen := s.seen(m.ID) && attempt == 1 // every delivery is remembered
	risky := false
	checked := attempt == 1 && !seen && s.firstCheck(msg.Subject())
	if suspect := seen || checked; attempt > 1 || suspect {
		// Redelivered: a lost ack, a crash or a shutdown may have come after
		// the SMSC accepted it. Submitting again would send a second SMS, and
		// expiring or failing it would contradict its receipt: check first.
		// The same for a suspect: one of the first after an unclean stop.
		var done bool
		if o, done, risky = s.redelivered(ctx, lo, m, attempt, log); done {
			if checked {
				s.firstCheckUndo(msg.Subject())
			}
			return p, o, false
		}
		risky = risky || suspect
	}
	if !m.ExpiresAt.IsZero() && time.Now().After(m.ExpiresAt) {
		return p, s.final(ctx, status.Event{ID: m.ID, Status: status.Expired, Stage: "egress", Campaign: m.Campaign, Pool: lo.Pool, Attempt: attempt}, lo.Name, "expired"), false
	}
	if attempt > s.opts.MaxAttempts {
		return p, s.final(ctx, status.Event{ID: m.ID, Status: status.Failed, Reason: status.ReasonMaxAttempts, Stage: "egress", Campaign: m.Campaign, Pool: lo.Pool, Attempt: attempt,
			Detail: fmt.Sprintf("gave up after %d attempts", attempt-1)}, lo.Name, "max_attempts"), false
	}
	src := m.From
	if src == "" {
		src = lo.Source
	}
	return prepared{m: m, attempt: attempt, src: src, risky: risky}, o, true
}

// send submits a prepared message on a token granted at granted, and decides
// its outcome.
func (s *Stage) send(ctx context.Context, lo LinkOptions, link *smpplink.Link, p *pace, msg jetstream.Msg, pr prepared, granted time.Time, log *slog.Logger) consume.Outcome {
	m, attempt, src := pr.m, pr.attempt, pr.src
	if !m.ExpiresAt.IsZero() && time.Now().After(m.ExpiresAt) {
		// It expired while it waited for the token (the token is unused).
		return s.final(ctx, status.Event{ID: m.ID, Status: status.Expired, Stage: "egress", Campaign: m.Campaign, Pool: lo.Pool, Attempt: attempt}, lo.Name, "expired")
	}
	if p.cutSince(granted) {
		// The SMSC throttled the link after this token was granted: the
		// token is from the rate that overran. Wait out the hold instead.
		if !s.token(ctx, p, log) {
			s.recordGiveBack(ctx, lo, pr.m, pr.attempt, pr.risky, "shutting down", log)
			return consume.Retry(0)
		}
		granted = time.Now()
	}
	nextPart := func(ctx context.Context) error {
		_ = consume.Touch(msg) // a long message on a slow link can outlast the ack wait
		if !s.token(ctx, p, log) {
			return ctx.Err()
		}
		return nil
	}
	if pr.risky {
		s.countResubmit(lo, m, attempt, log)
	}
	res, err := link.Submit(ctx, smpplink.Short{Src: src, Dst: m.To, Text: m.Text, Receipt: true, NextPart: nextPart,
		TokenAt: granted, MaxLate: staleToken})
	if err != nil {
		return s.submitFailed(ctx, lo, p, pr, err, log)
	}
	p.accepted(time.Now())
	s.m.submits.WithLabelValues(lo.Name, "ok").Inc()
	if err := s.recordSubmitted(ctx, lo, m, attempt, res); err != nil {
		// The SMSC has the message; recordSubmitted kept trying until the
		// shutdown grace ran out. The redelivery check finds the submitted
		// status if it was written; if not, the message is sent again.
		s.m.duplicatesRisked.WithLabelValues(lo.Name).Inc()
		log.Error("submitted but could not record it before shutdown", "msg_id", m.ID, "err", err)
		return consume.Retry(0)
	}
	log.Debug("submitted", "msg_id", m.ID, "smsc_ids", res.IDs, "attempt", attempt)
	return consume.Ack()
}

// recordSubmitted arms the message's receipt timeout, publishes the
// submitted status, then stores every part's SMSC id in sms_dlr_index. The
// order matters: the receipts stage retries a receipt until its index entry
// exists, so when it finds one the submitted event is already in the
// history, before the final one, and the timer is there for it to drop.
func (s *Stage) recordSubmitted(ctx context.Context, lo LinkOptions, m envelope.Message, attempt int, res smpplink.Result) error {
	ev := status.Event{ID: m.ID, Status: status.Submitted, Stage: "egress", Campaign: m.Campaign, Pool: lo.Pool, Link: lo.Name,
		SMSCID: strings.Join(res.IDs, ","), Parts: len(res.IDs), Attempt: attempt, At: time.Now().UTC()}
	// Only a record is retried here, never the submit: until ctx (the
	// shutdown grace) ends, however long NATS is away. A timer armed again
	// replaces the first (one schedule per subject).
	return retry(ctx, 24*time.Hour, func(ctx context.Context) error {
		if err := dlr.ArmTimeout(ctx, s.js, ev, s.opts.ReceiptTimeout); err != nil {
			return err
		}
		seq, err := s.pub.PublishSeq(ctx, ev)
		if err != nil && !errors.Is(err, status.ErrAlreadyFinal) {
			return err
		}
		return s.indexParts(ctx, lo.Name, m.ID, res.IDs, seq)
	})
}

// indexParts stores each part's SMSC id in sms_dlr_index, under its
// canonical form for the link (dlr.CanonicalID), with its part number.
func (s *Stage) indexParts(ctx context.Context, link, id string, smscIDs []string, statusSeq uint64) error {
	form := dlr.IDText
	for _, lo := range s.links {
		if lo.Name == link {
			form = lo.RespIDs
		}
	}
	for i, sid := range smscIDs {
		entry, _ := json.Marshal(dlr.IndexEntry{ID: id, Parts: len(smscIDs), Part: i + 1, StatusSeq: statusSeq})
		if _, err := s.index.Put(ctx, dlr.Key(link, dlr.CanonicalID(sid, form)), entry); err != nil {
			return fmt.Errorf("index %s: %w", sid, err)
		}
	}
	return nil
}

// redelivered decides a message that comes back after an earlier attempt.
// If its latest status says the SMSC already has it (submitted) or its fate
// is settled (terminal), it is acked without a second submit; a submitted
// one gets its receipt index written again, in case the crash came between
// the status and the index. done is false when it should be submitted, and
// then risky says whether that submit may send it twice (unknownBefore).
func (s *Stage) redelivered(ctx context.Context, lo LinkOptions, m envelope.Message, attempt int, log *slog.Logger) (o consume.Outcome, done, risky bool) {
	ev, err := s.pub.Latest(ctx, m.ID)
	switch {
	case errors.Is(err, status.ErrNotFound):
		return o, false, true // no record of any attempt at all
	case err != nil:
		// Cannot tell: wait rather than risk a second SMS.
		return consume.Retry(s.opts.BackoffMin), true, false
	case status.Terminal(ev.Status):
		log.Info("redelivered message already final; not sent again", "msg_id", m.ID, "status", ev.Status)
		return consume.Ack(), true, false
	case ev.Status == status.Submitted:
		link := ev.Link
		if link == "" {
			link = lo.Name
		}
		// The crash may have come between the status and the index entry;
		// the timer is armed again too (it replaces the one armed before,
		// at the same time): one that never was (a submit recorded by an
		// older version) would leave the message without a timeout.
		if err := dlr.ArmTimeout(ctx, s.js, ev, s.opts.ReceiptTimeout); err != nil {
			return consume.Retry(s.opts.BackoffMin), true, false
		}
		if err := s.indexParts(ctx, link, m.ID, strings.Split(ev.SMSCID, ","), 0); err != nil {
			return consume.Retry(s.opts.BackoffMin), true, false
		}
		s.m.redeliveredSubmitted.WithLabelValues(lo.Name).Inc()
		log.Info("redelivered message was already submitted; not sent again", "msg_id", m.ID, "smsc_id", ev.SMSCID)
		return consume.Ack(), true, false
	}
	return o, false, unknownBefore(attempt, ev)
}

// IndexEntry is the value of an sms_dlr_index key; it lives in pkg/dlr,
// which the receipts stage reads it with.
type IndexEntry = dlr.IndexEntry

func (s *Stage) submitFailed(ctx context.Context, lo LinkOptions, p *pace, pr prepared, err error, log *slog.Logger) consume.Outcome {
	m, attempt := pr.m, pr.attempt
	var se *smpplink.SubmitError
	if !errors.As(err, &se) {
		se = &smpplink.SubmitError{Link: lo.Name, Class: smpplink.Retryable, Err: err}
	}
	s.m.submits.WithLabelValues(lo.Name, se.Class.String()).Inc()
	if ctx.Err() != nil {
		// Shutdown past its grace: give the message back untouched. When
		// the SMSC cannot have any of it, say so (this submit, if risky, is
		// counted already); else leave no record: the next one counts.
		if !se.Unknown && se.Sent == 0 {
			s.recordGiveBack(ctx, lo, m, attempt, false, "shutting down: "+se.Err.Error(), log)
		}
		return consume.Retry(0)
	}
	ev := status.Event{ID: m.ID, Stage: "egress", Campaign: m.Campaign, Pool: lo.Pool, Link: lo.Name, Code: int(se.Status), Attempt: attempt, Detail: se.Err.Error(),
		Parts: se.Sent} // parts the SMSC accepted before the failure: unknownBefore reads it
	switch se.Class {
	case smpplink.Permanent:
		ev.Status, ev.Reason = status.Failed, status.ReasonPermanent
		log.Warn("submit refused", "msg_id", m.ID, "command_status", fmt.Sprintf("0x%02x", uint32(se.Status)), "err", se.Err)
		return s.final(ctx, ev, lo.Name, "permanent")
	case smpplink.Throttled:
		ev.Status = status.Throttled
		s.m.throttles.WithLabelValues(lo.Name).Inc()
		p.throttled(time.Now())
	default:
		ev.Status = status.Retry
		if se.Unknown {
			ev.Status = status.SubmitUnknown
		}
	}
	if se.Unknown || se.Sent > 0 {
		// The SMSC may have this submit, or has some parts of a long
		// message: the retry sends them again.
		s.m.duplicatesRisked.WithLabelValues(lo.Name).Inc()
	}
	delay := consume.BackoffN(uint64(attempt), s.opts.BackoffMin, s.opts.BackoffMax, jitter())
	s.m.retries.WithLabelValues(lo.Name).Inc()
	if err := s.pub.Publish(ctx, ev); err != nil {
		log.Warn("could not record retry", "msg_id", m.ID, "err", err)
	}
	log.Warn("submit failed, retrying", "msg_id", m.ID, "class", se.Class.String(), "attempt", attempt, "retry_in", delay, "err", se.Err)
	return consume.Retry(delay)
}

// final publishes a terminal status and acks; if publishing fails the message
// is retried, so the status is never lost.
func (s *Stage) final(ctx context.Context, ev status.Event, link, result string) consume.Outcome {
	if err := s.pub.Publish(ctx, ev); err != nil && !errors.Is(err, status.ErrAlreadyFinal) {
		return consume.Retry(s.opts.BackoffMin)
	}
	s.m.final.WithLabelValues(link, ev.Status).Inc()
	return consume.Ack()
}
