// Package smpplink is one SMPP link to an SMSC: a go-smpp transceiver bind
// with a window of in-flight submits, a configured response timeout, bind
// state, and submit errors classified once, where SMPP meets the pipeline.
package smpplink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fiorix/go-smpp/smpp"
	"github.com/fiorix/go-smpp/smpp/pdu"
	"github.com/fiorix/go-smpp/smpp/pdu/pdufield"
	"github.com/fiorix/go-smpp/smpp/pdu/pdutext"
)

// Config is what a link needs to bind. Password is the plain secret: the
// caller reveals it here and nothing in this package logs it.
type Config struct {
	Name         string
	Addr         string
	SystemID     string
	Password     string
	SystemType   string
	Window       int           // in-flight submits; 1 when 0
	RespTimeout  time.Duration // submit_sm_resp timeout; 5s when 0
	BindInterval time.Duration // wait between bind attempts; 1s when 0
	EnquireLink  time.Duration // enquire_link interval; 10s when 0 (go-smpp's minimum)
}

// Deliver receives each deliver_sm of the link. It runs on the link's read
// loop and go-smpp sends the deliver_sm_resp when it returns: store the PDU
// durably before returning ("stored before acknowledged"), and keep it short,
// since every submit_sm_resp of the link waits behind it.
type Deliver func(p pdu.Body)

// Link is a bound (or binding) SMPP session. Safe for concurrent use.
//
// The link reconnects by itself, but not with go-smpp's reconnect: in the
// pinned version, client.Bind replaces its inbox channel on each reconnect
// while the previous session's reader may still read it (a data race). So
// go-smpp's own retry is parked (BindInterval of a day) and, on any status
// other than Connected, the link closes that transceiver, waits for its
// connection loop to end, and binds a fresh one after a backoff with jitter.
type Link struct {
	cfg     Config
	deliver Deliver
	window  chan struct{}
	bound   atomic.Bool
	log     *slog.Logger

	mu      sync.Mutex
	tx      *smpp.Transceiver // the bound session; nil while unbound
	boundCh chan struct{}     // closed and replaced on each change of bound
	lastErr error

	lost      chan *smpp.Transceiver // a session Submit found dead (see reportLost)
	closing   chan struct{}          // closed when Close begins: no new submits
	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

// Open starts binding in the background and returns at once; Submit waits
// for a window slot, and fails with a Retryable error while unbound.
func Open(cfg Config, deliver Deliver, log *slog.Logger) *Link {
	if cfg.Window <= 0 {
		cfg.Window = 1
	}
	if cfg.RespTimeout <= 0 {
		cfg.RespTimeout = 5 * time.Second
	}
	if cfg.BindInterval <= 0 {
		cfg.BindInterval = time.Second
	}
	l := &Link{
		cfg:     cfg,
		deliver: deliver,
		window:  make(chan struct{}, cfg.Window),
		log:     log,
		boundCh: make(chan struct{}),
		lost:    make(chan *smpp.Transceiver, 1),
		closing: make(chan struct{}),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	go l.supervise()
	return l
}

// parked is go-smpp's own retry interval: long enough never to fire, since
// the supervisor replaces a session that is not bound.
const parked = 24 * time.Hour

// Bounds on waiting for go-smpp: its first status after Bind (a dial to a
// dead host has no timeout of its own), and the end of its connection loop
// after Close.
const (
	firstStatusWait = 2 * time.Second
	loopEndWait     = time.Second
)

// errSessionLost is the bind error recorded when Submit finds the session
// dead before go-smpp reported it.
var errSessionLost = errors.New("smpp session lost")

func (l *Link) newTransceiver() *smpp.Transceiver {
	return &smpp.Transceiver{
		Addr:        l.cfg.Addr,
		User:        l.cfg.SystemID,
		Passwd:      l.cfg.Password,
		SystemType:  l.cfg.SystemType,
		EnquireLink: l.cfg.EnquireLink,
		// The pinned go-smpp fails a submit at once with ErrMaxWindowSize when
		// its window is full; the window channel of Link waits instead, so
		// go-smpp's own window stays off (0).
		RespTimeout:  l.cfg.RespTimeout,
		BindInterval: parked,
		Handler: func(p pdu.Body) {
			if p.Header().ID == pdu.DeliverSMID && l.deliver != nil {
				l.deliver(p)
			}
		},
	}
}

// supervise keeps one session bound until Close.
func (l *Link) supervise() {
	defer close(l.done)
	failures := 0
	for {
		tx := l.newTransceiver()
		status := tx.Bind()
		up, stopped := l.run(tx, status)
		l.setSession(nil, nil)
		_ = tx.Close() // unbind (bounded by go-smpp to 1s) and stop its loops
		l.awaitEnd(status)
		if stopped {
			return
		}
		if up {
			failures = 0
		}
		failures++
		if !l.wait(backoff(l.cfg.BindInterval, failures)) {
			return
		}
	}
}

// run follows one session until it is no longer bound or Close is called.
// up reports whether it was ever bound; stopped, whether Close ended it.
func (l *Link) run(tx *smpp.Transceiver, status <-chan smpp.ConnStatus) (up, stopped bool) {
	heard := false
	for {
		select {
		case st, ok := <-status:
			if !ok {
				return up, false
			}
			heard = true
			if st.Status() == smpp.Connected {
				up = true
				l.setSession(tx, nil)
				l.log.Info("smpp bound", "addr", l.cfg.Addr, "system_id", l.cfg.SystemID)
				continue
			}
			l.setSession(nil, st.Error())
			l.log.Warn("smpp not bound", "state", st.Status().String(), "err", st.Error())
			return up, false
		case dead := <-l.lost:
			if dead != tx {
				continue // a report about an earlier session
			}
			// go-smpp sends its statuses without blocking into a channel of
			// one: a Disconnected right after Connected can be dropped,
			// which would leave this session "bound" for ever.
			l.setSession(nil, errSessionLost)
			l.log.Warn("smpp not bound", "state", "lost", "err", errSessionLost)
			return up, false
		case <-l.stop:
			if !heard {
				// Close before go-smpp's first status would let a dial that
				// succeeds later bind a session nobody closes. Wait for it,
				// boundedly (a dial to a dead host has no timeout).
				t := time.NewTimer(firstStatusWait)
				defer t.Stop()
				select {
				case <-status:
				case <-t.C:
				}
			}
			return up, true
		}
	}
}

// awaitEnd waits (bounded) until go-smpp closes the status channel, which it
// does when its connection loop has ended, so a session's goroutines are gone
// before the next one starts or Close returns.
func (l *Link) awaitEnd(status <-chan smpp.ConnStatus) {
	t := time.NewTimer(loopEndWait)
	defer t.Stop()
	for {
		select {
		case _, ok := <-status:
			if !ok {
				return
			}
		case <-t.C:
			l.log.Debug("go-smpp connection loop still running after close")
			return
		}
	}
}

// reportLost tells the supervisor that a submit on tx found no connection.
func (l *Link) reportLost(tx *smpp.Transceiver) {
	select {
	case l.lost <- tx:
	default:
	}
}

// backoff is the wait before bind attempt n+1: BindInterval doubling per
// failure up to 32x, with jitter in [d/2, d).
func backoff(base time.Duration, failures int) time.Duration {
	d := base << min(failures-1, 5)
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
}

func (l *Link) wait(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-l.stop:
		return false
	}
}

// setSession makes tx the bound session (nil: unbound) and records err.
// Submit sees a transceiver only once go-smpp reported it Connected, which is
// after Transceiver.Bind has set its fields.
func (l *Link) setSession(tx *smpp.Transceiver, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		l.lastErr = err
	}
	l.tx = tx
	if up := tx != nil; l.bound.Load() != up {
		l.bound.Store(up)
		close(l.boundCh)
		l.boundCh = make(chan struct{})
	}
}

