package smpplink_test

import (
	"context"
	"testing"
	"time"

	"github.com/fiorix/go-smpp/smpp/pdu"
	"github.com/fiorix/go-smpp/smpp/pdu/pdufield"

	"github.com/smsflow/smsflow/pkg/natstest"
	"github.com/smsflow/smsflow/services/smscsim"
)

// Deliver's context is the life of the bind that read the deliver_sm: live
// while the connection is, done once it drops, so a store retrying then
// stops (the SMSC sends the deliver_sm again on the next bind). The next
// bind's deliver_sm get a live one again.
func TestDeliversContextEndsWithItsBind(t *testing.T) {
	sim := smscsim.NewServer(t, creds(smscsim.Options{}))
	type call struct {
		text  string
		alive bool // ctx not done when the handler was called
	}
	calls := make(chan call, 2)
	ended := make(chan string, 2)
	deliver := func(ctx context.Context, p pdu.Body) error {
		text := string(p.Fields()[pdufield.ShortMessage].Bytes())
		calls <- call{text, ctx.Err() == nil}
		<-ctx.Done() // a store that cannot land: retrying until the bind ends
		ended <- text
		return ctx.Err()
	}
	openDeliver(t, config(sim.Addr()), deliver, nil)

	for i, text := range []string{"first", "second"} {
		natstest.Eventually(t, wait, "want the link bound", func() bool { return sim.Binds() == 1 })
		if err := sim.SendMO("+420600000001", "Eshop", text); err != nil {
			t.Fatalf("bind %d: send MO: %v", i+1, err)
		}
		select {
		case c := <-calls:
			if c.text != text || !c.alive {
				t.Fatalf("bind %d: handler called for %q with a live context %v; want %q, true", i+1, c.text, c.alive, text)
			}
		case <-time.After(wait):
			t.Fatalf("bind %d: the handler not called within %v", i+1, wait)
		}
		sim.DropConnections()
		select {
		case got := <-ended:
			if got != text {
				t.Fatalf("bind %d: the context of %q ended, want %q's", i+1, got, text)
			}
		case <-time.After(wait):
			t.Fatalf("bind %d: the handler's context still live %v after its connection dropped", i+1, wait)
		}
	}
}
