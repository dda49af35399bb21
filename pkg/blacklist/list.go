// Package blacklist is the set of numbers smsflow never sends to.
//
// A List is the union of list files on disk and list objects in a NATS Object
// Store bucket (both in the format Parse reads), overridden per number by
// runtime decisions kept in a KV bucket: Add and Remove (also served on the
// NATS subjects smsflow.blacklist.* and over HTTP) write a decision there and
// every List on the bucket applies it within a moment. A runtime decision
// beats the lists: a number removed at run time stays allowed even if a list
// names it, until it is added again or its KV key is deleted (`nats kv del
// sms_blacklist 420600000001`), which hands it back to the lists.
//
// Lookups (Contains) never lock: readers load an immutable snapshot through
// an atomic pointer, and every change publishes a new one.
//
// Reloads are all or nothing per source: a file or object with any bad line
// is not loaded and that source keeps its previous numbers (logged at Error,
// counted in smsflow_blacklist_loads_total{result="error"}). At start there
// is no previous content, so Run fails instead of serving a blacklist that
// silently lacks a source.
package blacklist

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/smsflow/smsflow/pkg/phone"
)

// ErrNotReady is returned by lookups made before the first load completed.
var ErrNotReady = errors.New("blacklist not loaded yet")

// Options configure a List.
type Options struct {
	// Files are list files, re-read when they change (checked every
	// PollInterval; see fileWatch for why polling).
	Files        []string
	PollInterval time.Duration // default 2s
	// ObjectBucket is the Object Store bucket whose every object is a list;
	// "" for none.
	ObjectBucket string
	// KVBucket holds the runtime decisions (required).
	KVBucket string
	// Region parses national numbers in lists and requests ("" requires +E.164).
	Region string
	// Subject is the prefix of the request subjects (default
	// "smsflow.blacklist": .add, .remove, .check); "-" serves none.
	Subject string
}

// List is a blacklist. Make it with New and run it with Run. Every method is
// safe for concurrent use; Contains answers false until Ready is closed.
type List struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	opts Options
	log  *slog.Logger
	m    *Metrics
	now  func() time.Time

	snap  atomic.Pointer[snapshot]
	pubMu sync.Mutex // serialises publish

	srcMu   sync.Mutex      // guards sources and base rebuilds
	sources map[string]*set // "file:<path>" or "object:<name>"

	ovMu    sync.Mutex // guards overlay, rev and revCh
	overlay map[uint64]Entry
	rev     uint64        // last KV revision applied
	revCh   chan struct{} // closed and replaced when rev advances
	kv      atomic.Pointer[jetstream.KeyValue]
	ready   chan struct{}
	runOnce atomic.Bool
}

// Entry is a runtime decision about one number.
type Entry struct {
	Blacklisted bool      `json:"blacklisted"`
	Note        string    `json:"note,omitempty"`
	At          time.Time `json:"at"`
}

// snapshot is what a lookup reads; it is never modified once published.
type snapshot struct {
	base    *set             // union of every list
	overlay map[uint64]Entry // runtime decisions, beating base
}

// New makes a List; it loads nothing until Run.
func New(nc *nats.Conn, js jetstream.JetStream, opts Options, log *slog.Logger, m *Metrics) *List {
	if opts.PollInterval <= 0 {
		opts.PollInterval = 2 * time.Second
	}
	if opts.Subject == "" {
		opts.Subject = "smsflow.blacklist"
	}
	l := &List{nc: nc, js: js, opts: opts, log: log, m: m, now: time.Now,
		sources: map[string]*set{}, overlay: map[uint64]Entry{},
		revCh: make(chan struct{}), ready: make(chan struct{})}
	l.snap.Store(&snapshot{base: build(nil), overlay: l.overlay})
	return l
}

// Ready is closed once every source has loaded: until then Contains answers
// false for every number, so a stage that rejects by it must wait for Ready.
func (l *List) Ready() <-chan struct{} { return l.ready }

// Contains reports whether the E.164 number ("+420600000001", as
// phone.Normalize returns it) is blacklisted. It never blocks.
func (l *List) Contains(e164 string) bool {
	k, ok := key(e164)
	if !ok {
		return false
	}
	s := l.snap.Load()
	if e, ok := s.overlay[k]; ok {
		return e.Blacklisted
	}
	return s.base.contains(k)
}

// Status is the answer to a lookup.
type Status struct {
	Number      string    `json:"number"`
	Blacklisted bool      `json:"blacklisted"`
	Source      string    `json:"source,omitempty"` // "runtime" (Add/Remove) or "list" (a file or object)
	Note        string    `json:"note,omitempty"`
	At          time.Time `json:"at,omitzero"` // of the runtime decision
}

