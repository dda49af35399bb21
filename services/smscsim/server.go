// Package smscsim is an SMSC simulator speaking SMPP 3.4 over TCP, for tests and for the
// `smsflow smsc-sim` command. It accepts bind_transmitter, bind_receiver and bind_transceiver,
// answers submit_sm (with throttling, error injection and a slow mode), and sends delivery
// receipts and mobile-originated messages as deliver_sm. It is shaped like httptest:
// NewServer(t, opts), Addr(), counters, and Close via t.Cleanup.
package smscsim

import (
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fiorix/go-smpp/smpp/pdu"
)

// StatusThrottled is ESME_RTHROTTLED, the submit_sm_resp status of a submit over MaxPerSecond.
const StatusThrottled pdu.Status = 0x58

// ErrNoReceiver means SendMO found no bound receiver or transceiver session to deliver to.
var ErrNoReceiver = errors.New("smscsim: no bound receiver")

// Options configures a Server. The zero value is a usable, unlimited, always-delivering SMSC.
type Options struct {
	Listen string // "127.0.0.1:0" when empty
	// SystemID and Password are the bind credentials: a wrong system_id gets ESME_RBINDFAIL, a
	// wrong password ESME_RINVPASWD, and the connection is closed. An empty value accepts any.
	SystemID string
	Password string
	// ReceiptDelay is the delay between the submit_sm_resp and the delivery receipt; 0 = right away.
	ReceiptDelay time.Duration
	// ReceiptRetry is how long after a client refused a receipt (a non-zero deliver_sm_resp, such
	// as ESME_RX_T_APPN) it is sent again, as an SMSC's retry schedule does; a rebind sends it
	// sooner. 0 = 1s; negative = only at the client's next bind.
	ReceiptRetry time.Duration
	NoReceipts   bool // never send receipts
	// MaxPerSecond is a strict rolling 1000 ms window over all binds: a submit that would make more
	// than this many accepted submits within any 1000 ms gets ESME_RTHROTTLED (0x58) and is not
	// counted as accepted. 0 = unlimited.
	MaxPerSecond int
	// Fail, when set, is asked for every submit_sm that passed the throttle check; a non-zero
	// status is sent as the submit_sm_resp command_status (error injection). n is the 1-based
	// count of submits to dst that reached Fail so far. It runs outside the server's lock, one
	// call at a time, and may call the Server's methods.
	Fail func(dst string, n int) pdu.Status
	// Stat, when set, gives the receipt's stat for a destination ("DELIVRD" when nil or ""); e.g.
	// "UNDELIV", "EXPIRED", "REJECTD". It is asked once per accepted submit, possibly from several
	// connections at once.
	Stat      func(dst string) string
	RespDelay time.Duration // delay before each submit_sm_resp (slow SMSC)
	Log       *slog.Logger  // nil: discard
	// DropEvery, when > 0, drops every connection (as DropConnections) right after each
	// DropEvery-th accepted submit, whose submit_sm_resp is never sent: the client cannot know
	// that the SMSC has it. Drops counts them.
	DropEvery int
	// TLS, when set, makes the server speak SMPP over TLS with this config (see SelfSignedTLS).
	TLS *tls.Config
}

// Submit is one accepted submit_sm, as Server.Submits reports it.
type Submit struct {
	MessageID, Source, Dest string
	DataCoding              uint8
	ESMClass                uint8
	ShortMessage            []byte
	At                      time.Time // when it was accepted (monotonic reading)
	// Text is the part's text as a handset decodes it on its own (UDH left out, GSM 7-bit or
	// UCS-2 per data_coding; a cut character pair shows as a wrong or replacement character).
	Text string
	// Ref, Total and Seq tie a part of a concatenated message (UDH or SAR TLVs); Total is 0 for
	// a single message.
	Ref        int
	Total, Seq int
}

