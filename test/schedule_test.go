package test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/smsflow/smsflow/pkg/status"
	"github.com/smsflow/smsflow/services/smscsim"
)

// releaseBound is how soon after its send_at every message must enter the
// policy stage (issue 3). It is always measured and logged; it is asserted
// only with SCHEDULE_STRICT set, like the pacing figures (see strictPacing):
// on a shared CI machine under -race it says as much about the machine as
// about the release. That no message enters before its send_at is always
// asserted.
const releaseBound = time.Second

// sanityBound is asserted always: a release that late is a defect (a
// schedule lost in the restart and fired by something else, say), not noise.
const sanityBound = 10 * time.Second

func strictSchedule() bool { return os.Getenv("SCHEDULE_STRICT") != "" }

// startScheduled starts a pipeline against a simulator, posts n messages
// with send_at ahead from now, and waits (at most ahead) until all are
// scheduled.
func startScheduled(t *testing.T, prefix string, n int, ahead time.Duration) (*smscsim.Server, *pipeline, *statusLog, []string, time.Time) {
	t.Helper()
	sim := smscsim.NewServer(t, smscsim.Options{SystemID: "e2e", Password: "pw-e2e", ReceiptDelay: 20 * time.Millisecond})
	p := setup(t, t.TempDir(), sim.Addr(), "")
	p.start()
	_, js := p.connect()
	log := watchStatuses(t, js)
	sendAt := time.Now().Add(ahead)
	ids := scheduledBatch(t, p, prefix, n, sendAt)
	log.waitLatest(t, ahead, ids, status.Scheduled)
	return sim, p, log, ids, sendAt
}

// scheduledBatch posts n messages with ids prefix-0000… and send_at at, and
// returns their ids.
func scheduledBatch(t *testing.T, p *pipeline, prefix string, n int, at time.Time) []string {
	t.Helper()
	var msgs []map[string]any
	var ids []string
	for i := range n {
		id := fmt.Sprintf("%s-%04d", prefix, i)
		ids = append(ids, id)
		msgs = append(msgs, map[string]any{"id": id, "to": number(i), "text": "Black Friday: -50 % until midnight",
			"campaign": "bf-" + prefix, "send_at": at.Format(time.RFC3339Nano)})
	}
	code, body := p.postJSON("/v1/messages", map[string]any{"messages": msgs})
	if code != http.StatusAccepted {
		t.Fatalf("POST %d scheduled messages: HTTP %d %s", n, code, body)
	}
	return ids
}

// httpDelete sends DELETE path and returns the status code and body.
func (p *pipeline) httpDelete(path string) (int, []byte) {
	p.t.Helper()
	req, err := http.NewRequest(http.MethodDelete, "http://"+p.httpAddr+path, nil)
	if err != nil {
		p.t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		p.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}

// waitLatest waits until every id's latest event is want.
func (l *statusLog) waitLatest(t *testing.T, d time.Duration, ids []string, want string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		l.mu.Lock()
		missing, example := 0, ""
		for _, id := range ids {
			evs := l.events[id]
			if len(evs) == 0 || evs[len(evs)-1].Status != want {
				missing++
				example = id
			}
		}
		ex := l.events[example]
		l.mu.Unlock()
		if missing == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %d of %d messages are not %s; e.g. %s with history %+v", d, missing, len(ids), want, example, ex)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// first returns id's first event with status st.
func (l *statusLog) first(id, st string) (status.Event, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, ev := range l.events[id] {
		if ev.Status == st {
			return ev, true
		}
	}
	return status.Event{}, false
}

// serverReleases is, for every release the server made on sms.outbound
// (a message with a Nats-Scheduler header), its stream time after sendAt, by
// the schedule's subject (sms.scheduled.<id>).
func serverReleases(t *testing.T, js jetstream.JetStream, sendAt time.Time) map[string]time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := js.OrderedConsumer(ctx, "SMS_OUTBOUND", jetstream.OrderedConsumerConfig{FilterSubjects: []string{"sms.outbound"}})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]time.Duration{}
	for {
		batch, err := c.FetchNoWait(500)
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			md, err := m.Metadata()
			if err != nil {
				t.Fatal(err)
			}
			if from := m.Headers().Get("Nats-Scheduler"); from != "" {
				if _, twice := out[from]; twice {
					t.Errorf("%s released twice", from)
				}
				out[from] = md.Timestamp.Sub(sendAt)
			}
		}
		if got == 0 {
			return out
		}
	}
}

