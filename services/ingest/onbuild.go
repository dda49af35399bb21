package ingest

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/smsflow/smsflow/pkg/envelope"
	"github.com/smsflow/smsflow/pkg/rules"
	"github.com/smsflow/smsflow/pkg/status"
)

// PolicyOnBuild is the batch option that checks every message against the
// policy (blacklist, opt-out, duplicate window, caps) before anything is
// queued: {"messages":[…], "policy":"on_build", "dry_run":bool}.
const PolicyOnBuild = "on_build"

// buildOptions are the batch fields beside "messages".
type buildOptions struct {
	Policy string `json:"policy"`
	DryRun bool   `json:"dry_run"`
}

// readBuildOptions reads "policy" and "dry_run" of a batch body. A single
// envelope with either is refused rather than kept as unknown fields of the
// message: a "dry_run" that sends would be the worst surprise.
func readBuildOptions(body []byte, batch bool) (buildOptions, error) {
	var o buildOptions
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(body, &probe); err != nil {
		return o, err
	}
	if !batch {
		for _, k := range []string{"policy", "dry_run"} {
			if _, ok := probe[k]; ok {
				return o, fmt.Errorf(`%q belongs beside a batch: {"messages":[…], "policy":%q, "dry_run":true}`, k, PolicyOnBuild)
			}
		}
		return o, nil
	}
	if v, ok := probe["policy"]; ok {
		if err := json.Unmarshal(v, &o.Policy); err != nil || o.Policy != PolicyOnBuild {
			return o, fmt.Errorf(`"policy" must be %q, got %.40s`, PolicyOnBuild, v)
		}
	}
	if v, ok := probe["dry_run"]; ok {
		if err := json.Unmarshal(v, &o.DryRun); err != nil {
			return o, fmt.Errorf(`"dry_run" must be true or false, got %.40s`, v)
		}
		if o.DryRun && o.Policy == "" {
			return o, fmt.Errorf(`"dry_run" needs "policy":%q`, PolicyOnBuild)
		}
	}
	return o, nil
}

// newOnBuildMetric registers the count of messages on_build rejected.
func newOnBuildMetric(f promauto.Factory) *prometheus.CounterVec {
	v := f.NewCounterVec(prometheus.CounterOpts{Namespace: "smsflow", Subsystem: "ingest", Name: "onbuild_rejected_total",
		Help: `Messages of "policy":"on_build" requests rejected before queueing (not dry runs), by reason.`}, []string{"reason"})
	for _, r := range []string{status.ReasonBlacklist, status.ReasonOptedOut, status.ReasonDuplicate, status.ReasonDailyCP, status.ReasonWeeklyCP} {
		v.WithLabelValues(r)
	}
	return v
}

// buildResult is the on_build verdict on one message of the request.
type buildResult struct {
	Index    int    `json:"index"`
	ID       string `json:"id"`
	Rejected string `json:"rejected"` // a status reason, "" when it would be queued
	Detail   string `json:"detail"`
}

// errNoRules marks an on_build request to an API built without rules.
var errNoRules = errors.New("this server has no policy rules configured")

// judge runs the rules over msgs in request order, reading only: nothing is
// claimed or counted (the policy stage does that when the messages arrive).
// Earlier messages of the request count against later ones.
func (a *API) judge(r *http.Request, msgs []envelope.Message, invalid map[int]string) ([]buildResult, error) {
	rs := a.rules.Load()
	if rs == nil {
		return nil, errNoRules
	}
	p := rs.NewPreview()
	now := a.now()
	out := make([]buildResult, len(msgs))
	for i, m := range msgs {
		out[i] = buildResult{Index: i, ID: m.ID}
		if detail, bad := invalid[i]; bad {
			out[i].Rejected, out[i].Detail = status.ReasonInvalid, detail
			continue
		}
		pm, ferrs := envelope.Prepare(m, now, a.opts.Region, a.opts.MaxChars)
		if len(ferrs) > 0 { // validated before: cannot happen, but never judge an unprepared number
			out[i].Rejected, out[i].Detail = status.ReasonInvalid, ferrs[0].Error()
			continue
		}
		v, err := p.Check(r.Context(), pm)
		if err != nil {
			return nil, err
		}
		out[i].Rejected, out[i].Detail = v.Reason, v.Detail
	}
	return out, nil
}