// Server is a running SMSC simulator. All methods are safe for concurrent use.
type Server struct {
	opts   Options
	log    *slog.Logger
	ln     net.Listener
	idPfx  string        // random per server: message ids stay unique across restarts
	idSeq  atomic.Uint64 // message id counter
	seq    atomic.Uint32 // sequence numbers of PDUs the server originates
	done   chan struct{} // closed by Close: stops delayed sends
	wg     sync.WaitGroup
	closer sync.Once
	cerr   error

	decideMu sync.Mutex // serialises submit decisions, so Fail runs outside mu in order

	mu         sync.Mutex
	closed     bool
	sessions   map[*session]struct{}
	window     *window
	accepted   int
	throttled  int
	rejected   int
	acceptedTo map[string]int
	failSeen   map[string]int // n passed to Fail, per destination
	submits    []Submit
	pending    map[string]*receipt // ready receipts not yet acknowledged, by message id
	order      uint64
	acked      int
	refused    int
	drops      int
}

// Start listens on opts.Listen and serves in background goroutines until Close.
func Start(opts Options) (*Server, error) {
	if opts.Listen == "" {
		opts.Listen = "127.0.0.1:0"
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ln, err := net.Listen("tcp", opts.Listen)
	if err != nil {
		return nil, fmt.Errorf("smscsim: listen %s: %w", opts.Listen, err)
	}
	if opts.TLS != nil {
		ln = tls.NewListener(ln, opts.TLS)
	}
	s := &Server{
		opts:       opts,
		log:        log.With("component", "smscsim"),
		ln:         ln,
		idPfx:      rand.Text()[:16], // 80 random bits
		done:       make(chan struct{}),
		sessions:   make(map[*session]struct{}),
		window:     newWindow(opts.MaxPerSecond, time.Second),
		acceptedTo: make(map[string]int),
		failSeen:   make(map[string]int),
		pending:    make(map[string]*receipt),
	}
	s.seq.Store(seqBase)
	s.spawn(s.acceptLoop)
	s.log.Info("smsc simulator listening", "addr", s.Addr(), "max_per_second", opts.MaxPerSecond)
	return s, nil
}

// NewServer starts a Server for a test, fails the test if it cannot, and closes it in t.Cleanup.
func NewServer(t testing.TB, opts Options) *Server {
	t.Helper()
	s, err := Start(opts)
	if err != nil {
		t.Fatalf("smscsim: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// Addr is the listening address, host:port.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Close stops listening, closes every connection and waits for all goroutines. Receipts still
// pending are dropped. It is idempotent and returns the listener's close error, if any.
func (s *Server) Close() error {
	s.closer.Do(func() {
		s.mu.Lock()
		s.closed = true
		conns := make([]net.Conn, 0, len(s.sessions))
		for c := range s.sessions {
			conns = append(conns, c.conn)
		}
		s.mu.Unlock()
		close(s.done)
		s.cerr = s.ln.Close()
		for _, c := range conns {
			_ = c.Close()
		}
		s.wg.Wait()
		s.log.Info("smsc simulator closed", "accepted", s.Accepted(), "receipts_acked", s.ReceiptsAcked())
	})
	return s.cerr
}

// spawn runs f in a goroutine that Close waits for; after Close it runs nothing and returns false.
func (s *Server) spawn(f func()) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
	return true
}

// after runs f once d has passed (right away when d <= 0), unless the server closes first.
func (s *Server) after(d time.Duration, f func()) {
	if d <= 0 {
		f()
		return
	}
	s.spawn(func() {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			f()
		case <-s.done:
		}
	})
}

func (s *Server) acceptLoop() {
	for {
		conn, err := s.ln.Accept()
		if err != nil {
			select {
			case <-s.done:
				return
			case <-time.After(10 * time.Millisecond): // e.g. out of file descriptors: retry
				s.log.Warn("accept failed", "err", err)
				continue
			}
		}
		c := newSession(s, conn)
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			_ = conn.Close()
			return
		}
		s.sessions[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			c.serve()
		}()
	}
}

// seqBase starts the sequence numbers of server-originated PDUs far above a client's own (which
// count up from 1), because go-smpp matches responses by sequence number alone and would take a
// deliver_sm with the number of an in-flight submit_sm for its response.
const seqBase = 0x70000000

func (s *Server) nextSeq() uint32 {
	n := s.seq.Add(1)
	if n >= 0x7fffffff {
		s.seq.CompareAndSwap(n, seqBase)
	}
	return n
}

// nextID returns a message id unique across servers and restarts: a random prefix and a counter.
func (s *Server) nextID() string {
	return s.idPfx + "-" + strconv.FormatUint(s.idSeq.Add(1), 10)
}

// Accepted is the number of submit_sm answered with status 0.
func (s *Server) Accepted() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.accepted
}