// spread is min, median and max of ds.
func spread(ds []time.Duration) (lo, mid, hi time.Duration) {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[0], s[len(s)/2], s[len(s)-1]
}

// Issue 3's acceptance test: 1,000 messages with send_at 5 s ahead, posted
// through the API; the pipeline is stopped with SIGTERM once they are all
// scheduled and started again on the same data dir before their time. The
// server releases each exactly once and none before send_at, none enters the
// policy stage (its `released` event) before send_at, each is delivered
// exactly once, and all enter within 10 s after (within 1 s: logged, and
// asserted with SCHEDULE_STRICT).
func TestAThousandScheduledMessagesSurviveARestartAndGoOutAtTheirTime(t *testing.T) {
	const n = 1000
	sim, p, log, ids, sendAt := startScheduled(t, "bf", n, 5*time.Second)
	scheduledBy := time.Now()
	p.stop()
	if got := sim.Accepted(); got != 0 {
		t.Fatalf("the simulator got %d submits before send_at", got)
	}
	p.start()
	restartedBy := time.Now()
	if !restartedBy.Before(sendAt) {
		t.Fatalf("scheduled %v and restarted %v after posting, past send_at (5 s): the restart did not fall in between, the test proves nothing",
			scheduledBy.Sub(sendAt.Add(-5*time.Second)), restartedBy.Sub(sendAt.Add(-5*time.Second)))
	}
	_, js := p.connect()
	log = watchStatuses(t, js)
	term := log.waitTerminal(t, 60*time.Second, ids)

	// `released` is written before the checks and the forward, so it is when
	// the message entered policy. (`queued` may be missing from a history:
	// it is dropped when egress's `submitted` got in first.)
	var released, submitted []time.Duration
	for _, id := range ids {
		if evs := term[id]; len(evs) != 1 || evs[0].Status != status.Delivered {
			t.Errorf("%s: terminal events %+v, want exactly one delivered", id, evs)
			continue
		}
		rel, ok1 := log.first(id, status.Released)
		sub, ok2 := log.first(id, status.Submitted)
		if !ok1 || !ok2 {
			t.Errorf("%s: no released or no submitted event", id)
			continue
		}
		if rel.At.Before(sendAt) || sub.At.Before(sendAt) {
			t.Errorf("%s entered policy at %v (submitted %v), before its send_at %v", id, rel.At, sub.At, sendAt)
		}
		released, submitted = append(released, rel.At.Sub(sendAt)), append(submitted, sub.At.Sub(sendAt))
	}
	if got := sim.Accepted(); got != n {
		t.Errorf("the simulator accepted %d submits for %d messages", got, n)
	}
	if t.Failed() {
		return
	}
	server := serverReleases(t, js, sendAt)
	if len(server) != n {
		t.Fatalf("the server made %d releases for %d schedules, want one each", len(server), n)
	}
	serverLo, serverMid, serverHi := spread(slices.Collect(maps.Values(server)))
	if serverLo < 0 {
		t.Errorf("the server released a message %v before its send_at", -serverLo)
	}
	rlo, rmid, rhi := spread(released)
	slo, smid, shi := spread(submitted)
	t.Logf("figures: messages=%d scheduled_by=%v restarted_by=%v (after posting; send_at at 5s) server released after send_at: min=%v median=%v max=%v; entered policy (released) after send_at: min=%v median=%v max=%v; submitted after send_at: min=%v median=%v max=%v",
		n, scheduledBy.Sub(sendAt.Add(-5*time.Second)).Round(time.Millisecond), restartedBy.Sub(sendAt.Add(-5*time.Second)).Round(time.Millisecond),
		serverLo.Round(time.Millisecond), serverMid.Round(time.Millisecond), serverHi.Round(time.Millisecond),
		rlo.Round(time.Millisecond), rmid.Round(time.Millisecond), rhi.Round(time.Millisecond),
		slo.Round(time.Millisecond), smid.Round(time.Millisecond), shi.Round(time.Millisecond))
	if rhi > sanityBound {
		t.Errorf("the last message entered policy %v after its send_at: more than %v is no machine's noise", rhi, sanityBound)
	}
	if strictSchedule() && rhi > releaseBound {
		t.Errorf("the last message entered policy %v after its send_at, want within %v (SCHEDULE_STRICT)", rhi, releaseBound)
	}
	p.stop()
}

