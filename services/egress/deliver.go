package egress

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"log/slog"
	"time"

	"github.com/fiorix/go-smpp/smpp/pdu"
	"github.com/fiorix/go-smpp/smpp/pdu/pdufield"
	"github.com/fiorix/go-smpp/smpp/pdu/pdutlv"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/smsflow/smsflow/pkg/dlr"
	"github.com/smsflow/smsflow/pkg/mo"
	"github.com/smsflow/smsflow/pkg/smpplink"
)

// esm_class bits 2-5 give the message type; 0x04 is an SMSC delivery
// receipt, 0x08 an SME delivery ack, 0x10 an SME manual ack, 0x20 an
// intermediate notification. All of those are receipts; 0 is an MO message.
const esmTypeMask = 0x3C

// deliverFunc returns the link's deliver_sm handler. The deliver_sm_resp
// goes out when it returns, so it stores the PDU in JetStream first: one
// publish, retried while it fails, until it lands, the link is closing, or
// the bind that read the PDU has ended (bind). It runs apart from the
// link's read loop, so a slow store holds only the deliver_sm behind it,
// not the link's submit_sm_resps.
//
// It gives up when the bind ends because the SMSC never had its
// deliver_sm_resp then and sends the PDU again on the next bind, which
// stores it: a store still retrying for the old bind would store it twice
// once NATS is back, and an MO stored twice reaches the users twice.
func (s *Stage) deliverFunc(link string, closing <-chan struct{}, log *slog.Logger) smpplink.Deliver {
	return func(bind context.Context, p pdu.Body) error {
		now := time.Now().UTC()
		rec := record(link, p, now)
		subject, stored := "sms.dlr."+link, s.m.receipts
		var v any = rec
		if rec.ESMClass&esmTypeMask == 0 {
			subject, stored, v = "sms.inbound."+link, s.m.inbound, inbound(link, p, rec, now)
		}
		data, err := json.Marshal(v)
		if err != nil {
			log.Error("cannot encode deliver_sm", "err", err)
			return nil // the same PDU again would fail the same way
		}
		msg := &nats.Msg{Subject: subject, Data: data}
		// Every attempt carries the same Nats-Msg-Id: one that timed out may
		// still land (its ack lost), and JetStream drops a later attempt's
		// copy within the stream's duplicate window (SMS_DLR, SMS_INBOUND: 2 min).
		id := jetstream.WithMsgID("deliver-" + rand.Text())
		for attempt := 1; ; attempt++ {
			// While disconnected, nats.go keeps a publish and sends it on
			// reconnect, whether anyone still waits for its ack or not: one
			// per attempt of a store that may have given up since (its bind
			// ended), landing beside the copy the next bind stores. So no
			// attempt is made until the connection is back.
			err := nats.ErrDisconnected
			if s.js.Conn().IsConnected() {
				ctx, cancel := context.WithTimeout(bind, 5*time.Second)
				_, err = s.js.PublishMsg(ctx, msg, id)
				cancel()
			}
			if err == nil {
				stored.WithLabelValues(link).Inc()
				return nil
			}
			if attempt == 1 || attempt%10 == 0 { // one line per 20 s or so, not one per attempt
				log.Warn("storing deliver_sm failed, retrying before deliver_sm_resp", "attempt", attempt, "err", err)
			}
			select {
			case <-bind.Done():
				log.Warn("deliver_sm not stored before its bind ended: left to the SMSC to send again", "source", rec.Source)
				return err
			case <-closing:
				// Not stored: the link answers ESME_RX_T_APPN (or nothing,
				// once the bind is gone) and the SMSC sends it again.
				log.Warn("deliver_sm not stored before shutdown: left to the SMSC to send again", "source", rec.Source)
				return err
			case <-time.After(min(time.Duration(attempt)*200*time.Millisecond, 2*time.Second)):
			}
		}
	}
}

// inbound is the MO message in p, as stored on sms.inbound.<link>.
func inbound(link string, p pdu.Body, rec dlr.Record, now time.Time) mo.Message {
	text, c := smpplink.DecodeShortMessage(p)
	in := mo.Message{Link: link, From: rec.Source, To: rec.Dest, Text: text, DataCoding: rec.DataCoding, ReceivedAt: now}
	if v := p.Fields()[pdufield.SourceAddrTON]; v != nil && len(v.Bytes()) > 0 && v.Bytes()[0] == 1 &&
		in.From != "" && in.From[0] != '+' {
		in.From = "+" + in.From
	}
	if c.Total > 0 {
		in.Part = &c
	}
	return in
}

// record copies the fields of a deliver_sm that the receipts stage needs.
func record(link string, p pdu.Body, now time.Time) dlr.Record {
	f := p.Fields()
	r := dlr.Record{Link: link, ReceivedAt: now}
	if v := f[pdufield.SourceAddr]; v != nil {
		r.Source = v.String()
	}
	if v := f[pdufield.DestinationAddr]; v != nil {
		r.Dest = v.String()
	}
	if v := f[pdufield.ESMClass]; v != nil {
		if b := v.Bytes(); len(b) > 0 {
			r.ESMClass = b[0]
		}
	}
	if v := f[pdufield.DataCoding]; v != nil {
		if b := v.Bytes(); len(b) > 0 {
			r.DataCoding = b[0]
		}
	}
	if v := f[pdufield.ShortMessage]; v != nil {
		r.Text = append([]byte(nil), v.Bytes()...)
	}
	t := p.TLVFields()
	if v, ok := t[pdutlv.TagReceiptedMessageID]; ok && v != nil {
		r.ReceiptedID = v.String()
	}
	if v, ok := t[pdutlv.TagMessageStateOption]; ok && v != nil {
		if b := v.Bytes(); len(b) > 0 {
			r.MessageState = int(b[0])
		}
	}
	if v, ok := t[pdutlv.TagNetworkErrorCode]; ok && v != nil {
		r.NetworkError = append([]byte(nil), v.Bytes()...)
	}
	if v, ok := t[pdutlv.TagMessagePayload]; ok && v != nil && len(r.Text) == 0 {
		r.Text = append([]byte(nil), v.Bytes()...)
	}
	return r
}
