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

// newSet builds a set from keys, which it sorts and scrambles in place (the
// caller gives them up). Duplicates are fine.
func newSet(keys []uint64) *set {
	for i, k := range keys {
		keys[i] = mix(k)
	}
	slices.Sort(keys)
	return indexed(slices.Clip(slices.Compact(keys)))
}

// indexed builds the bucket index over sorted, distinct scrambled keys.
func indexed(keys []uint64) *set {
	b := uint(bits.Len(uint(len(keys) / 4))) // about 2 to 4 keys a bucket
	b = max(1, min(b, 30))
	s := &set{keys: keys, index: make([]uint32, 1<<b+1), shift: 64 - b}
	i := 0
	for bucket := range 1 << b {
		s.index[bucket] = uint32(i)
		for i < len(keys) && int(keys[i]>>s.shift) == bucket {
			i++
		}
	}
	s.index[1<<b] = uint32(len(keys))
	return s
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
		return indexed(nil)
	case 1:
		return nonEmpty[0]
	}
	keys := make([]uint64, 0, total)
	for _, s := range nonEmpty {
		keys = append(keys, s.keys...)
	}
	slices.Sort(keys)
	return indexed(slices.Clip(slices.Compact(keys)))
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
