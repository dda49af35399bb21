package smscsim

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/fiorix/go-smpp/smpp/pdu"
	"github.com/fiorix/go-smpp/smpp/pdu/pdufield"
	"github.com/fiorix/go-smpp/smpp/pdu/pdutlv"
)

// Receipt stats and their SMPP 3.4 message_state values.
const (
	StatDelivered     = "DELIVRD"
	StatExpired       = "EXPIRED"
	StatDeleted       = "DELETED"
	StatUndeliverable = "UNDELIV"
	StatAccepted      = "ACCEPTD"
	StatUnknown       = "UNKNOWN"
	StatRejected      = "REJECTD"
)

// esmClassReceipt marks a deliver_sm as an SMSC delivery receipt (SMPP 3.4 5.2.12).
const esmClassReceipt = 0x04

// messageState maps a receipt stat to the message_state TLV; unknown stats are UNKNOWN (7).
func messageState(stat string) uint8 {
	switch stat {
	case StatDelivered:
		return 2
	case StatExpired:
		return 3
	case StatDeleted:
		return 4
	case StatUndeliverable:
		return 5
	case StatAccepted:
		return 6
	case StatRejected:
		return 8
	}
	return 7
}

// receiptText is the de-facto standard receipt body (SMPP 3.4 appendix B). dlvrd is 001 only for
// DELIVRD; err is 000 for DELIVRD and ACCEPTD, otherwise the message_state as three digits, so a
// failure stat always carries a non-zero err.
func receiptText(id, stat string, submitAt, doneAt time.Time, text string) string {
	dlvrd, errCode := "000", 0
	switch stat {
	case StatDelivered:
		dlvrd = "001"
	case StatAccepted:
	default:
		errCode = int(messageState(stat))
	}
	const layout = "0601021504" // YYMMDDhhmm
	return fmt.Sprintf("id:%s sub:001 dlvrd:%s submit date:%s done date:%s stat:%s err:%03d text:%s",
		id, dlvrd, submitAt.UTC().Format(layout), doneAt.UTC().Format(layout), stat, errCode, text)
}

