package smscsim

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/fiorix/go-smpp/smpp/pdu"
	"github.com/fiorix/go-smpp/smpp/pdu/pdufield"

	"github.com/smsflow/smsflow/pkg/smpplink"
)

// SMPP 3.4 command_status values the simulator answers with.
const (
	statusInvalidCmdID  pdu.Status = 0x03 // ESME_RINVCMDID
	statusInvalidBind   pdu.Status = 0x04 // ESME_RINVBNDSTS
	statusAlreadyBound  pdu.Status = 0x05 // ESME_RALYBND
	statusBindFailed    pdu.Status = 0x0d // ESME_RBINDFAIL
	statusInvalidPasswd pdu.Status = 0x0e // ESME_RINVPASWD
)

// writeTimeout bounds one PDU write, so a client that stops reading cannot wedge its session.
const writeTimeout = 10 * time.Second

// session is one client TCP connection. Its reader goroutine (serve) owns the conn's reads and its
// writer goroutine owns the writes; everything else queues PDUs through send.
type session struct {
	srv    *Server
	conn   net.Conn
	remote string
	out    chan outPDU
	quit   chan struct{} // closed when serve stops: queued PDUs are dropped
	wdone  chan struct{} // closed when the writer stops
	gone   chan struct{} // closed once the session is removed and both goroutines ended

	// Guarded by srv.mu.
	bound    bool
	systemID string
	canTx    bool                // bound as transmitter or transceiver
	canRx    bool                // bound as receiver or transceiver
	inflight map[uint32]*receipt // receipts sent here, by deliver_sm sequence number
}

type outPDU struct {
	p          pdu.Body
	closeAfter bool // close the connection once p is written (unbind_resp, failed bind_resp)
}

func newSession(s *Server, conn net.Conn) *session {
	return &session{
		srv:      s,
		conn:     conn,
		remote:   conn.RemoteAddr().String(),
		out:      make(chan outPDU, 64),
		quit:     make(chan struct{}),
		wdone:    make(chan struct{}),
		gone:     make(chan struct{}),
		inflight: make(map[uint32]*receipt),
	}
}

// send queues p for the writer. It returns false when the session is closing, in which case p
// may or may not be written.
func (c *session) send(p pdu.Body, closeAfter bool) bool {
	select {
	case c.out <- outPDU{p: p, closeAfter: closeAfter}:
		return true
	case <-c.quit:
		return false
	case <-c.wdone:
		return false
	}
}

// serve reads and answers PDUs until the connection fails, is closed or unbinds, then removes the
// session (re-routing its in-flight receipts) and waits for its writer.
func (c *session) serve() {
	defer close(c.gone)
	go c.writeLoop() // owned here: the deferred <-c.wdone waits for it
	defer func() {
		c.srv.removeSession(c)
		close(c.quit)
		_ = c.conn.Close()
		<-c.wdone
	}()
	log := c.srv.log.With("remote", c.remote)
	log.Debug("connection accepted")
	r := bufio.NewReader(c.conn)
	for {
		p, err := readPDU(r)
		var unknown *unknownCommandError
		switch {
		case errors.As(err, &unknown):
			if unknown.id&0x80000000 == 0 { // never answer a response, not even with a nack
				c.send(respond(pdu.NewGenericNACK(), unknown.seq, statusInvalidCmdID), false)
			}
			continue
		case errors.Is(err, errMalformed):
			log.Warn("closing connection after malformed PDU", "err", err)
			return
		case err != nil:
			log.Debug("connection closed", "err", err)
			return
		}
		if !c.handle(p) {
			return
		}
	}
}

// writeLoop writes queued PDUs in order until quit, a write error, or a closeAfter PDU.
func (c *session) writeLoop() {
	defer close(c.wdone)
	w := bufio.NewWriter(c.conn)
	for {
		select {
		case o := <-c.out:
			_ = c.conn.SetWriteDeadline(time.Now().Add(writeTimeout))
			err := o.p.SerializeTo(w)
			if err == nil && (len(c.out) == 0 || o.closeAfter) {
				err = w.Flush()
			}
			if err != nil || o.closeAfter {
				_ = c.conn.Close()
				return
			}
		case <-c.quit:
			return
		}
	}
}

