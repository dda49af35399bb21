package smscsim

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/fiorix/go-smpp/smpp/pdu"
	"github.com/fiorix/go-smpp/smpp/pdu/pdufield"
)

// rawClient speaks SMPP over a plain TCP connection, for what go-smpp's client will not send.
type rawClient struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawClient {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &rawClient{t: t, conn: conn, r: bufio.NewReader(conn)}
}

func (c *rawClient) write(b []byte) {
	c.t.Helper()
	if _, err := c.conn.Write(b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

func (c *rawClient) send(p pdu.Body, seq uint32) {
	c.t.Helper()
	p.Header().Seq = seq
	var b bytes.Buffer
	if err := p.SerializeTo(&b); err != nil {
		c.t.Fatalf("serialize: %v", err)
	}
	c.write(b.Bytes())
}

// read returns the next PDU, failing the test after 5 s.
func (c *rawClient) read() pdu.Body {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	p, err := pdu.Decode(c.r)
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return p
}

// expect reads the next PDU and checks its command id, status and sequence number.
func (c *rawClient) expect(id pdu.ID, status pdu.Status, seq uint32) pdu.Body {
	c.t.Helper()
	p := c.read()
	if h := p.Header(); h.ID != id || h.Status != status || h.Seq != seq {
		c.t.Fatalf("got %v status %#x seq %d, want %v status %#x seq %d", h.ID, uint32(h.Status), h.Seq, id, uint32(status), seq)
	}
	return p
}

// expectClosed waits up to 5 s for the server to close the connection.
func (c *rawClient) expectClosed() {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.r.ReadByte(); !errors.Is(err, io.EOF) {
		c.t.Fatalf("read after close = %v, want EOF", err)
	}
}

func (c *rawClient) bind(id func() pdu.Body, seq uint32) {
	c.t.Helper()
	p := id()
	_ = p.Fields().Set(pdufield.SystemID, "raw")
	_ = p.Fields().Set(pdufield.Password, "pw")
	c.send(p, seq)
}

func submitPDU(dst string) pdu.Body {
	p := pdu.NewSubmitSM(nil)
	_ = p.Fields().Set(pdufield.SourceAddr, "raw")
	_ = p.Fields().Set(pdufield.DestinationAddr, dst)
	_ = p.Fields().Set(pdufield.ShortMessage, []byte("hi"))
	return p
}

func header(length uint32, id pdu.ID, seq uint32) []byte {
	b := make([]byte, 16)
	binary.BigEndian.PutUint32(b[0:], length)
	binary.BigEndian.PutUint32(b[4:], uint32(id))
	binary.BigEndian.PutUint32(b[12:], seq)
	return b
}

func TestProtocolBasics(t *testing.T) {
	sim := NewServer(t, Options{SystemID: "raw", Password: "pw"})
	c := dialRaw(t, sim.Addr())

	c.send(submitPDU("+420111"), 1)
	c.expect(pdu.SubmitSMRespID, statusInvalidBind, 1) // submit before bind

	c.send(pdu.NewEnquireLink(), 2)
	c.expect(pdu.EnquireLinkRespID, 0, 2) // enquire_link is answered even before bind

	c.write(append(header(20, 0x00000099, 3), 1, 2, 3, 4))
	c.expect(pdu.GenericNACKID, statusInvalidCmdID, 3) // unknown command, body consumed

	c.send(pdu.NewGenericNACK(), 4) // a response is never answered ...
	c.send(pdu.NewEnquireLink(), 5)
	c.expect(pdu.EnquireLinkRespID, 0, 5) // ... so the next PDU read is this one

	c.bind(pdu.NewBindTransmitter, 6)
	resp := c.expect(pdu.BindTransmitterRespID, 0, 6)
	if id := resp.Fields()[pdufield.SystemID].String(); id != "smscsim" {
		t.Fatalf("bind_resp system_id = %q, want smscsim", id)
	}
	c.bind(pdu.NewBindTransceiver, 7)
	c.expect(pdu.BindTransceiverRespID, statusAlreadyBound, 7)

	c.send(submitPDU("+420111"), 8)
	r := c.expect(pdu.SubmitSMRespID, 0, 8)
	if id := r.Fields()[pdufield.MessageID].String(); id == "" || sim.Submits()[0].MessageID != id {
		t.Fatalf("submit_sm_resp message_id = %q, want the recorded %q", id, sim.Submits()[0].MessageID)
	}

	c.send(pdu.NewQuerySM(), 9)
	c.expect(pdu.GenericNACKID, statusInvalidCmdID, 9) // a known command the simulator does not serve

	c.send(pdu.NewUnbind(), 10)
	c.expect(pdu.UnbindRespID, 0, 10)
	c.expectClosed()
	if n := sim.Binds(); n != 0 {
		t.Fatalf("Binds = %d after unbind, want 0", n)
	}
}

func TestMalformedPDUClosesOnlyThatConnection(t *testing.T) {
	cases := []struct {
		name string
		b    []byte
	}{
		{"a command_length under 16", header(8, pdu.EnquireLinkID, 1)},
		{"a command_length over 4096", header(1<<20, pdu.SubmitSMID, 1)},
		{"a submit_sm whose sm_length overruns the body", append(header(16+17, pdu.SubmitSMID, 1), append(make([]byte, 16), 200)...)},
		{"a TLV longer than the body", append(header(16+5, pdu.EnquireLinkID, 1), 0, 1, 0, 9, 7)},
	}
	sim := NewServer(t, Options{})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			bad := dialRaw(t, sim.Addr())
			bad.write(c.b)
			bad.expectClosed()
			good := dialRaw(t, sim.Addr())
			good.bind(pdu.NewBindTransceiver, 1)
			good.expect(pdu.BindTransceiverRespID, 0, 1)
		})
	}
}