// Check normalises number (national numbers in Options.Region) and says
// whether it is blacklisted and why. An invalid number is an error wrapping
// phone.ErrInvalid; before Ready it is ErrNotReady.
func (l *List) Check(number string) (Status, error) {
	e164, err := phone.Normalize(number, l.opts.Region)
	if err != nil {
		return Status{}, err
	}
	select {
	case <-l.ready:
	default:
		return Status{Number: e164}, ErrNotReady
	}
	k, _ := key(e164)
	s := l.snap.Load()
	if e, ok := s.overlay[k]; ok {
		return Status{Number: e164, Blacklisted: e.Blacklisted, Source: "runtime", Note: e.Note, At: e.At}, nil
	}
	if s.base.contains(k) {
		return Status{Number: e164, Blacklisted: true, Source: "list"}, nil
	}
	return Status{Number: e164}, nil
}

// Add blacklists number at run time, on every List of the KV bucket, with a
// note for people (who asked, why). It returns once this List applies it, so
// a Contains after Add sees it. An invalid number is an error wrapping
// phone.ErrInvalid.
func (l *List) Add(ctx context.Context, number, note string) (Status, error) {
	return l.decide(ctx, number, Entry{Blacklisted: true, Note: note})
}

// Remove allows number at run time, on every List of the KV bucket, even if
// a list file or object names it (see the package comment).
func (l *List) Remove(ctx context.Context, number, note string) (Status, error) {
	return l.decide(ctx, number, Entry{Blacklisted: false, Note: note})
}

func (l *List) decide(ctx context.Context, number string, e Entry) (Status, error) {
	e164, err := phone.Normalize(number, l.opts.Region)
	if err != nil {
		return Status{}, err
	}
	kvp := l.kv.Load()
	if kvp == nil {
		return Status{Number: e164}, ErrNotReady
	}
	e.At = l.now().UTC()
	val, err := json.Marshal(e)
	if err != nil {
		return Status{}, err
	}
	rev, err := (*kvp).Put(ctx, e164[1:], val)
	if err != nil {
		return Status{Number: e164}, fmt.Errorf("blacklist %s: write %s: %w", e164, l.opts.KVBucket, err)
	}
	if err := l.waitRev(ctx, rev); err != nil {
		return Status{Number: e164}, fmt.Errorf("blacklist %s: written, not yet applied here: %w", e164, err)
	}
	return Status{Number: e164, Blacklisted: e.Blacklisted, Source: "runtime", Note: e.Note, At: e.At}, nil
}

