package egress

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/smsflow/smsflow/pkg/envelope"
	"github.com/smsflow/smsflow/pkg/natstest"
	"github.com/smsflow/smsflow/services/smscsim"
)

// A transactional message never waits behind a marketing backlog: it is the
// next submit once the one in flight is done.
func TestATransactionalMessageOvertakesAMarketingBacklog(t *testing.T) {
	const backlog = 10000 // the figure: a campaign queued in the pool
	e := newEnv(t, smscsim.Options{NoReceipts: true})
	e.publish(0, backlog, nil) // marketing
	// 5/s: a token every 200 ms, far longer than the publish below takes even
	// on a loaded machine, so the position check cannot flake.
	e.run(e.linkOpts(5, 1, 1), fastRetries(5))
	natstest.Eventually(t, wait, "want the backlog flowing", func() bool { return e.sim.Accepted() >= 2 })

	before := e.sim.Accepted()
	e.publish(backlog, backlog+1, func(m *envelope.Message) { m.Kind = envelope.Transactional })
	natstest.Eventually(t, wait, "want the transactional message sent", func() bool { return e.sim.AcceptedTo(simDst(backlog)) == 1 })
	pos := -1
	for i, s := range e.sim.Submits() {
		if s.Dest == simDst(backlog) {
			pos = i
		}
	}
	// Window 1: at most one marketing submit was in flight or holding the
	// token when it was queued, so it is at most the second submit after.
	if pos > before+1 {
		t.Fatalf("transactional message was submit #%d, queued when %d were done: it waited behind %d marketing submits",
			pos, before, pos-before)
	}
	if e.sim.Accepted() >= backlog {
		t.Fatal("the backlog drained before the check: the test proves nothing")
	}
}

// Every part of a long message is a submit and costs a token: a 4-part
// message and 12 short ones at 10/s, burst 1, never put more than 10 submits
// in any second.
func TestEveryPartOfALongMessageCostsAToken(t *testing.T) {
	e := newEnv(t, smscsim.Options{NoReceipts: true})
	e.publish(0, 1, func(m *envelope.Message) { m.Text = strings.Repeat("0123456789", 60) }) // 600 GSM chars: 4 parts
	e.publish(1, 13, nil)
	e.run(e.linkOpts(10, 1, 4), fastRetries(5))
	natstest.Eventually(t, wait, "want all 16 submits", func() bool { return e.sim.Accepted() == 16 })
	if got := e.sim.MaxInWindow(time.Second); got > 10 {
		t.Fatalf("%d submits in one second on a 10/s link: parts were not paced", got)
	}
}

// Transactional messages alone fill the link's window: a free worker takes
// one from the priority lane at once. (They used to go one at a time through
// the priority feeder, about 45 a second whatever the link's rate.) Against
// an SMSC that answers each submit after 500 ms, a one-at-a-time path puts at
// most one submit in any 400 ms; a window of 10 puts several there.
func TestTransactionalMessagesFillTheWindow(t *testing.T) {
	const n, window = 30, 10
	e := newEnv(t, smscsim.Options{NoReceipts: true, RespDelay: 500 * time.Millisecond})
	e.publish(0, n, func(m *envelope.Message) { m.Kind = envelope.Transactional })
	e.run(e.linkOpts(1000, 1000, window), fastRetries(5))
	natstest.Eventually(t, wait, fmt.Sprintf("want %d submits", n), func() bool { return e.sim.Accepted() >= n })
	if got := e.sim.MaxInWindow(400 * time.Millisecond); got < window/2 {
		t.Fatalf("at most %d transactional submits in any 400 ms against a 500 ms SMSC with window %d: they do not use the window", got, window)
	}
}
