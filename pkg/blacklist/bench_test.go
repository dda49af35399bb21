package blacklist

import (
	"bufio"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

const benchNumbers = 10_000_000

// benchKey returns a possible number: 40% Czech mobile, 30% UK mobile, 30%
// US, so the fast path meets countries with and without a national prefix.
func benchKey(rng *rand.Rand) uint64 {
	switch r := rng.IntN(10); {
	case r < 4:
		return 420_600_000_000 + rng.Uint64N(200_000_000) // +420 6xx/7xx xxx xxx
	case r < 7:
		return 447_000_000_000 + rng.Uint64N(1_000_000_000) // +44 7xxx xxxxxx
	default:
		npa := 200 + rng.Uint64N(800)
		nxx := 200 + rng.Uint64N(800)
		return 10_000_000_000 + npa*10_000_000 + nxx*10_000 + rng.Uint64N(10_000) // +1 NPA NXX xxxx
	}
}

func benchKeys(n int) []uint64 {
	rng := rand.New(rand.NewPCG(5, 6))
	keys := make([]uint64, n)
	for i := range keys {
		keys[i] = benchKey(rng)
	}
	return keys
}

// benchQueries returns n lookups, half of them numbers of keys and half
// mostly absent, laid out one after another in memory as a decoded batch
// of messages would be.
func benchQueries(keys []uint64, n int) []string {
	rng := rand.New(rand.NewPCG(7, 8))
	var all strings.Builder
	ends := make([]int, n)
	for i := range ends {
		k := keys[rng.IntN(len(keys))]
		if i%2 == 1 {
			k = benchKey(rng) // mostly a miss
		}
		all.WriteString("+" + strconv.FormatUint(k, 10))
		ends[i] = all.Len()
	}
	s, q := all.String(), make([]string, n)
	start := 0
	for i, end := range ends {
		q[i], start = s[start:end], end
	}
	return q
}

// BenchmarkContains is one lookup in a List of 10M numbers (and of 1000, to
// show the cost without cache misses), half of them hits, through the public
// Contains (string to key, overlay, set).
func BenchmarkContains(b *testing.B) {
	for _, n := range []int{1000, benchNumbers} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			keys := benchKeys(n)
			const queries = 1 << 20
			q := benchQueries(keys, queries)
			l := New(nil, nil, Options{}, slog.New(slog.DiscardHandler), NewMetrics(prometheus.NewRegistry()))
			l.setSources(map[string]*set{"file:bench": newSet(keys)})
			l.applyKV(nil)
			hits, i := 0, 0
			cpu := cpuTime(b)
			for b.Loop() {
				if l.Contains(q[i&(queries-1)]) {
					hits++
				}
				i++
			}
			b.ReportMetric(float64(cpuTime(b)-cpu)/float64(b.N), "cpu-ns/op")
			if hits == 0 {
				b.Fatal("no lookup hit")
			}
		})
	}
}

// BenchmarkContainsGoMap is the same lookups in a map[uint64]struct{} of the
// same 10M numbers, the obvious alternative, for comparison of time and
// memory.
func BenchmarkContainsGoMap(b *testing.B) {
	keys := benchKeys(benchNumbers)
	const queries = 1 << 20
	q := benchQueries(keys, queries)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	m := make(map[uint64]struct{})
	for _, k := range keys {
		m[k] = struct{}{}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	hits, i := 0, 0
	cpu := cpuTime(b)
	for b.Loop() {
		if k, ok := key(q[i&(queries-1)]); ok {
			if _, in := m[k]; in {
				hits++
			}
		}
		i++
	}
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(len(m)), "heap-bytes/number")
	b.ReportMetric(float64(cpuTime(b)-cpu)/float64(b.N), "cpu-ns/op")
	if hits == 0 {
		b.Fatal("no lookup hit")
	}
}

// cpuTime is the process's CPU time (user and system) in nanoseconds. On a
// shared machine it says more than wall time: another process's load does
// not inflate it.
func cpuTime(b *testing.B) int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// BenchmarkLoad10M reads, parses, normalises and indexes a 10M-number list
// file, and reports the set's memory a number.
func BenchmarkLoad10M(b *testing.B) {
	path := filepath.Join(b.TempDir(), "blacklist.txt")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriter(f)
	for _, k := range benchKeys(benchNumbers) {
		w.WriteByte('+')
		w.WriteString(strconv.FormatUint(k, 10))
		w.WriteByte('\n')
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	f.Close()

	var s *set
	var before, after runtime.MemStats
	var cpu int64
	for b.Loop() {
		b.StopTimer()
		s = nil
		runtime.GC()
		runtime.ReadMemStats(&before)
		start := cpuTime(b)
		b.StartTimer()
		if s, err = loadFile(path, ""); err != nil {
			b.Fatal(err)
		}
		cpu += cpuTime(b) - start
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	n := float64(s.len())
	b.ReportMetric(n, "numbers")
	b.ReportMetric(float64(s.bytes())/n, "set-bytes/number")
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "heap-bytes/number")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/number")
	b.ReportMetric(float64(cpu)/float64(b.N)/n, "cpu-ns/number")
	runtime.KeepAlive(s)
}