// postOnBuild answers a batch with "policy":"on_build": each message is
// judged; those that would be rejected are not queued and get their
// rejected status now (unless dry_run), the rest are queued. The answer
// keeps "ids" (every message, request order) and adds "results". invalid
// (only in a dry run: otherwise the request was refused) are the messages
// that failed validation: "rejected":"invalid" with their field errors, and
// no id.
func (a *API) postOnBuild(w http.ResponseWriter, r *http.Request, msgs []envelope.Message, datas [][]byte, dryRun bool, invalid []itemError) {
	bad := map[int]string{}
	for _, e := range invalid {
		d := e.Error
		if e.Field != "" {
			d = e.Field + ": " + d
		}
		if bad[e.Index] != "" {
			d = bad[e.Index] + "; " + d
		}
		bad[e.Index] = d
	}
	results, err := a.judge(r, msgs, bad)
	if errors.Is(err, errNoRules) {
		a.m.requests.WithLabelValues("invalid").Inc()
		a.fail(w, http.StatusBadRequest, `"policy":"on_build": `+err.Error(), nil)
		return
	}
	if err != nil {
		a.m.requests.WithLabelValues("error").Inc()
		a.log.Warn("on_build check failed", "messages", len(msgs), "err", err)
		a.fail(w, http.StatusServiceUnavailable, "could not check the messages against the policy; retrying the same request is safe", nil)
		return
	}
	ids := make([]string, len(msgs))
	var queue []envelope.Message
	var queueData [][]byte
	for i, m := range msgs {
		ids[i] = m.ID
		if results[i].Rejected == "" {
			queue, queueData = append(queue, m), append(queueData, datas[i])
		}
	}
	answer := map[string]any{"ids": ids, "results": results, "queued": len(queue), "dry_run": dryRun}
	if dryRun {
		a.m.requests.WithLabelValues("accepted").Inc()
		writeJSON(w, http.StatusOK, answer)
		return
	}
	for _, res := range results {
		if res.Rejected == "" {
			continue
		}
		m := msgs[res.Index]
		ev := status.Event{ID: res.ID, Status: status.Rejected, Reason: res.Rejected, Detail: res.Detail, Stage: "ingest",
			Campaign: m.EventCampaign(), CallbackURL: m.CallbackURL}
		// Only as the message's first event: the same request sent again
		// (safe, the API says) must not end a message that an earlier one
		// queued, and that egress will send whatever its status says.
		_, err := a.pub.PublishNext(r.Context(), ev, 0)
		if errors.Is(err, status.ErrNotNext) {
			results[res.Index].Rejected = ""
			results[res.Index].Detail = "already known: " + a.latestStatus(r, res.ID)
			continue
		}
		if err != nil {
			a.m.requests.WithLabelValues("error").Inc()
			a.log.Warn("on_build: rejected status not written", "msg_id", res.ID, "err", err)
			a.fail(w, http.StatusServiceUnavailable, "could not record the rejections; retrying the same request is safe", nil)
			return
		}
		a.m.onBuild.WithLabelValues(res.Rejected).Inc()
	}
	if len(queue) > 0 {
		if err := a.publish(r.Context(), queue, queueData); err != nil {
			a.m.requests.WithLabelValues("error").Inc()
			a.log.Error("publish to sms.outbound failed", "messages", len(queue), "err", err)
			a.fail(w, http.StatusServiceUnavailable, "could not queue the messages; retrying the same request is safe", nil)
			return
		}
	}
	a.m.requests.WithLabelValues("accepted").Inc()
	a.m.messages.Add(float64(len(queue)))
	writeJSON(w, http.StatusAccepted, answer)
}

// latestStatus names a message's latest status for an answer ("unknown"
// when it cannot be read).
func (a *API) latestStatus(r *http.Request, id string) string {
	ev, err := a.pub.Latest(r.Context(), id)
	if err != nil {
		return "unknown"
	}
	if ev.Reason != "" {
		return ev.Status + "/" + ev.Reason
	}
	return ev.Status
}

// SetRules replaces the rules on_build judges by (after a config reload).
func (a *API) SetRules(r *rules.Rules) { a.rules.Store(r) }