// handle answers one PDU; false ends the session.
func (c *session) handle(p pdu.Body) bool {
	h := p.Header()
	switch h.ID {
	case pdu.BindTransmitterID, pdu.BindReceiverID, pdu.BindTransceiverID:
		return c.bind(p)
	case pdu.SubmitSMID:
		c.submit(p)
	case pdu.DeliverSMRespID:
		c.srv.receiptResp(c, h)
	case pdu.EnquireLinkID:
		c.send(respond(pdu.NewEnquireLinkResp(), h.Seq, 0), false)
	case pdu.UnbindID:
		c.srv.mu.Lock()
		c.bound, c.canTx, c.canRx = false, false, false
		c.srv.mu.Unlock()
		c.srv.log.Info("unbound", "remote", c.remote)
		if c.send(respond(pdu.NewUnbindResp(), h.Seq, 0), true) {
			<-c.wdone // the writer closes the conn once unbind_resp is out
		}
		return false
	default:
		if h.ID&0x80000000 == 0 { // a request we do not serve (query_sm, submit_multi, ...)
			c.send(respond(pdu.NewGenericNACK(), h.Seq, statusInvalidCmdID), false)
		}
	}
	return true
}

// bind checks the credentials. A failed bind is answered and the connection closed; a repeated
// bind gets ESME_RALYBND. A receiving bind then gets the receipts pending for its system_id.
func (c *session) bind(p pdu.Body) bool {
	h := p.Header()
	resp := map[pdu.ID]func() pdu.Body{
		pdu.BindTransmitterID: pdu.NewBindTransmitterResp,
		pdu.BindReceiverID:    pdu.NewBindReceiverResp,
		pdu.BindTransceiverID: pdu.NewBindTransceiverResp,
	}[h.ID]()
	_ = resp.Fields().Set(pdufield.SystemID, "smscsim")
	sysID := field(p, pdufield.SystemID)
	opts := c.srv.opts
	log := c.srv.log.With("remote", c.remote, "system_id", sysID, "bind", h.ID.String())

	var status pdu.Status
	switch {
	case opts.SystemID != "" && sysID != opts.SystemID:
		status = statusBindFailed
	case opts.Password != "" && field(p, pdufield.Password) != opts.Password:
		status = statusInvalidPasswd
	}
	if status != 0 {
		log.Warn("bind refused", "status", uint32(status))
		if c.send(respond(resp, h.Seq, status), true) {
			<-c.wdone
		}
		return false
	}

	// bind_resp is queued under mu together with the state change: receipts and MOs are routed
	// under mu too, so none can overtake it (the client must read bind_resp first), and the
	// session can receive as soon as the client can see it is bound.
	c.srv.mu.Lock()
	if c.bound {
		c.srv.mu.Unlock()
		c.send(respond(resp, h.Seq, statusAlreadyBound), false)
		return true
	}
	select {
	case c.out <- outPDU{p: respond(resp, h.Seq, 0)}:
	default: // 64 PDUs queued before bind: the client floods without reading
		c.srv.mu.Unlock()
		log.Warn("closing connection: output queue full at bind")
		return false
	}
	c.bound, c.systemID = true, sysID
	c.canTx = h.ID != pdu.BindReceiverID
	c.canRx = h.ID != pdu.BindTransmitterID
	var ds []delivery
	if c.canRx {
		ds = c.srv.routeLocked(c.srv.pendingForLocked(sysID), c)
	}
	c.srv.mu.Unlock()
	log.Info("bound")
	c.srv.deliver(ds)
	return true
}

