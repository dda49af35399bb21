// Package smpplink is one SMPP link to an SMSC: a go-smpp transceiver bind
// with a window of in-flight submits, a configured response timeout, bind
// state, and submit errors classified once, where SMPP meets the pipeline.
package smpplink

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fiorix/go-smpp/smpp"
	"github.com/fiorix/go-smpp/smpp/pdu"
	"github.com/fiorix/go-smpp/smpp/pdu/pdufield"
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
// other than Connected, the link closes that transceiver and binds a fresh
// one after a backoff with jitter.
type Link struct {
	cfg     Config
	deliver Deliver
	window  chan struct{}
	bound   atomic.Bool
	log     *slog.Logger

	mu      sync.Mutex
	tx      *smpp.Transceiver // the current session; replaced on reconnect
	boundCh chan struct{}     // closed and replaced on each change of bound
	lastErr error

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
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	go l.supervise()
	return l
}

// parked is go-smpp's own retry interval: long enough never to fire, since
// the supervisor replaces a session that is not bound.
const parked = 24 * time.Hour

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
		l.mu.Lock()
		l.tx = tx
		l.mu.Unlock()
		status := tx.Bind()
		stopped, heard := false, false
	session:
		for {
			select {
			case st, ok := <-status:
				if !ok {
					break session
				}
				heard = true
				if st.Status() == smpp.Connected {
					failures = 0
					l.setBound(true, nil)
					l.log.Info("smpp bound", "addr", l.cfg.Addr, "system_id", l.cfg.SystemID)
					continue
				}
				l.setBound(false, st.Error())
				l.log.Warn("smpp not bound", "state", st.Status().String(), "err", st.Error())
				break session
			case <-l.stop:
				stopped = true
				if !heard {
					// go-smpp's connection loop writes fields that Close
					// reads; its first status orders the two. Wait for it,
					// boundedly (a dial to a dead host has no timeout).
					select {
					case <-status:
					case <-time.After(2 * time.Second):
					}
				}
				break session
			}
		}
		l.setBound(false, nil)
		_ = tx.Close() // unbind (bounded by go-smpp to 1s) and stop its loops
		if stopped {
			return
		}
		failures++
		if !l.wait(backoff(l.cfg.BindInterval, failures)) {
			return
		}
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

func (l *Link) setBound(up bool, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		l.lastErr = err
	}
	if l.bound.Load() != up {
		l.bound.Store(up)
		close(l.boundCh)
		l.boundCh = make(chan struct{})
	}
}

func (l *Link) current() *smpp.Transceiver {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.tx
}

// Name is the link's name.
func (l *Link) Name() string { return l.cfg.Name }

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
	case <-ctx.Done():
		return Result{}, l.fail(ctx.Err())
	}
	defer func() { <-l.window }()
	if !l.bound.Load() {
		return Result{}, l.fail(smpp.ErrNotBound)
	}
	codec, single := Encode(m.Text)
	src := m.Src
	if isDigits(src) {
		src = trimPlus(src)
	}
	sm := &smpp.ShortMessage{Src: src, Dst: trimPlus(m.Dst), Text: codec,
		SourceAddrTON: srcTON(m.Src), SourceAddrNPI: srcNPI(m.Src), DestAddrTON: 1, DestAddrNPI: 1}
	if m.Receipt {
		sm.Register = pdufield.FinalDeliveryReceipt
	}
	if single {
		r, err := l.current().Submit(sm)
		if err != nil {
			return Result{}, l.fail(err)
		}
		return Result{IDs: []string{r.RespID()}}, nil
	}
	parts, err := l.current().SubmitLongMsg(sm)
	if err != nil {
		// Parts already accepted stay sent: the retry sends them again.
		return Result{}, l.fail(err)
	}
	ids := make([]string, 0, len(parts))
	for i := range parts {
		ids = append(ids, parts[i].RespID())
	}
	return Result{IDs: ids}, nil
}

func (l *Link) fail(err error) *SubmitError {
	return &SubmitError{Link: l.cfg.Name, Status: statusOf(err), Class: Classify(err), Unknown: outcomeUnknown(err), Err: err}
}

// Close unbinds and stops reconnecting. It is idempotent and waits (bounded)
// for the session to end.
func (l *Link) Close() error {
	l.closeOnce.Do(func() {
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
