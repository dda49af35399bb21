// Package smpplink is one SMPP link to an SMSC: one or more sessions, each a
// transceiver, or a transmitter and a receiver, over TCP or TLS, with
// a window of in-flight submits per session, a configured response timeout,
// bind state, texts encoded (GSM 03.38 or UCS-2) and split (UDH or SAR), and
// submit errors classified once, where SMPP meets the pipeline.
package smpplink

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fiorix/go-smpp/smpp"
	"github.com/fiorix/go-smpp/smpp/pdu"
	"github.com/fiorix/go-smpp/smpp/pdu/pdufield"
	"github.com/fiorix/go-smpp/smpp/pdu/pdutext"
	"github.com/fiorix/go-smpp/smpp/pdu/pdutlv"
)

// slot is one bind of the link, kept bound by its own supervisor: a
// transceiver or transmitter with its own window, or a receiver (tx_rx).
type slot struct {
	n      int           // 1-based, in logs
	rx     bool          // a receiver: deliver_sm only, never submitted on
	window chan struct{} // submits in flight on this bind; nil for a receiver
	lost   chan *session // a session Submit found dead (see reportLost)
	conn   *session      // the bound session; nil while unbound (guarded by Link.mu)
}

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
	EnquireLink  time.Duration // enquire_link interval; 10s when 0 (the minimum)
	// Sessions is how many binds the link keeps (each with its own Window of
	// submits in flight), where the SMSC allows several; 1 when 0.
	Sessions int
	// BindMode is BindTRX (one transceiver per session, the default) or
	// BindTXRX (a transmitter for submits and a receiver for deliver_sm).
	BindMode BindMode
	TLS      *tls.Config // nil: plain TCP
	Split    Split       // how long messages are tied together; SplitUDH when ""
	// DeliverQueue is how many deliver_sm a bind holds while Deliver is
	// storing an earlier one; DeliverQueue when 0.
	DeliverQueue int
	// DeliverStorers is how many deliver_sm a bind has Deliver store at
	// once; DeliverStorers when 0.
	DeliverStorers int
}

// BindMode is how a session binds.
type BindMode string

const (
	BindTRX  BindMode = "trx"   // bind_transceiver: submits and deliver_sm on one connection
	BindTXRX BindMode = "tx_rx" // bind_transmitter + bind_receiver: two connections per session
)

// Deliver receives each deliver_sm of the link: DeliverStorers at once per
// bind, those of one source address one at a time, in the order they came
// (see storerOf). It runs apart from the link's read loop (submits do
// not wait for it), and the deliver_sm_resp goes out when it returns: it
// stores the PDU durably before returning nil ("stored before
// acknowledged"). An error means not stored: the SMSC is answered
// ESME_RX_T_APPN (temporary error) and sends it again later.
//
// ctx is the life of the bind that read p: it is done once that connection
// has ended. A Deliver that retries must stop then and return an error (no
// answer can go out on a connection that is gone): the SMSC, never having
// had its deliver_sm_resp, sends p again on the next bind, and a store that
// went on retrying for the old bind would store it a second time.
type Deliver func(ctx context.Context, p pdu.Body) error

// DeliverQueue is how many deliver_sm a bind holds for Deliver when
// Config.DeliverQueue is 0. Beyond them a deliver_sm is answered
// ESME_RX_T_APPN at once (see session.serve). An SMSC sends only a window
// of deliver_sm unanswered (tens, commonly), so the queue fills only with
// one that sends without a window, as the simulator does, while the store
// is down; a decoded receipt takes at most ~3 KB, so a full queue ~3 MB.
const DeliverQueue = 1024

