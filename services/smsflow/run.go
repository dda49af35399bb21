package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/smsflow/smsflow/config"
	"github.com/smsflow/smsflow/pkg/blacklist"
	"github.com/smsflow/smsflow/pkg/broker"
	"github.com/smsflow/smsflow/pkg/dlr"
	"github.com/smsflow/smsflow/pkg/optout"
	"github.com/smsflow/smsflow/pkg/rules"
	"github.com/smsflow/smsflow/pkg/smpplink"
	"github.com/smsflow/smsflow/pkg/status"
	"github.com/smsflow/smsflow/services/dashboard"
	"github.com/smsflow/smsflow/services/egress"
	"github.com/smsflow/smsflow/services/ingest"
	"github.com/smsflow/smsflow/services/policy"
	"github.com/smsflow/smsflow/services/receipts"
	"github.com/smsflow/smsflow/services/smscsim"
	"github.com/smsflow/smsflow/services/statusindex"
	"github.com/smsflow/smsflow/services/webhooks"
	"github.com/smsflow/smsflow/streams"
)

// allStages are the stages `run` starts when --stages is not given.
var allStages = []string{"policy", "egress", "receipts", "http", "status", "webhooks"}

func runCommand(ctx context.Context, args []string, stderr io.Writer, environ func() []string) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "TOML config file (over the embedded defaults)")
	stagesFlag := fs.String("stages", strings.Join(allStages, ","), "stages to run: any of "+strings.Join(allStages, ","))
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		// "smsflow run policy" (for --stages policy) must not run every stage.
		return fmt.Errorf("%w: run takes no arguments, got %q", errUsage, fs.Args())
	}
	stages, err := parseStages(*stagesFlag)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	cfg, err := config.Load(*cfgPath, environ)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	log, err := newLogger(cfg.Log, stderr)
	if err != nil {
		return err
	}
	// SIGHUP reloads the config: what reload applies (policy) takes it
	// without a restart.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	reloads := make(chan config.Config)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
			}
			c, err := config.Load(*cfgPath, environ)
			if err != nil {
				log.Error("config reload refused: the running config stays", "err", err)
				continue
			}
			select {
			case reloads <- c:
			case <-ctx.Done():
				return
			}
		}
	}()
	return runWith(ctx, cfg, stages, log, newRegistry(), reloads)
}

// newRegistry is the /metrics registry of `run`: the stages' metrics go on
// it, beside the Go runtime's and the process's.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

func parseStages(s string) (map[string]bool, error) {
	out := map[string]bool{}
	for _, st := range strings.Split(s, ",") {
		st = strings.TrimSpace(st)
		if st == "" {
			continue
		}
		if !slices.Contains(allStages, st) {
			return nil, fmt.Errorf("--stages: unknown stage %q (want any of %s)", st, strings.Join(allStages, ","))
		}
		out[st] = true
	}
	if len(out) == 0 {
		return nil, errors.New("--stages: no stage given")
	}
	return out, nil
}

func newLogger(c config.Log, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.Level)); err != nil {
		return nil, fmt.Errorf("log.level: %w", err)
	}
	o := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, o)), nil
	}
	return slog.New(slog.NewTextHandler(w, o)), nil
}

// run is the composition root: it starts NATS (or connects), applies the
// stream definitions, starts the simulator when configured, then the stages,
// and on ctx's end shuts down in order: HTTP stops taking requests, the
// stages stop fetching and finish or give back what they hold, the links
// unbind, the simulator stops, NATS drains, the embedded server stops.
func run(ctx context.Context, cfg config.Config, stages map[string]bool, log *slog.Logger, reg prometheus.Registerer) error {
	return runWith(ctx, cfg, stages, log, reg, nil)
}

