// Package dashboard is what an operator watches: cross-stage Prometheus
// metrics derived from SMS_STATUS (latency, counts, cost), queue depth and
// link state read from the server, the JSON endpoints behind the live page,
// the page itself, and the health probes.
//
//	GET /                          the live page (embedded, no external assets)
//	GET /api/v1/dashboard/stats    rates, counts, latency, cost, queues
//	GET /api/v1/dashboard/links    per-link state, rates, throttles, cost
//	GET /healthz, GET /readyz      liveness and readiness
//
// It reads only: subjects, streams and KV, never another stage's code.
package dashboard

import (
	"context"
	"embed"
	"encoding/json"
	"log/slog"
	"math"
	"net/http"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/smsflow/smsflow/pkg/status"
)

//go:embed page/index.html
var page embed.FS

// Dashboard serves the dashboard endpoints and the page; Run feeds it.
type Dashboard struct {
	obs    *Observer
	queues *Queues
	links  *LinkStates
	cfg    []Link
	log    *slog.Logger
	now    func() time.Time
}

// Options configure a Dashboard.
type Options struct {
	Links   []Link   // the configured links, in display order
	Streams []string // the streams whose durable consumers are queues
}

// New builds the dashboard and registers its metrics on reg: the status
// observer's, queue depth and link state.
func New(js jetstream.JetStream, opts Options, log *slog.Logger, reg prometheus.Registerer) *Dashboard {
	names := make([]string, len(opts.Links))
	prices := map[string]float64{}
	for i, l := range opts.Links {
		names[i] = l.Name
		prices[l.Name] = l.Price
	}
	return &Dashboard{
		obs:    NewObserver(js, names, ObserverOptions{Prices: prices}, log, reg),
		queues: NewQueues(js, opts.Streams, reg),
		links:  NewLinkStates(js, opts.Links, reg),
		cfg:    opts.Links, log: log, now: time.Now,
	}
}

// Run follows SMS_STATUS until ctx ends (see Observer.Run).
func (d *Dashboard) Run(ctx context.Context) error { return d.obs.Run(ctx) }

// Register adds the page and the dashboard endpoints to mux.
func (d *Dashboard) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /{$}", d.page)
	mux.HandleFunc("GET /api/v1/dashboard/stats", d.stats)
	mux.HandleFunc("GET /api/v1/dashboard/links", d.linkList)
}

