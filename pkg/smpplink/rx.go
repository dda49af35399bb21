package smpplink

import (
	"crypto/tls"
	"fmt"
	"sync"
	"time"

	"github.com/fiorix/go-smpp/smpp"
	"github.com/fiorix/go-smpp/smpp/pdu"
	"github.com/fiorix/go-smpp/smpp/pdu/pdufield"
)

// receiver is the receiving half of a tx_rx session: one bind_receiver
// connection that hands each deliver_sm to handler and answers it with
// deliver_sm_resp only when handler has returned ("stored before
// acknowledged", which go-smpp's Receiver does not give: it answers first).
// It binds once; the link's supervisor makes a new one to rebind. Its status
// channel behaves like go-smpp's: Connected once bound, then one other
// status when the connection ends, then closed.
type receiver struct {
	addr, user, passwd, systemType string
	tls                            *tls.Config
	enquireLink                    time.Duration
	handler                        func(pdu.Body)

	wmu  sync.Mutex // serialises writes
	conn smpp.Conn
	mu   sync.Mutex
	stop chan struct{}
	once sync.Once
}

type rxStatus struct {
	s   smpp.ConnStatusID
	err error
}

func (s rxStatus) Status() smpp.ConnStatusID { return s.s }
func (s rxStatus) Error() error              { return s.err }

// rxBindWait bounds the dial and the bind_resp.
const rxBindWait = 5 * time.Second

func (r *receiver) Bind() <-chan smpp.ConnStatus {
	st := make(chan smpp.ConnStatus, 2)
	r.mu.Lock()
	r.stop = make(chan struct{})
	r.mu.Unlock()
	go func() {
		defer close(st)
		conn, err := r.bind()
		if err != nil {
			st <- rxStatus{s: smpp.ConnectionFailed, err: err}
			return
		}
		st <- rxStatus{s: smpp.Connected}
		err = r.serve(conn)
		st <- rxStatus{s: smpp.Disconnected, err: err}
	}()
	return st
}

func (r *receiver) bind() (smpp.Conn, error) {
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
	p := pdu.NewBindReceiver()
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
		if h.ID != pdu.BindReceiverRespID {
			continue // nothing else is due before bind_resp
		}
		if h.Status != 0 {
			_ = c.Close()
			return nil, h.Status
		}
		return c, nil
	}
}

// serve answers PDUs until the connection fails or Close; it sends an
// enquire_link every enquireLink and gives up after three go unanswered.
func (r *receiver) serve(c smpp.Conn) error {
	every := max(r.enquireLink, 10*time.Second)
	heard := make(chan struct{}, 1)
	done := make(chan struct{})
	defer close(done)
	go func() {
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
				if missed++; missed > 3 || r.write(pdu.NewEnquireLink()) != nil {
					_ = c.Close()
					return
				}
			}
		}
	}()
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
		switch h.ID {
		case pdu.DeliverSMID:
			r.handler(p)
			err = r.write(pdu.NewDeliverSMRespSeq(h.Seq))
		case pdu.EnquireLinkID:
			resp := pdu.NewEnquireLinkResp()
			resp.Header().Seq = h.Seq
			err = r.write(resp)
		case pdu.UnbindID:
			resp := pdu.NewUnbindResp()
			resp.Header().Seq = h.Seq
			_ = r.write(resp)
			return fmt.Errorf("unbound by the SMSC")
		default:
			if h.ID&0x80000000 == 0 { // a request a receiver does not serve
				resp := pdu.NewGenericNACK()
				resp.Header().Seq, resp.Header().Status = h.Seq, 0x03
				err = r.write(resp)
			}
		}
		if err != nil {
			return err
		}
	}
}

func (r *receiver) write(p pdu.Body) error {
	r.mu.Lock()
	c := r.conn
	r.mu.Unlock()
	if c == nil {
		return smpp.ErrNotConnected
	}
	r.wmu.Lock()
	defer r.wmu.Unlock()
	return c.Write(p)
}

// Close unbinds (without waiting for unbind_resp) and closes the connection.
func (r *receiver) Close() error {
	r.once.Do(func() {
		r.mu.Lock()
		if r.stop != nil {
			close(r.stop)
		}
		c := r.conn
		r.mu.Unlock()
		if c != nil {
			_ = r.write(pdu.NewUnbind())
			_ = c.Close()
		}
	})
	return nil
}
