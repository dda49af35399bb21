package egress

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/smsflow/smsflow/pkg/mo"
	"github.com/smsflow/smsflow/pkg/natstest"
	"github.com/smsflow/smsflow/services/smscsim"
	"github.com/smsflow/smsflow/streams"
)

// What deliverFunc logs: a failed publish (with its attempt number), and
// giving up on a deliver_sm without storing it.
const (
	logStoreFailed = `msg="storing deliver_sm failed`
	logGaveUp      = `msg="deliver_sm not stored before`
)

// An MO that cannot be stored (NATS down) is not acknowledged, so when the
// connection drops the SMSC sends it again on the next bind. The store that
// was retrying for the old bind must stop with it: once NATS is back, the
// MO is stored once (by the new bind's store), not once per bind.
func TestAnMOSentAgainOnANewBindWhileNATSIsDownIsStoredOnce(t *testing.T) {
	const from, to, text = "+420600000007", "Eshop", "see you at 8"
	dir := t.TempDir()
	srv := natstest.RunServer(t, dir)
	port := srv.Addr().(*net.TCPAddr).Port
	e := newEnvOn(t, srv, smscsim.Options{})
	var logs natstest.Buffer
	m := NewMetrics(prometheus.NewRegistry())
	s := New(e.js, e.pub, []LinkOptions{e.linkOpts(100, 10, 2)}, fastRetries(3),
		slog.New(slog.NewTextHandler(&logs, nil)), m)
	r := &running{m: m, halt: natstest.Run(t, wait+fastRetries(3).Grace, s.Run)}
	natstest.Eventually(t, wait, "want the link bound", func() bool { return e.sim.Binds() == 1 })
	// firstAttempts is how many stores of a deliver_sm have begun and failed
	// once; gaveUp, how many stopped unstored.
	count := func(subs ...string) int {
		n := 0
		for line := range strings.Lines(logs.String()) {
			if all(line, subs) {
				n++
			}
		}
		return n
	}
	firstAttempts := func() int { return count(logStoreFailed, " attempt=1 ") }
	gaveUp := func() int { return count(logGaveUp) }

	srv.Shutdown()
	srv.WaitForShutdown()
	natstest.Eventually(t, wait, "want the stage's NATS connection to see the server gone", func() bool { return !e.nc.IsConnected() })
	if err := e.sim.SendMO(from, to, text); err != nil {
		t.Fatalf("send the MO on the first bind: %v", err)
	}
	natstest.Eventually(t, wait, "want the first bind's store of the MO failing (NATS is down)", func() bool { return firstAttempts() == 1 })

	e.sim.DropConnections() // the MO was never answered: the SMSC keeps it
	natstest.Eventually(t, wait, "want the link bound again", func() bool { return e.sim.Binds() == 1 })
	if err := e.sim.SendMO(from, to, text); err != nil {
		t.Fatalf("send the MO again on the new bind: %v", err)
	}
	natstest.Eventually(t, wait, "want the new bind's store of the MO failing too", func() bool { return firstAttempts() == 2 })

	natstest.RunServerOnPort(t, dir, port)
	// Each of the two stores of the MO ends stored or given up; wait for
	// both, then for nothing else to be on its way.
	natstest.Eventually(t, wait, "want both stores of the MO ended (stored or given up)", func() bool {
		return len(e.inbound(from, text))+gaveUp() >= 2
	})
	r.stop()
	got := e.inbound(from, text)
	if len(got) != 1 || gaveUp() != 1 {
		t.Fatalf("the MO is stored %d times on sms.inbound.%s and %d stores gave up; want stored exactly once, one store given up\nlog: %s",
			len(got), link, gaveUp(), logs.Tail(2000))
	}
	if in := got[0]; in.To != to || in.Link != link {
		t.Fatalf("stored MO %+v, want to %s on link %s", in, to, link)
	}
	if n := r.count(r.m.inbound, link); n != 1 {
		t.Fatalf("inbound_stored_total = %v, want 1", n)
	}
}

// all reports whether s contains every one of subs.
func all(s string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// inbound is every MO stored on sms.inbound.<link> from from with text.
func (e *env) inbound(from, text string) []mo.Message {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	s, err := e.js.Stream(ctx, streams.Inbound)
	if err != nil {
		e.t.Fatalf("stream %s: %v", streams.Inbound, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		e.t.Fatalf("stream %s info: %v", streams.Inbound, err)
	}
	var out []mo.Message
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		raw, err := s.GetMsg(ctx, seq)
		if err != nil {
			e.t.Fatalf("message %d of %s: %v", seq, streams.Inbound, err)
		}
		var in mo.Message
		if err := json.Unmarshal(raw.Data, &in); err != nil {
			e.t.Fatalf("message %d of %s: %v", seq, streams.Inbound, err)
		}
		if raw.Subject == fmt.Sprintf("sms.inbound.%s", link) && in.From == from && in.Text == text {
			out = append(out, in)
		}
	}
	return out
}