// receiptOfASubmit binds a transceiver to sim, submits one message on it (sequence number 2) and
// reads its receipt.
func receiptOfASubmit(t *testing.T, sim *Server) (*rawClient, pdu.Body) {
	t.Helper()
	c := dialRaw(t, sim.Addr())
	c.bind(pdu.NewBindTransceiver, 1)
	c.expect(pdu.BindTransceiverRespID, 0, 1)
	c.send(submitPDU("+420111"), 2)
	c.expect(pdu.SubmitSMRespID, 0, 2)
	return c, c.read()
}

// TestReceiptRefusedByClientWaitsForTheNextBind answers the receipt with an error status: with
// no timed retry it is not acked, not resent on the same session, and comes again after a rebind.
func TestReceiptRefusedByClientWaitsForTheNextBind(t *testing.T) {
	sim := NewServer(t, Options{ReceiptRetry: -1})
	c, rcpt := receiptOfASubmit(t, sim)
	if rcpt.Header().ID != pdu.DeliverSMID || rcpt.Header().Seq < seqBase {
		t.Fatalf("got %v seq %#x, want a deliver_sm with a server sequence number", rcpt.Header().ID, rcpt.Header().Seq)
	}
	c.send(respond(pdu.NewDeliverSMResp(), rcpt.Header().Seq, 0x64), rcpt.Header().Seq) // ESME_RX_T_APPN
	c.send(pdu.NewEnquireLink(), 3)
	c.expect(pdu.EnquireLinkRespID, 0, 3) // no resend in between
	if n := sim.ReceiptsAcked(); n != 0 {
		t.Fatalf("ReceiptsAcked = %d after a refusal, want 0", n)
	}

	again := dialRaw(t, sim.Addr())
	again.bind(pdu.NewBindReceiver, 1)
	again.expect(pdu.BindReceiverRespID, 0, 1)
	rcpt2 := again.read()
	if rcpt2.Header().ID != pdu.DeliverSMID || field(rcpt2, pdufield.ShortMessage) != field(rcpt, pdufield.ShortMessage) {
		t.Fatalf("after rebind got %v %q, want the same receipt again", rcpt2.Header().ID, field(rcpt2, pdufield.ShortMessage))
	}
	again.send(respond(pdu.NewDeliverSMResp(), rcpt2.Header().Seq, 0), rcpt2.Header().Seq)
	again.send(respond(pdu.NewDeliverSMResp(), rcpt2.Header().Seq, 0), rcpt2.Header().Seq) // a duplicate resp
	again.send(pdu.NewEnquireLink(), 2)
	again.expect(pdu.EnquireLinkRespID, 0, 2) // both resps were read before this answer
	if n := sim.ReceiptsAcked(); n != 1 {
		t.Fatalf("ReceiptsAcked = %d, want 1", n)
	}
}

// TestReceiptRefusedByClientComesAgainAfterReceiptRetry refuses a receipt twice on the same
// session: each time it comes again (the same receipt, a new sequence number) after ReceiptRetry,
// and the third answer, 0, acknowledges it once.
func TestReceiptRefusedByClientComesAgainAfterReceiptRetry(t *testing.T) {
	sim := NewServer(t, Options{ReceiptRetry: 50 * time.Millisecond})
	c, first := receiptOfASubmit(t, sim)
	seqs := map[uint32]bool{}
	for i, st := range []pdu.Status{0x64, 0x64, 0} {
		rcpt := first
		if i > 0 {
			rcpt = c.read()
		}
		if rcpt.Header().ID != pdu.DeliverSMID || field(rcpt, pdufield.ShortMessage) != field(first, pdufield.ShortMessage) {
			t.Fatalf("send %d: got %v %q, want the same receipt again", i+1, rcpt.Header().ID, field(rcpt, pdufield.ShortMessage))
		}
		if seqs[rcpt.Header().Seq] {
			t.Fatalf("send %d: sequence number %#x used before", i+1, rcpt.Header().Seq)
		}
		seqs[rcpt.Header().Seq] = true
		c.send(respond(pdu.NewDeliverSMResp(), rcpt.Header().Seq, st), rcpt.Header().Seq)
	}
	c.send(pdu.NewEnquireLink(), 3)
	c.expect(pdu.EnquireLinkRespID, 0, 3)
	if acked, refused := sim.ReceiptsAcked(), sim.ReceiptsRefused(); acked != 1 || refused != 2 {
		t.Fatalf("ReceiptsAcked = %d, ReceiptsRefused = %d; want 1 and 2", acked, refused)
	}
}

// FuzzReadPDU feeds arbitrary bytes to the PDU reader: it may fail, never panic, and a PDU it
// returns re-encodes.
func FuzzReadPDU(f *testing.F) {
	for _, p := range []pdu.Body{submitPDU("+420111"), pdu.NewBindTransceiver(), pdu.NewEnquireLink(), (&receipt{id: "x"}).pdu(1)} {
		var b bytes.Buffer
		_ = p.SerializeTo(&b)
		f.Add(b.Bytes())
	}
	f.Add(append(header(16+10, pdu.SubmitSMID, 1), 0, 0, 0, 0, 0, 0, 0, 0, 0x40, 200))
	f.Add(header(16, 0x12345678, 1))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := readPDU(bytes.NewReader(b))
		if err != nil {
			return
		}
		_ = p.SerializeTo(io.Discard)
	})
}