// preview returns the first 20 characters of a short message as printable ASCII for the receipt's
// text: field. The UDH is skipped when esm_class has UDHI (0x40), UCS2 (data_coding 8) is decoded,
// control characters become '.', and anything outside ASCII becomes '?'.
func preview(sm []byte, dataCoding, esmClass uint8) string {
	if esmClass&0x40 != 0 && len(sm) > 0 {
		if n := int(sm[0]) + 1; n <= len(sm) {
			sm = sm[n:]
		} else {
			sm = nil
		}
	}
	var runes []rune
	if dataCoding == 0x08 {
		u := make([]uint16, 0, len(sm)/2)
		for i := 0; i+1 < len(sm); i += 2 {
			u = append(u, uint16(sm[i])<<8|uint16(sm[i+1]))
		}
		runes = utf16.Decode(u)
	} else {
		for len(sm) > 0 {
			r, n := utf8.DecodeRune(sm)
			runes, sm = append(runes, r), sm[n:]
		}
	}
	var b strings.Builder
	for i, r := range runes {
		if i == 20 {
			break
		}
		switch {
		case r < 0x20 || r == 0x7f:
			b.WriteByte('.')
		case r > 0x7e:
			b.WriteByte('?')
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// receipt is the delivery receipt of one accepted submit. Its fields are fixed once it is ready
// (added to Server.pending); sentOn, nacked and order are guarded by Server.mu.
type receipt struct {
	id       string
	systemID string // the submitting bind's system_id: only its sessions may get the receipt
	src, dst string // of the submit; swapped in the deliver_sm
	srcTON   uint8
	srcNPI   uint8
	dstTON   uint8
	dstNPI   uint8
	stat     string
	text     string // preview of the submitted text
	submitAt time.Time
	doneAt   time.Time

	order  uint64   // readiness order, so a rebind replays receipts oldest first
	sentOn *session // session holding it in flight, nil when waiting for a session
	nacked bool     // the client answered a non-zero deliver_sm_resp: wait for the next bind
}

// pdu builds the receipt's deliver_sm with the given sequence number. Each send builds a new PDU:
// SerializeTo mutates the header, so a PDU is never shared between writers.
func (r *receipt) pdu(seq uint32) pdu.Body {
	p := pdu.NewDeliverSM()
	p.Header().Seq = seq
	f := p.Fields()
	_ = f.Set(pdufield.SourceAddrTON, r.dstTON)
	_ = f.Set(pdufield.SourceAddrNPI, r.dstNPI)
	_ = f.Set(pdufield.SourceAddr, r.dst)
	_ = f.Set(pdufield.DestAddrTON, r.srcTON)
	_ = f.Set(pdufield.DestAddrNPI, r.srcNPI)
	_ = f.Set(pdufield.DestinationAddr, r.src)
	_ = f.Set(pdufield.ESMClass, uint8(esmClassReceipt))
	_ = f.Set(pdufield.DataCoding, uint8(0))
	_ = f.Set(pdufield.ShortMessage, []byte(receiptText(r.id, r.stat, r.submitAt, r.doneAt, r.text)))
	noUDH(p)
	t := p.TLVFields()
	_ = t.Set(pdutlv.TagReceiptedMessageID, pdutlv.CString(r.id))
	_ = t.Set(pdutlv.TagMessageStateOption, messageState(r.stat))
	return p
}

// noUDH blanks the deliver_sm UDH fields. go-smpp lists gsm_sms_ud.udh.len among deliver_sm
// fields and, left unset, serialises it as one 0x00 byte even without UDHI, which shifts
// short_message and the TLVs by one byte on the wire.
func noUDH(p pdu.Body) {
	p.Fields()[pdufield.UDHLength] = empty{}
	p.Fields()[pdufield.GSMUserData] = empty{}
}

// empty is a PDU field that takes no bytes on the wire.
type empty struct{}

func (empty) Len() int                    { return 0 }
func (empty) Raw() any                    { return nil }
func (empty) String() string              { return "" }
func (empty) Bytes() []byte               { return nil }
func (empty) SerializeTo(io.Writer) error { return nil }

// delivery is a receipt assigned to a session under Server.mu, sent after unlocking.
type delivery struct {
	to  *session
	seq uint32
	r   *receipt
}

// receiptReady adds r to the pending receipts and sends it to a session able to receive it, if
// one is bound; otherwise it waits there for the next bind of its system_id.
func (s *Server) receiptReady(r *receipt) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	r.doneAt = time.Now()
	s.order++
	r.order = s.order
	s.pending[r.id] = r
	ds := s.routeLocked([]*receipt{r}, nil)
	s.mu.Unlock()
	s.deliver(ds)
}

// routeLocked assigns each receipt of rs that is not in flight to a session: to only when set,
// else to any bound session of the receipt's system_id that can receive. s.mu must be held.
func (s *Server) routeLocked(rs []*receipt, only *session) []delivery {
	var ds []delivery
	for _, r := range rs {
		if r.sentOn != nil || r.nacked {
			continue
		}
		to := only
		if to == nil {
			for c := range s.sessions {
				if c.canRx && c.systemID == r.systemID {
					to = c
					break
				}
			}
		}
		if to == nil || !to.canRx || to.systemID != r.systemID {
			continue
		}
		seq := s.nextSeq()
		to.inflight[seq] = r
		r.sentOn = to
		ds = append(ds, delivery{to: to, seq: seq, r: r})
	}
	return ds
}

// deliver sends assigned receipts. A send to a closing session is dropped: the session's removal
// puts its receipts back in the pending set and routes them again.
func (s *Server) deliver(ds []delivery) {
	for _, d := range ds {
		if d.to.send(d.r.pdu(d.seq), false) {
			s.log.Debug("receipt sent", "msg_id", d.r.id, "stat", d.r.stat, "remote", d.to.remote)
		}
	}
}

// pendingForLocked returns the receipts of systemID waiting for a session, oldest first, and
// clears their nacked mark: a new bind is the retry point for a refused receipt. s.mu must be held.
func (s *Server) pendingForLocked(systemID string) []*receipt {
	var rs []*receipt
	for _, r := range s.pending {
		if r.systemID == systemID && r.sentOn == nil {
			r.nacked = false
			rs = append(rs, r)
		}
	}
	sort.Slice(rs, func(i, j int) bool { return rs[i].order < rs[j].order })
	return rs
}

// receiptResp handles a deliver_sm_resp. Status 0 acknowledges the receipt (counted once per
// message id, even when it was sent twice); any other status leaves it pending until the next bind
// or ReceiptRetry, whichever comes first. Responses to mobile-originated messages and unknown
// sequence numbers are ignored.
func (s *Server) receiptResp(c *session, h *pdu.Header) {
	s.mu.Lock()
	r, ok := c.inflight[h.Seq]
	if !ok {
		s.mu.Unlock()
		return
	}
	delete(c.inflight, h.Seq)
	if r.sentOn == c {
		r.sentOn = nil
	}
	if h.Status != 0 {
		r.nacked = true
		s.refused++
		s.mu.Unlock()
		s.log.Warn("receipt refused by client", "msg_id", r.id, "status", uint32(h.Status), "remote", c.remote)
		if d := s.receiptRetry(); d > 0 {
			s.after(d, func() { s.retryReceipt(r) })
		}
		return
	}
	if s.pending[r.id] == r {
		delete(s.pending, r.id)
		s.acked++
	}
	s.mu.Unlock()
}

// receiptRetry is Options.ReceiptRetry with its default; <= 0 means no timed retry.
func (s *Server) receiptRetry() time.Duration {
	if s.opts.ReceiptRetry == 0 {
		return time.Second
	}
	return s.opts.ReceiptRetry
}

// retryReceipt sends a refused receipt again, unless it was acknowledged or sent again since.
func (s *Server) retryReceipt(r *receipt) {
	s.mu.Lock()
	if s.closed || s.pending[r.id] != r || !r.nacked || r.sentOn != nil {
		s.mu.Unlock()
		return
	}
	r.nacked = false
	ds := s.routeLocked([]*receipt{r}, nil)
	s.mu.Unlock()
	s.deliver(ds)
}