func (d *Dashboard) page(w http.ResponseWriter, r *http.Request) {
	b, err := page.ReadFile("page/index.html")
	if err != nil { // cannot happen: the file is embedded
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	_, _ = w.Write(b)
}

// Stats is the answer of GET /api/v1/dashboard/stats.
type Stats struct {
	At            time.Time        `json:"at"`
	Since         time.Time        `json:"since"`          // counts and cost are of events since then
	WindowSeconds int              `json:"window_seconds"` // the rates average over this many whole seconds
	InPerSecond   float64          `json:"in_per_second"`  // accepted events per second
	OutPerSecond  float64          `json:"out_per_second"` // submitted events per second
	DeliveredPS   float64          `json:"delivered_per_second"`
	FailedPS      float64          `json:"failed_per_second"` // rejected + undelivered + expired + failed per second
	Finished      int64            `json:"finished"`          // terminal events since Since
	SuccessRate   float64          `json:"success_rate"`      // delivered / finished, 0 when none finished
	FailureRate   float64          `json:"failure_rate"`      // (finished - delivered) / finished
	Counts        map[string]int64 `json:"counts"`            // events by status since Since
	Latency       struct {
		AcceptedToSubmitted  Latency `json:"accepted_to_submitted"`
		SubmittedToDelivered Latency `json:"submitted_to_delivered"`
	} `json:"latency"` // over the most recent 10,000 samples each
	Cost struct {
		Total  float64            `json:"total"`
		Parts  int64              `json:"parts"`
		ByLink map[string]float64 `json:"by_link"`
	} `json:"cost"`
	Streams []Stream `json:"streams"`
	Queues  []Queue  `json:"queues"`
	Tracked int      `json:"tracked"` // messages whose latency is being tracked
	Errors  []string `json:"errors,omitempty"`
}

// failedStatuses are the terminal statuses that are not success.
var failedStatuses = []string{status.Rejected, status.Undelivered, status.Expired, status.Failed}

// StatsNow builds the stats answer.
func (d *Dashboard) StatsNow(ctx context.Context) Stats {
	snap := d.obs.Snapshot()
	s := Stats{At: d.now().UTC(), Since: snap.Since.UTC(), WindowSeconds: int(snap.Window / time.Second),
		InPerSecond: snap.Rates[status.Accepted], OutPerSecond: snap.Rates[status.Submitted],
		DeliveredPS: snap.Rates[status.Delivered], Counts: snap.Counts, Tracked: snap.Tracked}
	s.Finished = snap.Counts[status.Delivered]
	for _, st := range failedStatuses {
		s.FailedPS += snap.Rates[st]
		s.Finished += snap.Counts[st]
	}
	if s.Finished > 0 {
		s.SuccessRate = float64(snap.Counts[status.Delivered]) / float64(s.Finished)
		s.FailureRate = 1 - s.SuccessRate
	}
	s.Latency.AcceptedToSubmitted, s.Latency.SubmittedToDelivered = snap.ToSub, snap.ToDeliv
	s.Cost.ByLink = map[string]float64{}
	for l, c := range snap.Cost {
		s.Cost.ByLink[l] = roundMoney(c)
		s.Cost.Total += c
		s.Cost.Parts += snap.Parts[l]
	}
	s.Cost.Total = roundMoney(s.Cost.Total)
	streams, queues, err := d.queues.Read(ctx)
	s.Streams, s.Queues = nonNil(streams), nonNil(queues)
	if err != nil {
		s.Errors = append(s.Errors, "queues: "+err.Error())
	}
	return s
}

func (d *Dashboard) stats(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, d.StatsNow(r.Context()))
}

// LinkRow is one link in GET /api/v1/dashboard/links.
type LinkRow struct {
	LinkState
	SendRate float64 `json:"send_rate"` // parts submitted per second over the stats window
	Price    float64 `json:"price"`
	Parts    int64   `json:"parts"` // submitted since the observer started
	Cost     float64 `json:"cost"`
}

// LinksNow builds the links answer. The link state may be partial (KV
// unreachable): err says so, and the rows keep the config and the counts.
func (d *Dashboard) LinksNow(ctx context.Context) ([]LinkRow, error) {
	states, err := d.links.Read(ctx)
	byName := map[string]LinkState{}
	for _, s := range states {
		byName[s.Link] = s
	}
	snap := d.obs.Snapshot()
	rows := make([]LinkRow, 0, len(d.cfg))
	for _, l := range d.cfg {
		st, ok := byName[l.Name]
		if !ok {
			st = LinkState{Link: l.Name, Pool: l.Pool, State: "unknown", ConfiguredRate: l.Rate}
		}
		rows = append(rows, LinkRow{LinkState: st, SendRate: snap.Rates[partsKey(l.Name)], Price: l.Price,
			Parts: snap.Parts[l.Name], Cost: roundMoney(snap.Cost[l.Name])})
	}
	return rows, err
}

func (d *Dashboard) linkList(w http.ResponseWriter, r *http.Request) {
	rows, err := d.LinksNow(r.Context())
	body := struct {
		Links []LinkRow `json:"links"`
		Error string    `json:"error,omitempty"`
	}{Links: rows}
	if err != nil {
		body.Error = err.Error()
	}
	writeJSON(w, body)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(v)
}

// roundMoney drops the float noise of adding up prices (0.1+0.2), to a
// millionth of the unit.
func roundMoney(x float64) float64 { return math.Round(x*1e6) / 1e6 }

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
