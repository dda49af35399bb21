package smpplink

import (
	"context"
	"crypto/tls"
	"fmt"
	"hash/fnv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fiorix/go-smpp/smpp"
	"github.com/fiorix/go-smpp/smpp/pdu"
	"github.com/fiorix/go-smpp/smpp/pdu/pdufield"
)

// bindKind is what a session binds as.
type bindKind int

const (
	bindTRX bindKind = iota // bind_transceiver: submits and deliver_sm
	bindTX                  // bind_transmitter: submits only
	bindRX                  // bind_receiver: deliver_sm only
)

// session is one SMPP connection of the link, bound as a transceiver, a
// transmitter or a receiver. It is the link's own and not go-smpp's client,
// for two reasons:
//
//   - a deliver_sm is answered only when handler has stored it ("stored
//     before acknowledged"): go-smpp's Receiver answers before its handler
//     runs, and its Transceiver always answers with status 0 when its
//     handler returns, so a handler that returned before storing would lose
//     the receipt on a crash, and one that stored first held the read loop;
//   - the read loop never waits for handler: deliver_sm go to a bounded
//     queue served by a goroutine of their own, so the submit_sm_resps read
//     behind a receipt that is slow to store (NATS restarting, a loaded
//     machine) are not held past their timeout, which made submits in
//     flight time out and go again: duplicates.
//
// It binds once; the link's supervisor makes a new one to rebind. Its
// status channel behaves like go-smpp's: Connected once bound, then one
// other status when the connection ends, then closed.
type session struct {
	addr, user, passwd, systemType string
	tls                            *tls.Config
	kind                           bindKind
	enquireLink                    time.Duration
	respTimeout                    time.Duration
	// handler stores a deliver_sm (nil for a transmitter). nil error: stored,
	// answered with status 0; an error: answered ESME_RX_T_APPN, so the SMSC
	// sends it again later. Its context ends with the connection (Deliver).
	handler func(context.Context, pdu.Body) error
	queue   int // deliver_sm waiting for handler, at most
	storers int // deliver_sm in handler at once, at most

	seq  atomic.Uint32 // sequence number of the last request sent
	wmu  sync.Mutex    // serialises writes
	mu   sync.Mutex
	conn smpp.Conn
	// inflight are the submits waiting for their response, by sequence number.
	inflight map[uint32]chan pdu.Body
	ended    chan struct{} // closed when the connection has ended: waiting submits fail
	stop     chan struct{}
	once     sync.Once
}

// statusRetryLater is ESME_RX_T_APPN, the deliver_sm_resp status of a
// deliver_sm not stored: "temporary application error, try again later".
const statusRetryLater pdu.Status = 0x64

type rxStatus struct {
	s   smpp.ConnStatusID
	err error
}

func (s rxStatus) Status() smpp.ConnStatusID { return s.s }
func (s rxStatus) Error() error              { return s.err }

// rxBindWait bounds the dial and the bind_resp.
const rxBindWait = 5 * time.Second

func (r *session) Bind() <-chan smpp.ConnStatus {
	st := make(chan smpp.ConnStatus, 2)
	ended := make(chan struct{})
	r.mu.Lock()
	r.stop = make(chan struct{})
	r.ended = ended
	r.inflight = make(map[uint32]chan pdu.Body)
	r.mu.Unlock()
	go func() {
		defer close(st)
		conn, err := r.bind()
		if err != nil {
			close(ended)
			st <- rxStatus{s: smpp.ConnectionFailed, err: err}
			return
		}
		st <- rxStatus{s: smpp.Connected}
		var wg sync.WaitGroup
		err = r.serve(conn, &wg)
		_ = conn.Close()
		close(ended) // submits waiting fail now, not at their timeout
		st <- rxStatus{s: smpp.Disconnected, err: err}
		// The status channel closes (the supervisor waits for that, briefly)
		// once a store in progress has ended too.
		wg.Wait()
	}()
	return st
}

func (r *session) bind() (smpp.Conn, error) {
	c, err := smpp.Dial(r.addr, r.tls)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	select {
	case <-r.stop:
		r.mu.Unlock()
		_ = c.Close()
		return nil, smpp.ErrNotConnected
	default:
		r.conn = c
	}
	r.mu.Unlock()
	var p pdu.Body
	var want pdu.ID
	switch r.kind {
	case bindTX:
		p, want = pdu.NewBindTransmitter(), pdu.BindTransmitterRespID
	case bindRX:
		p, want = pdu.NewBindReceiver(), pdu.BindReceiverRespID
	default:
		p, want = pdu.NewBindTransceiver(), pdu.BindTransceiverRespID
	}
	f := p.Fields()
	_ = f.Set(pdufield.SystemID, r.user)
	_ = f.Set(pdufield.Password, r.passwd)
	_ = f.Set(pdufield.SystemType, r.systemType)
	_ = f.Set(pdufield.InterfaceVersion, 0x34)
	t := time.AfterFunc(rxBindWait, func() { _ = c.Close() })
	defer t.Stop()
	if err := r.write(p); err != nil {
		_ = c.Close()
		return nil, err
	}
	for {
		resp, err := c.Read()
		if err != nil {
			_ = c.Close()
			return nil, err
		}
		h := resp.Header()
		if h.ID != want {
			continue // nothing else is due before bind_resp
		}
		if h.Status != 0 {
			_ = c.Close()
			return nil, h.Status
		}
		return c, nil
	}
}

