package blacklist

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// watchObjects loads every object of the bucket as a list and follows puts
// and deletes. The objects present at start are loaded before initialDone;
// any of them that fails to load fails Run. Later, a bad object keeps the
// numbers of its previous version (a new object that is bad adds nothing).
func (l *List) watchObjects(ctx context.Context, obs jetstream.ObjectStore, initialDone func()) error {
	defer initialDone()
	w, err := obs.Watch(ctx)
	if err != nil {
		return fmt.Errorf("blacklist: watch object bucket %s: %w", l.opts.ObjectBucket, err)
	}
	defer func() { _ = w.Stop() }()
	initial := map[string]*set{} // nil once the first snapshot is applied
	var initialErrs []error
	for {
		select {
		case <-ctx.Done():
			return nil
		case info, ok := <-w.Updates():
			if !ok {
				return watchEnded(ctx, "object bucket "+l.opts.ObjectBucket)
			}
			if info == nil { // the end of the objects present at start
				if err := errors.Join(initialErrs...); err != nil {
					return err
				}
				if initial != nil {
					l.setSources(initial)
					initial = nil
					initialDone()
				}
				continue
			}
			name := "object:" + info.Name
			var s *set // nil drops the source
			if !info.Deleted {
				if s, err = l.loadObject(ctx, obs, info.Name); err != nil {
					if ctx.Err() != nil {
						return nil
					}
					l.m.loads.WithLabelValues("object", "error").Inc()
					if initial != nil {
						initialErrs = append(initialErrs, err)
					} else {
						l.log.Error("blacklist object not loaded; its previous numbers stay", "object", info.Name, "err", err)
					}
					continue
				}
			}
			if initial != nil {
				initial[name] = s
				continue
			}
			l.setSources(map[string]*set{name: s})
		}
	}
}

func (l *List) loadObject(ctx context.Context, obs jetstream.ObjectStore, name string) (*set, error) {
	start := time.Now()
	r, err := obs.Get(ctx, name)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, nil // deleted since the update: its delete follows
	}
	if err != nil {
		return nil, fmt.Errorf("blacklist object %s/%s: %w", l.opts.ObjectBucket, name, err)
	}
	defer r.Close()
	keys, err := Parse(r, l.opts.Region)
	if err == nil {
		err = r.Error() // a digest mismatch or a read cut short
	}
	if err != nil {
		return nil, fmt.Errorf("blacklist object %s/%s: %w", l.opts.ObjectBucket, name, err)
	}
	s := newSet(keys)
	l.m.loads.WithLabelValues("object", "ok").Inc()
	l.m.loadSecs.WithLabelValues("object").Set(time.Since(start).Seconds())
	l.log.Info("blacklist object loaded", "object", name, "numbers", s.len(), "took", time.Since(start).Round(time.Millisecond))
	return s, nil
}