// Cancelling through the API: a scheduled message cancelled before its
// send_at ends rejected/cancelled and never reaches the SMSC; once released,
// DELETE answers 409 with the status it has.
func TestCancellingScheduledMessagesThroughTheAPI(t *testing.T) {
	const n = 20
	sim, p, log, ids, _ := startScheduled(t, "cx", n, 3*time.Second)
	cancelled := ids[:n/2]
	for _, id := range cancelled {
		code, body := p.httpDelete("/v1/messages/" + id)
		if code != http.StatusOK {
			t.Fatalf("DELETE %s before its send_at: HTTP %d %s, want 200", id, code, body)
		}
	}
	term := log.waitTerminal(t, 30*time.Second, ids)
	for i, id := range ids {
		evs := term[id]
		if i < n/2 {
			if len(evs) != 1 || evs[0].Status != status.Rejected || evs[0].Reason != status.ReasonCancelled {
				t.Errorf("%s (cancelled): terminal events %+v, want one rejected/cancelled", id, evs)
			}
			for _, st := range []string{status.Released, status.Queued} {
				if _, ok := log.first(id, st); ok {
					t.Errorf("%s (cancelled) was %s", id, st)
				}
			}
			if c := sim.AcceptedTo(simDest(i)); c != 0 {
				t.Errorf("%s (cancelled) reached the SMSC %d times", id, c)
			}
			continue
		}
		if len(evs) != 1 || evs[0].Status != status.Delivered {
			t.Errorf("%s: terminal events %+v, want one delivered", id, evs)
		}
		code, body := p.httpDelete("/v1/messages/" + id)
		var v struct {
			Status string `json:"status"`
		}
		_ = json.Unmarshal(body, &v)
		if code != http.StatusConflict || v.Status != status.Delivered {
			t.Errorf("DELETE %s after its release: HTTP %d %s, want 409 with status delivered", id, code, body)
		}
	}
	if got := sim.Accepted(); got != n/2 {
		t.Errorf("the simulator accepted %d submits, want %d (the ones not cancelled)", got, n/2)
	}
	p.stop()
}

// Cancels racing the release: 200 messages are released while DELETEs for
// all of them are in flight. Each DELETE's answer must agree with the
// message's fate: 200 means it ends rejected/cancelled, was never queued and
// never reached the SMSC; 409 means it was released and is delivered once.
func TestACancelAndAReleaseNeverBothWin(t *testing.T) {
	const n = 200
	sim, p, log, ids, sendAt := startScheduled(t, "race", n, 3*time.Second)
	codes := make([]int, n)
	var wg sync.WaitGroup
	next := make(chan int)
	for range 8 {
		wg.Go(func() {
			for i := range next {
				codes[i], _ = p.httpDelete("/v1/messages/" + ids[i])
			}
		})
	}
	time.Sleep(time.Until(sendAt.Add(-20 * time.Millisecond)))
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	term := log.waitTerminal(t, 30*time.Second, ids)
	won := 0
	for i, id := range ids {
		evs := term[id]
		_, queued := log.first(id, status.Queued)
		_, rel := log.first(id, status.Released)
		queued = queued || rel
		switch codes[i] {
		case http.StatusOK:
			won++
			if len(evs) != 1 || evs[0].Reason != status.ReasonCancelled || queued || sim.AcceptedTo(simDest(i)) != 0 {
				t.Errorf("%s: cancel answered 200, yet terminal %+v, released or queued %v, submits %d", id, evs, queued, sim.AcceptedTo(simDest(i)))
			}
		case http.StatusConflict:
			if len(evs) != 1 || evs[0].Status != status.Delivered || sim.AcceptedTo(simDest(i)) != 1 {
				t.Errorf("%s: cancel answered 409, yet terminal %+v, submits %d", id, evs, sim.AcceptedTo(simDest(i)))
			}
		default:
			t.Errorf("%s: DELETE answered %d", id, codes[i])
		}
	}
	_, js := p.connect()
	server := serverReleases(t, js, sendAt)
	late := 0 // cancels that won after the server had released the message
	for i, id := range ids {
		if _, released := server["sms.scheduled."+id]; released && codes[i] == http.StatusOK {
			late++
		}
	}
	t.Logf("figures: %d of %d cancels won (%d of them after the server had released the message, so policy dropped the release), %d lost to the release",
		won, n, late, n-won)
	if got := sim.Accepted(); got != n-won {
		t.Errorf("the simulator accepted %d submits, want %d (the releases that won)", got, n-won)
	}
	p.stop()
}
