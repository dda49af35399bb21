package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/smsflow/smsflow/pkg/natstest"
	"github.com/smsflow/smsflow/services/dashboard"
)

// postBatch sends n messages of a campaign through POST /v1/messages.
func (in *instance) postBatch(t *testing.T, campaign string, first, n int) {
	t.Helper()
	var msgs []string
	for i := first; i < first+n; i++ {
		msgs = append(msgs, fmt.Sprintf(`{"id":"%s-%d","to":"+4206%08d","text":"message %d","campaign":%q}`, campaign, i, i, i, campaign))
	}
	body := `{"messages":[` + strings.Join(msgs, ",") + `]}`
	resp, err := client.Post("http://"+in.httpAddr+"/v1/messages", "application/json", bytes.NewBufferString(body))
	if err != nil {
		t.Errorf("POST /v1/messages: %v", err)
		return
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Errorf("POST /v1/messages = %d, want 202", resp.StatusCode)
	}
}

func (in *instance) stats(t *testing.T) dashboard.Stats {
	t.Helper()
	var s dashboard.Stats
	code, body := get(t, "http://"+in.httpAddr+"/api/v1/dashboard/stats")
	if code == http.StatusOK {
		if err := json.Unmarshal([]byte(body), &s); err != nil {
			t.Fatalf("stats: %v in %s", err, body)
		}
	}
	return s
}

// metricValues indexes a gather by `name{label="value",…}` (labels sorted).
func metricValues(t *testing.T, g prometheus.Gatherer) map[string]float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			sort.Strings(labels)
			key := mf.GetName()
			if len(labels) > 0 {
				key += "{" + strings.Join(labels, ",") + "}"
			}
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				out[key] = m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				out[key] = m.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				out[key+"_count"] = float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return out
}

// TestMetricsPassLintAndAddUpToTheMessagesSent sends 40 messages through the
// API and 5 invalid ones straight onto sms.outbound, then checks that the
// full registry, built as runCommand builds it, passes client_golang's lint
// and that each stage's counters and the observer's agree with what was sent.
func TestMetricsPassLintAndAddUpToTheMessagesSent(t *testing.T) {
	verifyNoLeaks(t)
	const good, bad, price = 40, 5, 0.05
	in := newInstance(t, fmt.Sprintf("SMSFLOW_LINKS__SIM1__PRICE=%v", price))
	cfg := in.config(t)
	reg := newRegistry()
	stages, _ := parseStages(strings.Join(allStages, ","))
	r := start(t, func(ctx context.Context) error { return run(ctx, cfg, stages, discardLogger(), reg) })
	in.waitReady(t, r)

	in.postBatch(t, "lint", 0, good)
	nc, err := nats.Connect("nats://" + in.natsAddr)
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	for i := range bad {
		body := fmt.Sprintf(`{"id":"bad-%d","to":"not a number","text":"x"}`, i)
		if _, err := js.Publish(context.Background(), "sms.outbound", []byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	nc.Close()

	natstest.Eventually(t, wait, fmt.Sprintf("want %d delivered and %d rejected on the dashboard", good, bad), func() bool {
		s := in.stats(t)
		return s.Counts["delivered"] == good && s.Counts["rejected"] == bad
	})
	// Receipts are acked after the status is written: wait for the queues
	// to empty before reading them.
	natstest.Eventually(t, wait, "want every queue empty", func() bool {
		s := in.stats(t)
		for _, q := range s.Queues {
			if q.Pending+uint64(q.AckPending) != 0 {
				return false
			}
		}
		return len(s.Queues) > 0
	})

	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatalf("lint: %v", err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}

	v := metricValues(t, reg)
	for key, want := range map[string]float64{
		`smsflow_ingest_messages_total`:                                                 good,
		`smsflow_policy_messages_total{result="queued"}`:                                good,
		`smsflow_policy_messages_total{result="rejected"}`:                              bad,
		`smsflow_policy_rejected_total{reason="invalid"}`:                               bad,
		`smsflow_egress_submits_total{link="sim1",result="ok"}`:                         good,
		`smsflow_egress_submits_total{link="sim1",result="permanent"}`:                  0,
		`smsflow_egress_duplicates_risked_total{link="sim1"}`:                           0,
		`smsflow_receipts_processed_total{result="delivered"}`:                          good,
		`smsflow_receipts_processed_total{result="orphan"}`:                             0,
		`smsflow_status_events_total{status="accepted"}`:                                good + bad,
		`smsflow_status_events_total{status="queued"}`:                                  good,
		`smsflow_status_events_total{status="submitted"}`:                               good,
		`smsflow_status_events_total{status="delivered"}`:                               good,
		`smsflow_status_events_total{status="rejected"}`:                                bad,
		`smsflow_status_events_total{status="failed"}`:                                  0,
		`smsflow_status_accepted_to_submitted_seconds_count`:                            good,
		`smsflow_status_submitted_to_delivered_seconds_count`:                           good,
		`smsflow_status_submit_results_total{command_status="0x00000000",link="sim1"}`:  good,
		`smsflow_status_submit_results_total{command_status="0x00000058",link="sim1"}`:  0,
		`smsflow_status_submitted_parts_total{link="sim1"}`:                             good,
		`smsflow_status_tracked_messages`:                                               0,
		`smsflow_queue_pending_messages{consumer="egress-default",stream="SMS_EGRESS"}`: 0,
		`smsflow_queue_pending_messages{consumer="policy",stream="SMS_OUTBOUND"}`:       0,
		`smsflow_stream_messages{stream="SMS_OUTBOUND"}`:                                good + bad,
		`smsflow_link_bound{link="sim1"}`:                                               1,
		`smsflow_link_configured_rate{link="sim1"}`:                                     200,
		`smsflow_egress_link_bound{link="sim1"}`:                                        1,
	} {
		got, ok := v[key]
		if !ok {
			t.Errorf("%s is not in the registry", key)
		} else if got != want {
			t.Errorf("%s = %v, want %v", key, got, want)
		}
	}
	if got := v[`smsflow_status_cost_total{link="sim1"}`]; got < good*price-1e-9 || got > good*price+1e-9 {
		t.Errorf("cost on sim1 = %v, want %v", got, good*price)
	}
	s := in.stats(t)
	if s.Cost.Total != good*price || s.Cost.Parts != good || s.SuccessRate != float64(good)/(good+bad) {
		t.Errorf("stats cost %+v success %v, want %v for %d parts and success %v", s.Cost, s.SuccessRate, good*price, good, float64(good)/(good+bad))
	}
	if err := r.stop(t, wait); err != nil {
		t.Fatalf("run returned %v after cancel, want nil", err)
	}
}