// Throttled is the number of submit_sm answered ESME_RTHROTTLED by the MaxPerSecond window.
func (s *Server) Throttled() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.throttled
}

// Rejected is the number of submit_sm answered with a non-zero status from Options.Fail.
func (s *Server) Rejected() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rejected
}

// AcceptedTo is the number of accepted submits to destination_addr dst.
func (s *Server) AcceptedTo(dst string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.acceptedTo[dst]
}

// Submits returns a copy of every accepted submit, in acceptance order.
func (s *Server) Submits() []Submit {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Submit, len(s.submits))
	for i, sub := range s.submits {
		sub.ShortMessage = append([]byte(nil), sub.ShortMessage...)
		out[i] = sub
	}
	return out
}

// ReceiptsAcked is the number of receipts a client answered with a deliver_sm_resp of status 0,
// once per message id.
func (s *Server) ReceiptsAcked() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.acked
}

// ReceiptsRefused is the number of deliver_sm_resp of a non-zero status to receipts: each
// refusal of a receipt counts, so one refused twice counts twice.
func (s *Server) ReceiptsRefused() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refused
}

// MaxInWindow returns the most accepted submits seen in any window of length w: with
// MaxPerSecond set, MaxInWindow(time.Second) never exceeds it.
func (s *Server) MaxInWindow(w time.Duration) int {
	s.mu.Lock()
	ts := make([]time.Time, len(s.submits))
	for i, sub := range s.submits {
		ts[i] = sub.At
	}
	s.mu.Unlock()
	return maxInWindow(ts, w)
}

// Binds is the number of currently bound sessions.
func (s *Server) Binds() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for c := range s.sessions {
		if c.bound {
			n++
		}
	}
	return n
}

// Drops is how many times DropEvery dropped the connections.
func (s *Server) Drops() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.drops
}

// Duplicates is how many accepted submits repeat an earlier one: the same destination, source,
// data_coding and decoded text, and for a part the same part number and count (a long message
// sent again gets a new reference, so the reference is left out).
func (s *Server) Duplicates() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := make(map[string]bool, len(s.submits))
	n := 0
	for _, sub := range s.submits {
		k := fmt.Sprintf("%s\x00%s\x00%d\x00%s\x00%d/%d", sub.Dest, sub.Source, sub.DataCoding, sub.Text, sub.Seq, sub.Total)
		if seen[k] {
			n++
		}
		seen[k] = true
	}
	return n
}

// DropConnections abruptly closes every client connection (fault injection) and returns once
// their sessions are gone; receipts in flight on them go back to pending. The server keeps
// listening.
func (s *Server) DropConnections() {
	s.mu.Lock()
	cs := make([]*session, 0, len(s.sessions))
	for c := range s.sessions {
		cs = append(cs, c)
	}
	s.mu.Unlock()
	for _, c := range cs {
		_ = c.conn.Close()
	}
	for _, c := range cs {
		<-c.gone
	}
	s.log.Info("dropped connections", "count", len(cs))
}

// SendMO sends a mobile-originated message from src to dst as a deliver_sm (esm_class 0) to one
// bound receiver or transceiver session. GSM 03.38 text goes as data_coding 0 (unpacked septets),
// anything else as UCS2.
// It returns ErrNoReceiver when no such session is bound or it closes before the write is queued;
// the message is not kept for a later bind, and its deliver_sm_resp is not awaited.
func (s *Server) SendMO(src, dst, text string) error {
	p, err := moPDU(src, dst, text)
	if err != nil {
		return err
	}
	s.mu.Lock()
	var to *session
	for c := range s.sessions {
		if c.canRx {
			to = c
			break
		}
	}
	if to != nil {
		p.Header().Seq = s.nextSeq()
	}
	s.mu.Unlock()
	if to == nil || !to.send(p, false) {
		return ErrNoReceiver
	}
	s.log.Debug("mo sent", "src", src, "dst", dst, "remote", to.remote)
	return nil
}