// runWith is run, taking reloaded configs from reloads (nil: none) and
// applying what can change while running: see reloadPolicy.
func runWith(ctx context.Context, cfg config.Config, stages map[string]bool, log *slog.Logger, reg prometheus.Registerer, reloads <-chan config.Config) (err error) {
	log.Info("smsflow starting", "stages", keys(stages), "links", len(cfg.Links), "embedded_nats", cfg.NATS.URL == "")
	if cfg.SMSCSim.Enabled {
		// simErr, not err: a deferred close must join the named result, which
		// a shadowing err would hide.
		sim, simErr := smscsim.Start(smscsim.Options{
			Listen:       cfg.SMSCSim.Listen,
			SystemID:     cfg.SMSCSim.SystemID,
			Password:     cfg.SMSCSim.Password.Reveal(),
			ReceiptDelay: cfg.SMSCSim.ReceiptDelay,
			MaxPerSecond: cfg.SMSCSim.MaxPerSecond,
			Log:          log,
		})
		if simErr != nil {
			return fmt.Errorf("smsc simulator: %w", simErr)
		}
		// Deferred before the stages start, so it closes after the links unbind.
		defer func() { err = errors.Join(err, sim.Close()) }()
	}

	b, err := broker.Start(ctx, cfg.NATS, log.With("component", "nats"))
	if err != nil {
		return fmt.Errorf("start nats: %w", err)
	}
	defer func() { err = errors.Join(err, b.Close()) }() // drain, then the embedded server

	if err := streams.Apply(ctx, b.JS, sortedKeys(cfg.Pools)); err != nil {
		if stopped(ctx, err) {
			return nil
		}
		return fmt.Errorf("apply streams: %w", err)
	}
	pub, err := status.NewPublisher(ctx, b.JS)
	if err != nil {
		if stopped(ctx, err) {
			return nil
		}
		return err
	}

	var ln net.Listener
	if stages["http"] {
		if ln, err = net.Listen("tcp", cfg.HTTP.Listen); err != nil {
			return fmt.Errorf("http.listen %s: %w", cfg.HTTP.Listen, err)
		}
	}

	// The blacklist serves the policy stage (Contains, after Ready), on_build
	// checks and the HTTP API (/v1/blacklist); a list that fails to load at
	// start stops run.
	var bl *blacklist.List
	var blr rules.Blacklist // a nil *List must not become a non-nil interface
	if stages["policy"] || stages["http"] {
		bl = blacklist.New(b.NC, b.JS, blacklist.Options{
			Files: cfg.Blacklist.Files, PollInterval: cfg.Blacklist.PollInterval,
			ObjectBucket: cfg.Blacklist.ObjectBucket, KVBucket: streams.BucketBlacklist,
			Region: cfg.Policy.DefaultRegion,
		}, log.With("component", "blacklist"), blacklist.NewMetrics(reg))
		blr = bl
	}
	pp, err := newPolicyParts(ctx, b.JS, cfg.Policy, blr, log.With("stage", "policy"))
	if err != nil {
		if stopped(ctx, err) {
			return nil
		}
		return err
	}
	var los []egress.LinkOptions
	if stages["egress"] {
		// Before any stage starts: an error here must not leave goroutines
		// running while the deferred close drains NATS under them.
		if los, err = linkOptions(cfg); err != nil {
			return err
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	if bl != nil {
		g.Go(func() error { return bl.Run(gctx) })
	}
	var eg *egress.Stage
	var live reloadable // what a reload swaps
	if stages["policy"] {
		routes := policy.NewRoutes(poolPrefixes(cfg), cfg.Policy.DefaultPool)
		pm := policy.NewMetrics(reg) // the rules after routing: a no_route never uses up a cap
		plog := log.With("stage", "policy")
		pol := policy.New(b.JS, pub, policy.Chain(routes, policy.Rules(pp.stage)), policy.Options{
			Region: cfg.Policy.DefaultRegion, MaxChars: cfg.Policy.MaxTextChars,
			Grace: cfg.Egress.ShutdownGrace,
		}, plog, pm)
		optOuts := policy.NewOptOuts(b.JS, pp.store, optout.NewKeywords(cfg.Policy.StopKeywords, cfg.Policy.StartKeywords), cfg.Policy.DefaultRegion, plog, pm)
		g.Go(func() error { return pp.view.Run(gctx) })
		g.Go(func() error { return optOuts.Run(gctx) })
		g.Go(func() error { return afterReady(gctx, pol.Run, bl.Ready(), pp.view.Ready()) })
		live.policy, live.optOuts = pol, optOuts
	}
	if stages["egress"] {
		eg = egress.New(b.JS, pub, los, egress.Options{
			MaxAttempts: cfg.Egress.MaxAttempts, BackoffMin: cfg.Egress.BackoffMin,
			BackoffMax: cfg.Egress.BackoffMax, Grace: cfg.Egress.ShutdownGrace,
			ReceiptTimeout: cfg.Receipts.ReceiptTimeout,
		}, log.With("stage", "egress"), egress.NewMetrics(reg))
		g.Go(func() error { return eg.Run(gctx) })
	}
	if stages["receipts"] {
		rc := receipts.New(b.JS, pub, receipts.Options{OrphanAfter: cfg.Receipts.OrphanAfter, Grace: cfg.Egress.ShutdownGrace,
			ReceiptTimeout: cfg.Receipts.ReceiptTimeout, ReceiptIDs: receiptIDForms(cfg)},
			log.With("stage", "receipts"), receipts.NewMetrics(reg))
		g.Go(func() error { return rc.Run(gctx) })
	}
	if stages["status"] {
		ix := statusindex.New(b.JS, pub, statusindex.Options{Grace: cfg.Egress.ShutdownGrace},
			log.With("stage", "status"), statusindex.NewMetrics(reg))
		g.Go(func() error { return ix.Run(gctx) })
	}
	if stages["webhooks"] {
		w := cfg.Webhooks
		wh := webhooks.New(b.JS, pub, webhooks.Options{
			DefaultURL: w.DefaultURL, Secret: w.Secret, MaxAge: w.MaxAge, PerHost: w.PerHostConcurrency,
			Timeout: w.Timeout, BackoffMin: w.BackoffMin, BackoffMax: w.BackoffMax, Grace: cfg.Egress.ShutdownGrace,
		}, log.With("stage", "webhooks"), webhooks.NewMetrics(reg))
		g.Go(func() error { return wh.Run(gctx) })
	}
	if stages["http"] {
		api := ingest.New(b.JS, pub, ingest.Options{
			MaxBodyBytes: cfg.HTTP.MaxBodyBytes, MaxBatch: cfg.HTTP.MaxBatch,
			Region: cfg.Policy.DefaultRegion, MaxChars: cfg.Policy.MaxTextChars,
			Links: sortedKeys(cfg.Links), Rules: pp.build,
		}, log.With("stage", "http"), ingest.NewMetrics(reg))
		live.api = api
		mux := http.NewServeMux()
		api.Register(mux)
		bl.Register(mux)
		gatherer, _ := reg.(prometheus.Gatherer)
		if gatherer != nil {
			mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
		}
		health := dashboard.Health{NC: b.NC, JS: b.JS, Streams: []string{streams.Outbound, streams.Egress, streams.Status, streams.DLR}}
		if eg != nil {
			health.BoundLinks = eg.BoundLinks
		}
		mux.HandleFunc("GET /healthz", health.Healthz)
		mux.HandleFunc("GET /readyz", health.Readyz)
		dash := dashboard.New(b.JS, dashboard.Options{
			Links:   dashboardLinks(cfg),
			Streams: []string{streams.Outbound, streams.Egress, streams.Status, streams.DLR, streams.Inbound}, // their durable consumers are the queues
		}, log.With("stage", "dashboard"), reg)
		dash.Register(mux)
		g.Go(func() error { return dash.Run(gctx) })
		// Bounded reads: a client trickling an 8 MiB body must not hold a
		// connection and its buffer for ever.
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: time.Minute, IdleTimeout: 2 * time.Minute}
		log.Info("http listening", "addr", ln.Addr().String())
		g.Go(func() error {
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("http: %w", err)
			}
			return nil
		})
		g.Go(func() error {
			<-gctx.Done()
			sctx, cancel := context.WithTimeout(context.WithoutCancel(gctx), 10*time.Second)
			defer cancel()
			return srv.Shutdown(sctx)
		})
	}
	if reloads != nil {
		g.Go(func() error {
			for {
				select {
				case <-gctx.Done():
					return nil
				case next := <-reloads:
					if err := live.reloadPolicy(gctx, b.JS, cfg, next, blr, pp); err != nil {
						log.Error("config reload refused: the running config stays", "err", err)
						continue
					}
					log.Info("config reloaded: policy rules, keywords and routes")
				}
			}
		})
	}
	log.Info("smsflow running", "nats", b.ClientURL())
	err = g.Wait()
	if stopped(ctx, err) {
		// A stage still starting when the stop came fails with ctx's error:
		// that is the stop, not a failure.
		err = nil
	}
	log.Info("smsflow stopped", "err", err)
	return err
}

