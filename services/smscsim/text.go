package smscsim

import "sort"

// Message is a text as the SMSC received it: one submit, or the parts of a concatenated message
// put back together in part order.
type Message struct {
	Source, Dest string
	Text         string
	Parts        int
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
