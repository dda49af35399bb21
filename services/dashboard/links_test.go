package dashboard

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/smsflow/smsflow/pkg/linkstate"
	"github.com/smsflow/smsflow/pkg/natstest"
	"github.com/smsflow/smsflow/pkg/pacing"
	"github.com/smsflow/smsflow/streams"
)

func TestTokensFollowTheBucketState(t *testing.T) {
	const rate, burst = 100.0, 10
	T := pacing.Interval(rate)
	now := t0
	for _, c := range []struct {
		name string
		tat  time.Time
		want float64
	}{
		{"an idle bucket is full", now.Add(-time.Hour), burst},
		{"a bucket whose TAT is now holds its burst", now, burst},
		{"one token when the frontier is now", now.Add(time.Duration(burst-1) * T), 1},
		{"none while slots are granted ahead", now.Add(time.Duration(burst+5) * T), 0},
		{"half a token half an interval before the frontier", now.Add(time.Duration(burst-1)*T + T/2), 0.5},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := Tokens(pacing.State{TAT: c.tat.UnixNano()}, now, rate, burst)
			if diff := got - c.want; diff > 1e-9 || diff < -1e-9 {
				t.Fatalf("Tokens = %v, want %v", got, c.want)
			}
		})
	}
}

func TestLinkStateComesFromKV(t *testing.T) {
	ctx := context.Background()
	_, js := natstest.Connect(t, natstest.RunServer(t, t.TempDir()))
	if err := streams.Apply(ctx, js, []string{"default"}); err != nil {
		t.Fatal(err)
	}
	links, err := js.KeyValue(ctx, streams.BucketLinks)
	if err != nil {
		t.Fatal(err)
	}
	pace, err := js.KeyValue(ctx, streams.BucketPacing)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	// a: bound on two instances, one lowered by throttles; b: reported, not
	// bound; c: paused by an operator; d: never reported.
	for _, h := range []linkstate.Health{
		{Link: "a", Pool: "p", Instance: "i1", Bound: true, ConfiguredRate: 100, EffectiveRate: 100, Throttles: 1, UpdatedAt: now},
		{Link: "a", Pool: "p", Instance: "i2", Bound: true, ConfiguredRate: 100, EffectiveRate: 80, Throttles: 4, UpdatedAt: now},
		{Link: "b", Pool: "p", Instance: "i1", Bound: false, ConfiguredRate: 50, LastError: "connection refused", UpdatedAt: now},
		{Link: "c", Pool: "p", Instance: "i1", Bound: true, ConfiguredRate: 10, EffectiveRate: 10, UpdatedAt: now},
	} {
		if err := linkstate.PutHealth(ctx, links, h); err != nil {
			t.Fatal(err)
		}
	}
	if err := linkstate.SetPaused(ctx, links, "c", true, "maintenance"); err != nil {
		t.Fatal(err)
	}
	// a's bucket has granted slots up to one token short of its burst.
	b, _ := json.Marshal(pacing.State{TAT: now.Add(time.Duration(4) * pacing.Interval(100)).UnixNano(), Rate: 100, Burst: 10})
	if _, err := pace.Put(ctx, pacing.Key("a"), b); err != nil {
		t.Fatal(err)
	}

	reg := prometheus.NewRegistry()
	cfg := []Link{{Name: "a", Pool: "p", Rate: 100, Burst: 10}, {Name: "b", Pool: "p", Rate: 50, Burst: 50},
		{Name: "c", Pool: "p", Rate: 10, Burst: 1}, {Name: "d", Pool: "q", Rate: 5, Burst: 5}}
	ls := NewLinkStates(js, cfg, reg)
	ls.now = func() time.Time { return now }
	states, err := ls.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		state     string
		eff       float64
		throttles int64
		instances int
	}
	want := map[string]row{"a": {"bound", 80, 5, 2}, "b": {"down", 0, 0, 1}, "c": {"paused", 10, 0, 1}, "d": {"unknown", 0, 0, 0}}
	if len(states) != 4 {
		t.Fatalf("states = %+v, want 4 links", states)
	}
	for _, s := range states {
		w := want[s.Link]
		if got := (row{s.State, s.EffectiveRate, s.Throttles, s.Instances}); got != w {
			t.Errorf("link %s = %+v, want %+v", s.Link, got, w)
		}
	}
	if states[0].Tokens < 5.99 || states[0].Tokens > 6.01 {
		t.Errorf("a's tokens = %v, want 6 (burst 10, 4 slots granted ahead)", states[0].Tokens)
	}
	if states[3].Tokens != 5 || states[3].ConfiguredRate != 5 {
		t.Errorf("d (no bucket yet) = %+v, want a full bucket of 5 and rate 5", states[3])
	}
	if states[1].LastError != "connection refused" {
		t.Errorf("b's last error = %q", states[1].LastError)
	}
	want2 := `
# HELP smsflow_link_bound 1 when at least one egress instance has the link bound (KV sms_links), else 0.
# TYPE smsflow_link_bound gauge
smsflow_link_bound{link="a"} 1
smsflow_link_bound{link="b"} 0
smsflow_link_bound{link="c"} 1
smsflow_link_bound{link="d"} 0
# HELP smsflow_link_reported_throttles ESME_RTHROTTLED answers reported by the link's egress instances (each since it started; a restart lowers it).
# TYPE smsflow_link_reported_throttles gauge
smsflow_link_reported_throttles{link="a"} 5
smsflow_link_reported_throttles{link="b"} 0
smsflow_link_reported_throttles{link="c"} 0
smsflow_link_reported_throttles{link="d"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want2), "smsflow_link_bound", "smsflow_link_reported_throttles"); err != nil {
		t.Fatal(err)
	}
}