// serve reads PDUs until the connection fails or Close; it sends an
// enquire_link every enquireLink and gives up after three go unanswered.
// A response goes to the submit waiting for it; a deliver_sm, to the queue
// of the store goroutine (see store), so reading never waits for a store.
// Its goroutines are in wg, and end soon after it returns.
func (r *session) serve(c smpp.Conn, wg *sync.WaitGroup) error {
	every := max(r.enquireLink, 10*time.Second)
	heard := make(chan struct{}, 1)
	// life ends with the connection: the stores still running for it stop
	// retrying then (see Deliver).
	life, end := context.WithCancel(context.Background())
	defer end()
	done := life.Done()
	wg.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		missed := 0
		for {
			select {
			case <-done:
				return
			case <-heard:
				missed = 0
			case <-t.C:
				if missed++; missed > 3 || r.write(r.request(pdu.NewEnquireLink())) != nil {
					_ = c.Close()
					return
				}
			}
		}
	})
	var queues []chan pdu.Body
	if r.handler != nil {
		n := max(r.storers, 1)
		queues = make([]chan pdu.Body, n)
		for i := range queues {
			queues[i] = make(chan pdu.Body, max(r.queue/n, 1))
			wg.Go(func() { r.store(life, queues[i]) })
		}
	}
	for {
		p, err := c.Read()
		if err != nil {
			return err
		}
		select {
		case heard <- struct{}{}:
		default:
		}
		h := p.Header()
		switch {
		case h.ID == pdu.DeliverSMID && queues != nil:
			select {
			case queues[storerOf(p, len(queues))] <- p:
			default:
				// The queue is full: the store is far behind (NATS away for
				// long). Holding the read loop here would hold the
				// submit_sm_resps behind it again, and not answering would
				// leave the SMSC's deliver window full until it gives up on
				// the bind; ESME_RX_T_APPN is SMPP's "temporary error, send
				// it again later", and nothing is acknowledged unstored.
				err = r.write(respond(pdu.NewDeliverSMResp(), h.Seq, statusRetryLater))
			}
		case h.ID == pdu.EnquireLinkID:
			err = r.write(respond(pdu.NewEnquireLinkResp(), h.Seq, 0))
		case h.ID == pdu.UnbindID:
			_ = r.write(respond(pdu.NewUnbindResp(), h.Seq, 0))
			return fmt.Errorf("unbound by the SMSC")
		case h.ID&0x80000000 != 0: // a response: to a submit, or an enquire_link
			r.mu.Lock()
			ch := r.inflight[h.Seq]
			delete(r.inflight, h.Seq)
			r.mu.Unlock()
			if ch != nil {
				ch <- p // buffered, and each is sent to once
			}
		default: // a request this session does not serve
			err = r.write(respond(pdu.NewGenericNACK(), h.Seq, 0x03)) // ESME_RINVCMDID
		}
		if err != nil {
			return err
		}
	}
}

// DeliverStorers is how many deliver_sm a bind stores at once by default
// (Config.DeliverStorers). One at a time, a
// store (a JetStream publish and its ack) capped a bind at about 2,000
// receipts a second on a 2-core machine, under what a 2,000/s link sends:
// the queue filled, and the SMSC was told to send over a hundred thousand
// receipts again in a 20,000-message run. A sender's deliver_sm keep their
// order (storerOf).
const DeliverStorers = 8

// storerOf is the storer of deliver_sm p among n: by its source address, so
// that one sender's messages (an MO STOP, then START) and one recipient's
// receipts are stored in the order read.
func storerOf(p pdu.Body, n int) int {
	if n == 1 {
		return 0
	}
	h := fnv.New32a()
	if f := p.Fields()[pdufield.SourceAddr]; f != nil {
		_, _ = h.Write(f.Bytes())
	}
	return int(h.Sum32() % uint32(n))
}

// store hands each deliver_sm in its queue to handler, in the order read,
// and answers it once handler has returned: status 0 when stored,
// ESME_RX_T_APPN when not. Config.DeliverStorers of them run, each with its
// share of the queue. It stops when the connection ends (life): what is
// still queued was never answered, so the SMSC sends it again on the next
// bind. handler gets life too, so a store retrying then stops as well,
// rather than storing a second time what the SMSC sends again.
func (r *session) store(life context.Context, queue <-chan pdu.Body) {
	for {
		select {
		case <-life.Done():
			return
		case p := <-queue:
			if life.Err() != nil {
				return
			}
			st := pdu.Status(0)
			if err := r.handler(life, p); err != nil {
				st = statusRetryLater
			}
			if life.Err() != nil {
				return // the connection is gone: no answer can go out
			}
			// A failed write means the connection is gone: the reader sees it.
			_ = r.write(respond(pdu.NewDeliverSMResp(), p.Header().Seq, st))
		}
	}
}

