package blacklist

import (
	"math/bits"
	"slices"
)

// set is an immutable set of number keys built for lookups at ten million
// numbers: about 9 bytes a number and two cache misses a lookup.
//
// Keys are scrambled by mix (a bijection, so nothing collides) to spread the
// country-clustered numbers evenly, and kept sorted. index[b] is where the
// keys whose top bits are b start, so a lookup reads one index entry and then
// scans a handful of neighbouring keys (two to four on average), instead of
// a 24-step binary search over 80 MB that misses the cache at every step.
type set struct {
	keys  []uint64 // mix(key), sorted, distinct
	index []uint32 // len 1<<b + 1
	shift uint     // 64 - b
}

// newSet builds a set from keys, which it scrambles in place (the caller
// gives them up). Duplicates are fine.
func newSet(keys []uint64) *set {
	for i, k := range keys {
		keys[i] = mix(k)
	}
	return build(keys)
}

// build makes a set of scrambled keys. Scrambled keys are spread evenly, so
// a counting sort on the bucket bits does most of the sorting in two linear
// passes, and each bucket's few keys are then sorted by insertion: several
// times faster at ten million keys than a comparison sort. It needs a second
// array of len(keys) while it runs.
func build(keys []uint64) *set {
	b := uint(bits.Len(uint(len(keys) / 4))) // about 2 to 4 keys a bucket
	b = max(1, min(b, 30))
	s := &set{index: make([]uint32, 1<<b+1), shift: 64 - b}
	for _, m := range keys {
		s.index[m>>s.shift+1]++
	}
	for i := 1; i < len(s.index); i++ {
		s.index[i] += s.index[i-1]
	}
	next := slices.Clone(s.index[:1<<b])
	out := make([]uint64, len(keys))
	for _, m := range keys {
		bucket := m >> s.shift
		out[next[bucket]] = m
		next[bucket]++
	}
	// Sort each bucket and drop duplicates, moving keys down over the gaps.
	w := uint32(0)
	for bucket := range 1 << b {
		lo, hi := s.index[bucket], s.index[bucket+1]
		s.index[bucket] = w
		run := out[lo:hi]
		insertionSort(run)
		for i, m := range run {
			if i == 0 || m != run[i-1] {
				out[w] = m
				w++
			}
		}
	}
	s.index[1<<b] = w
	s.keys = out[:w]
	if int(w) < len(out)-len(out)/16 { // many duplicates: do not hold the gap
		s.keys = slices.Clone(s.keys)
	}
	s.keys = slices.Clip(s.keys)
	return s
}

func insertionSort(a []uint64) {
	for i := 1; i < len(a); i++ {
		for j := i; j > 0 && a[j] < a[j-1]; j-- {
			a[j], a[j-1] = a[j-1], a[j]
		}
	}
}

// union returns a set of every key in sets. It returns the one non-empty set
// itself when there is only one, so a single big list costs no copy.
func union(sets ...*set) *set {
	var nonEmpty []*set
	total := 0
	for _, s := range sets {
		if s != nil && s.len() > 0 {
			nonEmpty = append(nonEmpty, s)
			total += s.len()
		}
	}
	switch len(nonEmpty) {
	case 0:
		return build(nil)
	case 1:
		return nonEmpty[0]
	}
	keys := make([]uint64, 0, total)
	for _, s := range nonEmpty {
		keys = append(keys, s.keys...)
	}
	return build(keys)
}

func (s *set) contains(k uint64) bool {
	m := mix(k)
	b := m >> s.shift
	for _, v := range s.keys[s.index[b]:s.index[b+1]] {
		if v >= m {
			return v == m
		}
	}
	return false
}

func (s *set) len() int { return len(s.keys) }

// bytes is the memory the set holds.
func (s *set) bytes() int { return 8*cap(s.keys) + 4*cap(s.index) }

// mix is the splitmix64 finaliser, a bijection on uint64.
func mix(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}