// Link is an SMPP link of Sessions binds (two each in tx_rx mode), each
// bound (or binding) on its own. Safe for concurrent use. A submit goes to
// the bound session with the fewest in flight.
//
// Every bind reconnects by itself: on any status other than Connected, the
// link closes that session, waits for its goroutines to end, and binds a
// fresh one after a backoff with jitter. The sessions are the link's own
// (session.go), on go-smpp's PDU codec and connection.
type Link struct {
	cfg     Config
	deliver Deliver
	window  chan struct{} // submits in flight on the whole link: Window x Sessions
	slots   []*slot
	bound   atomic.Bool   // some session can submit
	ref     atomic.Uint32 // reference of the next long message: consecutive, so 256 in a row differ
	log     *slog.Logger

	mu      sync.Mutex
	boundCh chan struct{} // closed and replaced on each change of bound
	lastErr error

	closing   chan struct{} // closed when Close begins: no new submits
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
	cfg.Sessions = max(cfg.Sessions, 1)
	if cfg.BindMode == "" {
		cfg.BindMode = BindTRX
	}
	if cfg.Split == "" {
		cfg.Split = SplitUDH
	}
	if cfg.DeliverStorers <= 0 {
		cfg.DeliverStorers = DeliverStorers
	}
	if cfg.DeliverQueue <= 0 {
		cfg.DeliverQueue = DeliverQueue
	}
	l := &Link{
		cfg:     cfg,
		deliver: deliver,
		window:  make(chan struct{}, cfg.Window*cfg.Sessions),
		log:     log,
		boundCh: make(chan struct{}),
		closing: make(chan struct{}),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	l.ref.Store(rand.Uint32())
	for i := range cfg.Sessions {
		l.slots = append(l.slots, &slot{n: i + 1, window: make(chan struct{}, cfg.Window), lost: make(chan *session, 1)})
		if cfg.BindMode == BindTXRX {
			l.slots = append(l.slots, &slot{n: i + 1, rx: true, lost: make(chan *session, 1)})
		}
	}
	var wg sync.WaitGroup
	for _, s := range l.slots {
		wg.Add(1)
		go func() { defer wg.Done(); l.supervise(s) }()
	}
	go func() { wg.Wait(); close(l.done) }()
	return l
}

// Window is how many submits the link takes in flight: Window per session.
func (l *Link) Window() int { return cap(l.window) }

// Bounds on waiting for a session: its first status after Bind (a dial to a
// dead host has no timeout of its own), and the end of its goroutines after
// Close.
const (
	firstStatusWait = 2 * time.Second
	loopEndWait     = time.Second
)

// errSessionLost is the bind error recorded when Submit finds the session
// dead before its status said so.
var errSessionLost = errors.New("smpp session lost")

// newConn makes a fresh, unbound session for slot s: a transceiver (trx), or
// a transmitter or a receiver (tx_rx).
func (l *Link) newConn(s *slot) *session {
	c := &session{addr: l.cfg.Addr, tls: l.cfg.TLS, user: l.cfg.SystemID, passwd: l.cfg.Password,
		systemType: l.cfg.SystemType, enquireLink: l.cfg.EnquireLink, respTimeout: l.cfg.RespTimeout,
		queue: l.cfg.DeliverQueue, storers: l.cfg.DeliverStorers}
	switch {
	case s.rx:
		c.kind = bindRX
	case l.cfg.BindMode == BindTXRX:
		c.kind = bindTX
		return c // no deliver_sm on a transmitter
	default:
		c.kind = bindTRX
	}
	c.handler = func(ctx context.Context, p pdu.Body) error {
		if l.deliver == nil {
			return nil
		}
		return l.deliver(ctx, p)
	}
	return c
}

// supervise keeps slot s bound until Close.
func (l *Link) supervise(s *slot) {
	failures := 0
	for {
		c := l.newConn(s)
		status := c.Bind()
		up, stopped := l.run(s, c, status)
		l.setSession(s, nil, nil)
		_ = c.Close() // unbind and stop its loops
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
func (l *Link) run(s *slot, c *session, status <-chan smpp.ConnStatus) (up, stopped bool) {
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
				l.setSession(s, c, nil)
				l.log.Info("smpp bound", "addr", l.cfg.Addr, "system_id", l.cfg.SystemID, "session", s.n, "receiver", s.rx)
				continue
			}
			l.setSession(s, nil, st.Error())
			l.log.Warn("smpp not bound", "state", st.Status().String(), "err", st.Error(), "session", s.n, "receiver", s.rx)
			return up, false
		case dead := <-s.lost:
			if dead != c {
				continue // a report about an earlier session
			}
			// A Submit saw the connection gone before its status came.
			l.setSession(s, nil, errSessionLost)
			l.log.Warn("smpp not bound", "state", "lost", "err", errSessionLost, "session", s.n)
			return up, false
		case <-l.stop:
			if !heard {
				// Close before the session's first status: wait for it,
				// boundedly (a dial to a dead host has no timeout), so its
				// goroutine is done with the connection before Close.
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

// awaitEnd waits (bounded) until the session closes its status channel, which
// it does when its goroutines have ended (a store in progress included), so
// they are gone before the next one starts or Close returns.
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
			l.log.Debug("smpp session still storing a deliver_sm after close")
			return
		}
	}
}

// reportLost tells the supervisor of s that a submit on c found no connection.
func (l *Link) reportLost(s *slot, c *session) {
	select {
	case s.lost <- c:
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

// setSession makes c the bound session of s (nil: unbound) and records err.
// Submit sees a session only once it reported Connected.
func (l *Link) setSession(s *slot, c *session, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		l.lastErr = err
	}
	s.conn = c
	up := false
	for _, s := range l.slots {
		up = up || (!s.rx && s.conn != nil)
	}
	if l.bound.Load() != up {
		l.bound.Store(up)
		close(l.boundCh)
		l.boundCh = make(chan struct{})
	}
}

// session picks the bound submitting session with the fewest submits in
// flight, nil when none is bound.
func (l *Link) session() (*slot, *session) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var best *slot
	for _, s := range l.slots {
		if s.rx || s.conn == nil {
			continue
		}
		if best == nil || len(s.window) < len(best.window) {
			best = s
		}
	}
	if best == nil {
		return nil, nil
	}
	return best, best.conn
}

// Bound reports whether the link is bound now: some session can submit.
func (l *Link) Bound() bool { return l.bound.Load() }

// Binds is how many of the link's binds are up now, receivers included, and
// how many it keeps.
func (l *Link) Binds() (up, want int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.slots {
		if s.conn != nil {
			up++
		}
	}
	return up, len(l.slots)
}

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
	s, tx := l.session()
	if tx == nil || l.isClosing() {
		return Result{}, l.fail(smpp.ErrNotBound)
	}
	// The link's window has room, so some session's has too, unless a
	// session went down and left its share to the others: wait for one.
	select {
	case s.window <- struct{}{}:
	case <-l.closing:
		return Result{}, l.fail(smpp.ErrNotBound)
	case <-ctx.Done():
		return Result{}, l.fail(ctx.Err())
	}
	defer func() { <-s.window }()
	codec, single := Encode(m.Text)
	src := m.Src
	if isDigits(src) {
		src = trimPlus(src)
	}
	short := func(text pdutext.Codec, esm uint8, tlv pdutlv.Fields) *smpp.ShortMessage {
		sm := &smpp.ShortMessage{Src: src, Dst: trimPlus(m.Dst), Text: text, ESMClass: esm, TLVFields: tlv,
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
		id, err := tx.Submit(short(codec, 0, nil))
		if err != nil {
			return Result{}, l.failOn(s, tx, err)
		}
		return Result{IDs: []string{id}}, nil
	}
	// The UDH reference has 8 bits: a random one would repeat within a few
	// dozen long messages to one handset, which would then merge them.
	parts := split(codec, l.cfg.Split, uint16(l.ref.Add(1)))
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
		id, err := tx.Submit(short(p, p.esm, p.tlv))
		if err != nil {
			// The parts already accepted stay sent: a retry sends them again.
			se := l.failOn(s, tx, err)
			se.Sent = len(ids)
			return Result{}, se
		}
		ids = append(ids, id)
	}
	return Result{IDs: ids}, nil
}

// ErrTooLong is the error of a text that needs more than 255 parts.
var ErrTooLong = errors.New("smpplink: text needs more than 255 parts")

// failOn is fail for an error of session c of s; ErrNotConnected means c
// has no connection any more, which the supervisor must hear of.
func (l *Link) failOn(s *slot, c *session, err error) *SubmitError {
	if errors.Is(err, smpp.ErrNotConnected) {
		l.reportLost(s, c)
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
// within RespTimeout + 6s, at once when nothing is in flight. deliver_sm
// queued but not yet stored are never answered: the SMSC sends them again
// on the next bind.
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

// TLSConfig is the client TLS setting of a link to addr: the system roots,
// or only the PEM certificates in caFile when it is set; skipVerify turns
// certificate checks off (test SMSCs only).
func TLSConfig(addr, caFile string, skipVerify bool) (*tls.Config, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("smpplink: tls: address %q: %w", addr, err)
	}
	c := &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12, InsecureSkipVerify: skipVerify} //nolint:gosec // opt-in, for test SMSCs
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("smpplink: tls_ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("smpplink: tls_ca %s: no PEM certificate in it", caFile)
		}
		c.RootCAs = pool
	}
	return c, nil
}