// submit answers a submit_sm: ESME_RINVBNDSTS unless bound to transmit, then the throttle, then
// Options.Fail. An accepted submit gets a message id and, unless NoReceipts, a receipt that
// becomes ready ReceiptDelay after its submit_sm_resp was queued.
func (c *session) submit(p pdu.Body) {
	s := c.srv
	h := p.Header()
	s.mu.Lock()
	canTx, sysID := c.canTx, c.systemID
	s.mu.Unlock()
	resp := pdu.NewSubmitSMResp()
	if !canTx {
		c.send(respond(resp, h.Seq, statusInvalidBind), false)
		return
	}
	sub := Submit{
		Source:       field(p, pdufield.SourceAddr),
		Dest:         field(p, pdufield.DestinationAddr),
		DataCoding:   fixed(p, pdufield.DataCoding),
		ESMClass:     fixed(p, pdufield.ESMClass),
		ShortMessage: append([]byte(nil), fieldBytes(p, pdufield.ShortMessage)...),
	}
	text, part := smpplink.DecodeShortMessage(p)
	sub.Text, sub.Ref, sub.Total, sub.Seq = text, part.Ref, part.Total, part.Seq
	status, sub, drop := s.decide(sub)
	s.log.Debug("submit", "remote", c.remote, "dst", sub.Dest, "msg_id", sub.MessageID, "status", uint32(status))
	respond(resp, h.Seq, status)
	var r *receipt
	if status == 0 {
		_ = resp.Fields().Set(pdufield.MessageID, sub.MessageID)
		if !s.opts.NoReceipts {
			r = &receipt{
				id: sub.MessageID, systemID: sysID, src: sub.Source, dst: sub.Dest,
				srcTON: fixed(p, pdufield.SourceAddrTON), srcNPI: fixed(p, pdufield.SourceAddrNPI),
				dstTON: fixed(p, pdufield.DestAddrTON), dstNPI: fixed(p, pdufield.DestAddrNPI),
				stat: s.stat(sub.Dest), text: preview(sub.ShortMessage, sub.DataCoding, sub.ESMClass),
				submitAt: sub.At,
			}
		}
	}
	if drop {
		// The submit is accepted but its response never goes out: every connection is dropped.
		s.spawn(s.DropConnections)
		if r != nil {
			s.after(s.opts.ReceiptDelay, func() { s.receiptReady(r) })
		}
		return
	}
	s.after(s.opts.RespDelay, func() {
		c.send(resp, false)
		if r != nil {
			s.after(s.opts.ReceiptDelay, func() { s.receiptReady(r) })
		}
	})
}

// decide runs the throttle check, then Fail, and records an accepted submit. Decisions are
// serialised by decideMu, so accepted timestamps never go backwards and Fail sees every n in order.
func (s *Server) decide(sub Submit) (pdu.Status, Submit, bool) {
	s.decideMu.Lock()
	defer s.decideMu.Unlock()
	now := time.Now()
	s.mu.Lock()
	if !s.window.allow(now) {
		s.throttled++
		s.mu.Unlock()
		return StatusThrottled, sub, false
	}
	s.failSeen[sub.Dest]++
	n := s.failSeen[sub.Dest]
	s.mu.Unlock()
	if s.opts.Fail != nil {
		if st := s.opts.Fail(sub.Dest, n); st != 0 {
			s.mu.Lock()
			s.rejected++
			s.mu.Unlock()
			return st, sub, false
		}
	}
	sub.MessageID, sub.At = s.nextID(), now
	s.mu.Lock()
	s.window.add(now)
	s.accepted++
	s.acceptedTo[sub.Dest]++
	s.submits = append(s.submits, sub)
	drop := s.opts.DropEvery > 0 && s.accepted%s.opts.DropEvery == 0
	if drop {
		s.drops++
	}
	s.mu.Unlock()
	return 0, sub, drop
}

func (s *Server) stat(dst string) string {
	if s.opts.Stat != nil {
		if st := s.opts.Stat(dst); st != "" {
			return st
		}
	}
	return StatDelivered
}

