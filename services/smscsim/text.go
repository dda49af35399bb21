package smscsim

import (
	"encoding/binary"
	"sort"

	"github.com/fiorix/go-smpp/smpp/pdu"
	"github.com/fiorix/go-smpp/smpp/pdu/pdutlv"

	"github.com/smsflow/smsflow/pkg/smpplink"
)

// Message is a text as the SMSC received it: one submit, or the parts of a concatenated message
// put back together in part order.
type Message struct {
	Source, Dest string
	Text         string
	Parts        int
}

// decodePart decodes one submit_sm's short_message the way a handset decodes a part on its own,
// and reads its concatenation: a UDH (8- or 16-bit reference) when esm_class has UDHI, else the
// SAR TLVs. total is 0 for a message that is not a part.
func decodePart(p pdu.Body, sm []byte, dataCoding, esmClass uint8) (text string, ref, total, seq int) {
	var c smpplink.Concat
	if esmClass&0x40 != 0 {
		c, sm = smpplink.CutUDH(sm)
	} else if t := p.TLVFields(); t != nil {
		r, okR := t[pdutlv.TagSarMsgRefNum]
		n, okN := t[pdutlv.TagSarTotalSegments]
		q, okQ := t[pdutlv.TagSarSegmentSeqnum]
		if okR && okN && okQ && r != nil && n != nil && q != nil && len(r.Bytes()) == 2 && len(n.Bytes()) == 1 && len(q.Bytes()) == 1 {
			c = smpplink.Concat{Ref: int(binary.BigEndian.Uint16(r.Bytes())), Total: int(n.Bytes()[0]), Seq: int(q.Bytes()[0])}
		}
	}
	return smpplink.DecodeText(sm, dataCoding), c.Ref, c.Total, c.Seq
}

// Messages returns every text the server accepted, concatenated messages put back together from
// their parts (the first accepted copy of each part), in the order their first part came. A
// concatenated message with a part missing is left out; PartialMessages counts them.
func (s *Server) Messages() []Message {
	out, _ := reassemble(s.Submits())
	return out
}

// PartialMessages is the number of concatenated messages with at least one part not (yet) accepted.
func (s *Server) PartialMessages() int {
	_, n := reassemble(s.Submits())
	return n
}

func reassemble(subs []Submit) ([]Message, int) {
	type key struct {
		src, dst   string
		ref, total int
	}
	type group struct {
		first int
		parts map[int]string
	}
	var out []Message
	var order []key
	groups := map[key]*group{}
	firsts := map[int]Message{} // index in subs -> a single message
	for i, sub := range subs {
		if sub.Total == 0 {
			firsts[i] = Message{Source: sub.Source, Dest: sub.Dest, Text: sub.Text, Parts: 1}
			continue
		}
		k := key{sub.Source, sub.Dest, sub.Ref, sub.Total}
		g := groups[k]
		if g == nil {
			g = &group{first: i, parts: map[int]string{}}
			groups[k] = g
			order = append(order, k)
		}
		if _, dup := g.parts[sub.Seq]; !dup {
			g.parts[sub.Seq] = sub.Text
		}
	}
	partial := 0
	for _, k := range order {
		g := groups[k]
		text, complete := "", true
		for n := 1; n <= k.total && complete; n++ {
			t, ok := g.parts[n]
			text, complete = text+t, ok
		}
		if !complete {
			partial++
			continue
		}
		firsts[g.first] = Message{Source: k.src, Dest: k.dst, Text: text, Parts: k.total}
	}
	idx := make([]int, 0, len(firsts))
	for i := range firsts {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	for _, i := range idx {
		out = append(out, firsts[i])
	}
	return out, partial
}