// respond sets the sequence number and status of the response p.
func respond(p pdu.Body, seq uint32, st pdu.Status) pdu.Body {
	p.Header().Seq, p.Header().Status = seq, st
	return p
}

// request gives p the session's next sequence number (go-smpp would give it
// one of a global counter only when writing it, too late to wait for it).
func (r *session) request(p pdu.Body) pdu.Body {
	for {
		old := r.seq.Load()
		seq := old + 1
		if seq > 0x7FFFFFFF { // SMPP 3.4: 0x00000001 to 0x7FFFFFFF
			seq = 1
		}
		if r.seq.CompareAndSwap(old, seq) { // two requests at the wrap never share 1
			p.Header().Seq = seq
			return p
		}
	}
}

// Submit sends sm as one submit_sm and waits for its submit_sm_resp. Its
// errors are go-smpp's, which Classify and outcomeUnknown know:
// ErrNotConnected when the connection is gone (before or while waiting),
// ErrTimeout after respTimeout, the command_status when it is not 0.
func (r *session) Submit(sm *smpp.ShortMessage) (string, error) {
	p := r.request(submitSM(sm))
	seq := p.Header().Seq
	ch := make(chan pdu.Body, 1)
	r.mu.Lock()
	ended := r.ended
	if ended == nil {
		r.mu.Unlock()
		return "", smpp.ErrNotBound
	}
	select {
	case <-ended:
		r.mu.Unlock()
		return "", smpp.ErrNotConnected
	default:
	}
	r.inflight[seq] = ch
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.inflight, seq)
		r.mu.Unlock()
	}()
	if err := r.write(p); err != nil {
		return "", err
	}
	t := time.NewTimer(r.respTimeout)
	defer t.Stop()
	select {
	case resp := <-ch:
		h := resp.Header()
		if h.ID != pdu.SubmitSMRespID {
			return "", fmt.Errorf("unexpected PDU ID: %s", h.ID)
		}
		if h.Status != 0 {
			return "", h.Status
		}
		if f := resp.Fields()[pdufield.MessageID]; f != nil {
			return f.String(), nil
		}
		return "", nil
	case <-ended:
		return "", smpp.ErrNotConnected
	case <-t.C:
		return "", smpp.ErrTimeout
	}
}

// submitSM is the submit_sm of sm, with the fields go-smpp's Submit sets.
func submitSM(sm *smpp.ShortMessage) pdu.Body {
	p := pdu.NewSubmitSM(sm.TLVFields)
	f := p.Fields()
	_ = f.Set(pdufield.SourceAddr, sm.Src)
	_ = f.Set(pdufield.DestinationAddr, sm.Dst)
	_ = f.Set(pdufield.ShortMessage, sm.Text)
	_ = f.Set(pdufield.RegisteredDelivery, uint8(sm.Register))
	_ = f.Set(pdufield.ServiceType, sm.ServiceType)
	_ = f.Set(pdufield.SourceAddrTON, sm.SourceAddrTON)
	_ = f.Set(pdufield.SourceAddrNPI, sm.SourceAddrNPI)
	_ = f.Set(pdufield.DestAddrTON, sm.DestAddrTON)
	_ = f.Set(pdufield.DestAddrNPI, sm.DestAddrNPI)
	_ = f.Set(pdufield.ESMClass, sm.ESMClass)
	_ = f.Set(pdufield.ProtocolID, sm.ProtocolID)
	_ = f.Set(pdufield.PriorityFlag, sm.PriorityFlag)
	_ = f.Set(pdufield.ScheduleDeliveryTime, sm.ScheduleDeliveryTime)
	_ = f.Set(pdufield.ReplaceIfPresentFlag, sm.ReplaceIfPresentFlag)
	_ = f.Set(pdufield.SMDefaultMsgID, sm.SMDefaultMsgID)
	_ = f.Set(pdufield.DataCoding, uint8(sm.Text.Type()))
	return p
}

func (r *session) write(p pdu.Body) error {
	r.mu.Lock()
	c := r.conn
	r.mu.Unlock()
	if c == nil {
		return smpp.ErrNotConnected
	}
	r.wmu.Lock()
	defer r.wmu.Unlock()
	// An SMSC that stops reading fills the socket's buffer and a write
	// blocks, holding wmu: every submit, enquire_link and receipt answer of
	// the bind would wait behind it, and Close too. The connection is closed
	// instead, so the write fails and the link binds again.
	t := time.AfterFunc(max(r.respTimeout, time.Second), func() { _ = c.Close() })
	defer t.Stop()
	return c.Write(p)
}

// Close unbinds (without waiting for unbind_resp) and closes the connection.
func (r *session) Close() error {
	r.once.Do(func() {
		r.mu.Lock()
		if r.stop != nil {
			close(r.stop)
		}
		c := r.conn
		r.mu.Unlock()
		if c != nil {
			_ = r.write(r.request(pdu.NewUnbind()))
			_ = c.Close()
		}
	})
	return nil
}