// removeSession forgets c and puts the receipts in flight on it back to pending, routing them to
// another session of the same system_id if one is bound.
func (s *Server) removeSession(c *session) {
	s.mu.Lock()
	delete(s.sessions, c)
	c.bound, c.canTx, c.canRx = false, false, false
	var orphans []*receipt
	for _, r := range c.inflight {
		if r.sentOn == c {
			r.sentOn = nil
			if s.pending[r.id] == r {
				orphans = append(orphans, r)
			}
		}
	}
	clear(c.inflight)
	var ds []delivery
	if len(orphans) > 0 {
		ds = s.routeLocked(s.pendingForLocked(c.systemID), nil)
	}
	s.mu.Unlock()
	s.deliver(ds)
}

// respond sets the header of a response PDU and returns it.
func respond(p pdu.Body, seq uint32, status pdu.Status) pdu.Body {
	p.Header().Seq = seq
	p.Header().Status = status
	return p
}

// unknownCommandError is a well-framed PDU whose command_id the codec cannot decode: the
// session answers generic_nack and reads on.
type unknownCommandError struct {
	id  pdu.ID
	seq uint32
}

func (e *unknownCommandError) Error() string {
	return fmt.Sprintf("unknown command_id %#08x", uint32(e.id))
}

// errMalformed marks a PDU that cannot be framed or decoded: the session closes the connection.
var errMalformed = errors.New("malformed PDU")

// readPDU reads one PDU. Bad framing or an undecodable body is errMalformed (never a panic); a
// command the codec does not implement is an *unknownCommandError with the PDU consumed.
func readPDU(r io.Reader) (pdu.Body, error) {
	var hdr [pdu.HeaderLen]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[0:4])
	id := pdu.ID(binary.BigEndian.Uint32(hdr[4:8]))
	seq := binary.BigEndian.Uint32(hdr[12:16])
	if n < pdu.HeaderLen || n > pdu.MaxSize {
		return nil, fmt.Errorf("%w: command_length %d", errMalformed, n)
	}
	buf := make([]byte, n)
	copy(buf, hdr[:])
	if _, err := io.ReadFull(r, buf[pdu.HeaderLen:]); err != nil {
		return nil, fmt.Errorf("%w: short body: %v", errMalformed, err)
	}
	if !decodable(id) {
		return nil, &unknownCommandError{id: id, seq: seq}
	}
	return decode(buf)
}

// decode runs the go-smpp decoder, turning its errors and any panic into errMalformed.
func decode(b []byte) (p pdu.Body, err error) {
	defer func() {
		if v := recover(); v != nil {
			p, err = nil, fmt.Errorf("%w: decoder panic: %v", errMalformed, v)
		}
	}()
	p, err = pdu.Decode(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errMalformed, err)
	}
	return p, nil
}

// decodable reports whether pdu.Decode implements the command id.
func decodable(id pdu.ID) bool {
	switch id {
	case pdu.BindReceiverID, pdu.BindTransceiverID, pdu.BindTransmitterID,
		pdu.BindReceiverRespID, pdu.BindTransceiverRespID, pdu.BindTransmitterRespID,
		pdu.DeliverSMID, pdu.DeliverSMRespID, pdu.EnquireLinkID, pdu.EnquireLinkRespID,
		pdu.GenericNACKID, pdu.QuerySMID, pdu.QuerySMRespID, pdu.SubmitMultiID,
		pdu.SubmitMultiRespID, pdu.SubmitSMID, pdu.SubmitSMRespID, pdu.UnbindID, pdu.UnbindRespID:
		return true
	}
	return false
}

// field returns a C-string field without its terminating NUL ("" when absent: go-smpp leaves a
// truncated body's trailing fields out of the map).
func field(p pdu.Body, name pdufield.Name) string {
	if f := p.Fields()[name]; f != nil {
		return f.String()
	}
	return ""
}

func fieldBytes(p pdu.Body, name pdufield.Name) []byte {
	if f := p.Fields()[name]; f != nil {
		return f.Bytes()
	}
	return nil
}

func fixed(p pdu.Body, name pdufield.Name) uint8 {
	if b := fieldBytes(p, name); len(b) > 0 {
		return b[0]
	}
	return 0
}