func (l *Link) session() *smpp.Transceiver {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.tx
}

// Bound reports whether the link is bound now.
func (l *Link) Bound() bool { return l.bound.Load() }

// LastError is the most recent bind or connection error, nil if none.
func (l *Link) LastError() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lastErr
}

// WaitBound blocks until the link is bound or ctx is done.
func (l *Link) WaitBound(ctx context.Context) error {
	for {
		l.mu.Lock()
		up, ch := l.bound.Load(), l.boundCh
		l.mu.Unlock()
		if up {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Short is one message to submit.
type Short struct {
	Src, Dst string
	Text     string
	Receipt  bool // ask for a delivery receipt
	// NextPart, when set, is called before every part after the first of a
	// long message: each part is a submit_sm and costs a pacing token (the
	// caller took the first one before it fetched the message).
	NextPart func(ctx context.Context) error
	// TokenAt is when the caller's token for the first part was granted.
	// When more than MaxLate has passed by the time the first part would go
	// out (a slow status read, a full window), NextPart is called for a
	// fresh one first: a late submit crowds the next slot.
	TokenAt time.Time
	MaxLate time.Duration
}

// Result of a successful submit: the SMSC's message id of every part.
type Result struct {
	IDs []string
}

// Submit sends m as one submit_sm, or as concatenated parts when it does not
// fit in one. It waits for a window slot (or ctx). An error is a *SubmitError.
func (l *Link) Submit(ctx context.Context, m Short) (Result, error) {
	select {
	case l.window <- struct{}{}:
	case <-l.closing:
		return Result{}, l.fail(smpp.ErrNotBound)
	case <-ctx.Done():
		return Result{}, l.fail(ctx.Err())
	}
	defer func() { <-l.window }()
	tx := l.session()
	if tx == nil || l.isClosing() {
		return Result{}, l.fail(smpp.ErrNotBound)
	}
	codec, single := Encode(m.Text)
	src := m.Src
	if isDigits(src) {
		src = trimPlus(src)
	}
	short := func(text pdutext.Codec, esm uint8) *smpp.ShortMessage {
		sm := &smpp.ShortMessage{Src: src, Dst: trimPlus(m.Dst), Text: text, ESMClass: esm,
			SourceAddrTON: srcTON(m.Src), SourceAddrNPI: srcNPI(m.Src), DestAddrTON: 1, DestAddrNPI: 1}
		if m.Receipt {
			sm.Register = pdufield.FinalDeliveryReceipt
		}
		return sm
	}
	if m.NextPart != nil && !m.TokenAt.IsZero() && time.Since(m.TokenAt) > m.MaxLate {
		if err := m.NextPart(ctx); err != nil {
			return Result{}, l.fail(err)
		}
	}
	if single {
		r, err := tx.Submit(short(codec, 0))
		if err != nil {
			return Result{}, l.failOn(tx, err)
		}
		return Result{IDs: []string{r.RespID()}}, nil
	}
	parts := split(codec, uint16(rand.IntN(1<<16)))
	if parts == nil {
		return Result{}, &SubmitError{Link: l.cfg.Name, Class: Permanent, Err: ErrTooLong}
	}
	ids := make([]string, 0, len(parts))
	for i, p := range parts {
		if i > 0 && m.NextPart != nil {
			if err := m.NextPart(ctx); err != nil {
				se := l.fail(err)
				se.Sent = len(ids)
				return Result{}, se
			}
		}
		r, err := tx.Submit(short(part{dcs: codec.Type(), data: p}, esmUDHI))
		if err != nil {
			// The parts already accepted stay sent: a retry sends them again.
			se := l.failOn(tx, err)
			se.Sent = len(ids)
			return Result{}, se
		}
		ids = append(ids, r.RespID())
	}
	return Result{IDs: ids}, nil
}

// ErrTooLong is the error of a text that needs more than 255 parts.
var ErrTooLong = errors.New("smpplink: text needs more than 255 parts")

// failOn is fail for an error of session tx; ErrNotConnected means go-smpp
// has no connection there any more, which the supervisor must hear of.
func (l *Link) failOn(tx *smpp.Transceiver, err error) *SubmitError {
	if errors.Is(err, smpp.ErrNotConnected) {
		l.reportLost(tx)
	}
	return l.fail(err)
}

func (l *Link) fail(err error) *SubmitError {
	return &SubmitError{Link: l.cfg.Name, Status: statusOf(err), Class: Classify(err), Unknown: outcomeUnknown(err), Err: err}
}

// drainWindow takes every window slot, for at most d, and keeps them.
func (l *Link) drainWindow(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	for range cap(l.window) {
		select {
		case l.window <- struct{}{}:
		case <-t.C:
			l.log.Warn("closing with submits still in flight", "waited", d)
			return
		}
	}
}

func (l *Link) isClosing() bool {
	select {
	case <-l.closing:
		return true
	default:
		return false
	}
}

// Close refuses new submits, waits for those in flight (at most RespTimeout
// and a second), unbinds and stops reconnecting. It is idempotent; it returns
// within RespTimeout + 6s, at once when nothing is in flight.
//
// Waiting for the window matters beyond not losing responses: go-smpp's
// Close stops its PDU reader while the connection loop may still be pushing
// PDUs to it, and a PDU read then blocks that loop for ever (a leaked
// goroutine). With no submit_sm_resp due, only a deliver_sm arriving during
// the unbind can still do that.
func (l *Link) Close() error {
	l.closeOnce.Do(func() {
		close(l.closing)
		l.drainWindow(l.cfg.RespTimeout + time.Second)
		close(l.stop)
		select {
		case <-l.done:
		case <-time.After(5 * time.Second):
			l.log.Warn("smpp link did not stop within 5s")
		}
	})
	return nil
}

// srcTON/srcNPI: an alphanumeric sender is TON 5 NPI 0, digits are
// international (TON 1, NPI 1).
func srcTON(src string) uint8 {
	if isDigits(src) {
		return 1
	}
	return 5
}

func srcNPI(src string) uint8 {
	if isDigits(src) {
		return 1
	}
	return 0
}

func isDigits(s string) bool {
	s = trimPlus(s)
	if s == "" {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

func trimPlus(s string) string {
	if len(s) > 0 && s[0] == '+' {
		return s[1:]
	}
	return s
}

func (c Config) String() string { // never prints the password
	return fmt.Sprintf("link %s (%s as %s)", c.Name, c.Addr, c.SystemID)
}

// LogValue keeps the password out of structured logs too (a JSON handler
// would otherwise print every field).
func (c Config) LogValue() slog.Value { return slog.StringValue(c.String()) }
