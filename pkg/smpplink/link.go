// Package smpplink is one SMPP link to an SMSC: a go-smpp transceiver bind
// with a window of in-flight submits, a configured response timeout, bind
// state, and submit errors classified once, where SMPP meets the pipeline.
package smpplink

import (
	"context"
	"fmt"
	"log/slog"
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
type Link struct {
	cfg    Config
	tx     *smpp.Transceiver
	window chan struct{}
	bound  atomic.Bool
	log    *slog.Logger

	boundCh   chan struct{} // closed and replaced on each change to bound
	mu        sync.Mutex
	lastErr   error
	watchDone chan struct{}
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
		cfg:       cfg,
		window:    make(chan struct{}, cfg.Window),
		log:       log,
		boundCh:   make(chan struct{}),
		watchDone: make(chan struct{}),
	}
	l.tx = &smpp.Transceiver{
		Addr:        cfg.Addr,
		User:        cfg.SystemID,
		Passwd:      cfg.Password,
		SystemType:  cfg.SystemType,
		EnquireLink: cfg.EnquireLink,
		// The pinned go-smpp fails a submit at once with ErrMaxWindowSize when
		// its window is full; the window channel above waits instead, so
		// go-smpp's own window stays off (0).
		RespTimeout:  cfg.RespTimeout,
		BindInterval: cfg.BindInterval,
		Handler: func(p pdu.Body) {
			if p.Header().ID == pdu.DeliverSMID && deliver != nil {
				deliver(p)
			}
		},
	}
	status := l.tx.Bind()
	go l.watch(status)
	return l
}

func (l *Link) watch(status <-chan smpp.ConnStatus) {
	defer close(l.watchDone)
	for st := range status {
		up := st.Status() == smpp.Connected
		l.mu.Lock()
		if st.Error() != nil {
			l.lastErr = st.Error()
		}
		if l.bound.Load() != up {
			l.bound.Store(up)
			close(l.boundCh)
			l.boundCh = make(chan struct{})
		}
		l.mu.Unlock()
		if up {
			l.log.Info("smpp bound", "addr", l.cfg.Addr, "system_id", l.cfg.SystemID)
		} else {
			l.log.Warn("smpp not bound", "state", st.Status().String(), "err", st.Error())
		}
	}
	l.mu.Lock()
	if l.bound.Swap(false) {
		close(l.boundCh)
		l.boundCh = make(chan struct{})
	}
	l.mu.Unlock()
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
		r, err := l.tx.Submit(sm)
		if err != nil {
			return Result{}, l.fail(err)
		}
		return Result{IDs: []string{r.RespID()}}, nil
	}
	parts, err := l.tx.SubmitLongMsg(sm)
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
// for the connection manager to stop.
func (l *Link) Close() error {
	l.closeOnce.Do(func() {
		_ = l.tx.Close()
		select {
		case <-l.watchDone:
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