// afterReady runs f once every ready channel is closed (the blacklist and
// the opt-out view have loaded), so no message is judged against a list that
// is still empty or naked for want of one; nil if ctx ends first.
func afterReady(ctx context.Context, f func(context.Context) error, ready ...<-chan struct{}) error {
	for _, r := range ready {
		select {
		case <-r:
		case <-ctx.Done():
			return nil
		}
	}
	return f(ctx)
}

// stopped reports whether err is only ctx ending: a signal during start-up
// is a clean stop (exit 0), as it is once running.
func stopped(ctx context.Context, err error) bool {
	return ctx.Err() != nil && errors.Is(err, ctx.Err())
}

func linkOptions(cfg config.Config) ([]egress.LinkOptions, error) {
	var out []egress.LinkOptions
	for _, pool := range sortedKeys(cfg.Pools) {
		for _, name := range cfg.Pools[pool].Links {
			l := cfg.Links[name]
			out = append(out, egress.LinkOptions{
				Name: name, Pool: pool, Rate: l.Rate, Burst: l.Burst, Source: l.SourceAddr,
				RespIDs: dlr.IDForm(l.RespIDForm), // validated: "", text, decimal or hex ("" is text)
				SMPP: smpplink.Config{Name: name, Addr: l.Address, SystemID: l.SystemID, Password: l.Password.Reveal(),
					SystemType: l.SystemType, Window: l.Window, RespTimeout: l.RespTimeout},
			})
			// Issue 5's SMPP keys.
			c := &out[len(out)-1].SMPP
			c.Sessions, c.BindMode, c.Split, c.EnquireLink = l.Sessions, smpplink.BindMode(l.BindMode), smpplink.Split(l.Split), l.EnquireLink
			if l.TLS {
				t, err := smpplink.TLSConfig(l.Address, l.TLSCA, l.TLSInsecureSkipVerify)
				if err != nil {
					return nil, fmt.Errorf("links.%s: %w", name, err)
				}
				c.TLS = t
			}
		}
	}
	return out, nil
}

// dashboardLinks are the configured links for the dashboard, pool by pool.
func dashboardLinks(cfg config.Config) []dashboard.Link {
	var out []dashboard.Link
	for _, pool := range sortedKeys(cfg.Pools) {
		for _, name := range cfg.Pools[pool].Links {
			l := cfg.Links[name]
			out = append(out, dashboard.Link{Name: name, Pool: pool, Rate: float64(l.Rate), Burst: l.Burst, Price: l.Price})
		}
	}
	return out
}

// receiptIDForms maps each link to how its SMSC writes receipt ids.
func receiptIDForms(cfg config.Config) map[string]dlr.IDForm {
	out := map[string]dlr.IDForm{}
	for name, l := range cfg.Links {
		out[name] = dlr.IDForm(l.ReceiptIDForm)
	}
	return out
}

func poolPrefixes(cfg config.Config) map[string][]string {
	out := map[string][]string{}
	for name, p := range cfg.Pools {
		out[name] = p.Prefixes
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func keys(m map[string]bool) []string { return sortedKeys(m) }
