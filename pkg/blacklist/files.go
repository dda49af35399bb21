package blacklist

import (
	"fmt"
	"os"
	"slices"
	"time"
)

// fileWatch follows the list files.
//
// It polls (a stat per file per PollInterval) rather than using fsnotify:
// polling sees every way a file gets replaced (an editor's rename, a
// Kubernetes ConfigMap's symlink swap, a copy onto NFS) on every filesystem,
// where inotify misses some of these, and one stat a second is nothing.
//
// A changed file is read only once it has looked the same on two polls in a
// row (same size, modification time and inode) and did not change while it
// was read, so a file still being written is not loaded half-way. Writing a
// new file and renaming it over the old is still the safe way to update.
type fileWatch struct {
	l     *List
	paths []string
	state map[string]*fileState
}

type fileState struct {
	loaded  os.FileInfo // what the current numbers were read from
	pending os.FileInfo // a change seen on the last poll, not yet loaded
	failed  os.FileInfo // a version that did not load: not retried until it changes
	lastErr string      // the last problem reported, so a poll does not repeat it
}

func newFileWatch(l *List, paths []string) *fileWatch {
	fw := &fileWatch{l: l, paths: slices.Clone(paths), state: map[string]*fileState{}}
	for _, p := range paths {
		fw.state[p] = &fileState{}
	}
	return fw
}

// poll checks every file and loads those that changed and settled. With
// initial, every file is loaded now and any failure is returned; after
// that, failures are logged and counted and the file keeps its numbers.
func (fw *fileWatch) poll(initial bool) error {
	changed := map[string]*set{}
	var firstErr error
	for _, path := range fw.paths {
		s, err := fw.check(path, fw.state[path], initial)
		if err != nil {
			if initial {
				return err
			}
			if firstErr == nil {
				firstErr = err
			}
		}
		if s != nil {
			changed["file:"+path] = s
		}
	}
	if len(changed) > 0 || initial {
		fw.l.setSources(changed)
	}
	return firstErr
}

func (fw *fileWatch) check(path string, st *fileState, initial bool) (*set, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, fw.report(path, st, initial, fmt.Errorf("blacklist file %s: %w", path, err))
	}
	switch {
	case initial:
	case sameVersion(info, st.loaded), sameVersion(info, st.failed):
		st.pending = nil
		return nil, nil
	case !sameVersion(info, st.pending):
		st.pending = info // wait a poll for it to settle
		return nil, nil
	}
	start := time.Now()
	s, err := loadFile(path, fw.l.opts.Region)
	after, statErr := os.Stat(path)
	if statErr == nil && !sameVersion(info, after) {
		st.pending = after // written while we read: try again once it settles
		return nil, nil
	}
	if err != nil {
		st.failed, st.pending = info, nil
		return nil, fw.report(path, st, initial, err)
	}
	st.loaded, st.pending, st.failed, st.lastErr = info, nil, nil, ""
	fw.l.m.loads.WithLabelValues("file", "ok").Inc()
	fw.l.m.loadSecs.WithLabelValues("file").Set(time.Since(start).Seconds())
	fw.l.log.Info("blacklist file loaded", "path", path, "numbers", s.len(), "took", time.Since(start).Round(time.Millisecond))
	return s, nil
}

// report counts and logs a failed load once per distinct problem (a file
// that stays missing is one problem). The old numbers of the file stay.
func (fw *fileWatch) report(path string, st *fileState, initial bool, err error) error {
	if err.Error() == st.lastErr {
		return err // a missing file is seen at every poll: count it once
	}
	st.lastErr = err.Error()
	fw.l.m.loads.WithLabelValues("file", "error").Inc()
	if !initial {
		fw.l.log.Error("blacklist file not loaded; its previous numbers stay", "path", path, "err", err)
	}
	return err
}

func loadFile(path, region string) (*set, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("blacklist file %s: %w", path, err)
	}
	defer f.Close()
	expect := 0
	if info, err := f.Stat(); err == nil {
		expect = int(info.Size() / 14) // "+420600000001\n"; more lines only grow the slice
	}
	keys, err := parse(f, region, expect)
	if err != nil {
		return nil, fmt.Errorf("blacklist file %s: %w", path, err)
	}
	return newSet(keys), nil
}

func sameVersion(a, b os.FileInfo) bool {
	return a != nil && b != nil && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime()) && os.SameFile(a, b)
}