// waitRev waits until the KV watcher has applied revision rev.
func (l *List) waitRev(ctx context.Context, rev uint64) error {
	for {
		l.ovMu.Lock()
		done, ch := l.rev >= rev, l.revCh
		l.ovMu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Run loads every source, closes Ready, serves the request subjects, and
// follows changes until ctx ends (then it returns nil). It fails when a
// source cannot be loaded at start, or a bucket does not exist.
func (l *List) Run(ctx context.Context) error {
	if !l.runOnce.CompareAndSwap(false, true) {
		return errors.New("blacklist: Run called twice")
	}
	kv, err := l.js.KeyValue(ctx, l.opts.KVBucket)
	if err != nil {
		return fmt.Errorf("blacklist: kv bucket %q: %w", l.opts.KVBucket, err)
	}
	var obs jetstream.ObjectStore
	if l.opts.ObjectBucket != "" {
		if obs, err = l.js.ObjectStore(ctx, l.opts.ObjectBucket); err != nil {
			return fmt.Errorf("blacklist: object bucket %q: %w", l.opts.ObjectBucket, err)
		}
	}
	fw := newFileWatch(l, l.opts.Files)
	if err := fw.poll(true); err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	var initial sync.WaitGroup
	initial.Add(2)
	// Each watcher calls its done once, when its first snapshot is applied
	// or it gives up; the wait below also ends with gctx.
	g.Go(func() error { return l.watchKV(gctx, kv, sync.OnceFunc(initial.Done)) })
	if obs != nil {
		g.Go(func() error { return l.watchObjects(gctx, obs, sync.OnceFunc(initial.Done)) })
	} else {
		initial.Done()
	}
	g.Go(func() error {
		t := time.NewTicker(l.opts.PollInterval)
		defer t.Stop()
		for {
			select {
			case <-gctx.Done():
				return nil
			case <-t.C:
				_ = fw.poll(false) // reported inside; the old numbers stay
			}
		}
	})
	g.Go(func() error {
		done := make(chan struct{})
		go func() { initial.Wait(); close(done) }()
		select {
		case <-gctx.Done():
			return nil
		case <-done:
		}
		l.kv.Store(&kv)
		var sub *nats.Subscription
		if l.opts.Subject != "-" {
			var err error
			if sub, err = l.subscribe(gctx); err != nil {
				return err
			}
		}
		s := l.snap.Load()
		l.log.Info("blacklist loaded", "numbers", s.count(), "lists", len(l.sourceNames()), "runtime_entries", len(s.overlay))
		close(l.ready) // after subscribing: a ready List answers requests
		<-gctx.Done()
		if sub != nil {
			_ = sub.Unsubscribe()
		}
		return nil
	})
	err = g.Wait()
	if ctx.Err() != nil && (err == nil || errors.Is(err, ctx.Err())) {
		return nil
	}
	return err
}

func (l *List) sourceNames() []string {
	l.srcMu.Lock()
	defer l.srcMu.Unlock()
	return sortedKeys(l.sources)
}

// setSources replaces (or, for a nil set, drops) the named sources and
// publishes the new union.
func (l *List) setSources(changed map[string]*set) {
	l.srcMu.Lock()
	defer l.srcMu.Unlock()
	for name, s := range changed {
		if s == nil {
			delete(l.sources, name)
		} else {
			l.sources[name] = s
		}
	}
	all := make([]*set, 0, len(l.sources))
	for _, name := range sortedKeys(l.sources) {
		all = append(all, l.sources[name])
	}
	base := union(all...)
	l.publish(func(s *snapshot) { s.base = base })
}

// applyKV applies a batch of KV entries to the overlay (copy on write).
func (l *List) applyKV(entries []jetstream.KeyValueEntry) {
	l.ovMu.Lock()
	defer l.ovMu.Unlock()
	ov := maps.Clone(l.overlay)
	maxRev := l.rev
	applied := 0
	for _, e := range entries {
		maxRev = max(maxRev, e.Revision())
		k, err := strconv.ParseUint(e.Key(), 10, 64)
		if err != nil || e.Key()[0] == '0' || len(e.Key()) > 15 {
			l.m.loads.WithLabelValues("runtime", "error").Inc()
			l.log.Warn("blacklist: ignoring kv key that is not an E.164 number's digits", "key", e.Key())
			continue
		}
		if e.Operation() != jetstream.KeyValuePut {
			delete(ov, k) // deleted or purged: the lists decide again
			applied++
			continue
		}
		var en Entry
		if err := json.Unmarshal(e.Value(), &en); err != nil {
			l.m.loads.WithLabelValues("runtime", "error").Inc()
			l.log.Warn("blacklist: ignoring kv entry that is not a decision", "key", e.Key(), "err", err)
			continue
		}
		ov[k] = en
		applied++
	}
	l.overlay = ov
	l.publish(func(s *snapshot) { s.overlay = ov })
	if maxRev > l.rev {
		l.rev = maxRev
		close(l.revCh)
		l.revCh = make(chan struct{})
	}
	l.m.loads.WithLabelValues("runtime", "ok").Add(float64(applied))
}

// publish makes a new snapshot from the current one changed by f.
func (l *List) publish(f func(*snapshot)) {
	l.pubMu.Lock()
	defer l.pubMu.Unlock()
	s := *l.snap.Load()
	f(&s)
	l.snap.Store(&s)
	l.m.observe(&s)
}

// count is the number of blacklisted numbers in s.
func (s *snapshot) count() int {
	n := s.base.len()
	for k, e := range s.overlay {
		switch in := s.base.contains(k); {
		case e.Blacklisted && !in:
			n++
		case !e.Blacklisted && in:
			n--
		}
	}
	return n
}

func (l *List) watchKV(ctx context.Context, kv jetstream.KeyValue, initialDone func()) error {
	defer initialDone()
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("blacklist: watch kv %s: %w", l.opts.KVBucket, err)
	}
	defer func() { _ = w.Stop() }()
	initial := true
	var batch []jetstream.KeyValueEntry
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return watchEnded(ctx, "kv "+l.opts.KVBucket)
			}
			if e != nil {
				batch = append(batch, e)
			}
			if initial && e != nil {
				continue // the first snapshot is applied in one go at the marker
			}
			// Take whatever else is waiting, so a burst of adds is one copy.
		drain:
			for {
				select {
				case e, ok := <-w.Updates():
					if !ok || e == nil {
						break drain
					}
					batch = append(batch, e)
				default:
					break drain
				}
			}
			l.applyKV(batch)
			batch = batch[:0]
			if initial {
				initial = false
				initialDone()
			}
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}

// watchEnded is what a watcher returns when its updates stop: nil when ctx
// ended (the connection drains at shutdown), else an error, so the List
// does not silently stop following changes.
func watchEnded(ctx context.Context, what string) error {
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("blacklist: watch of %s ended", what)
}
