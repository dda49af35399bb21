// Package recent is a bounded map of recently written keys, for stages that
// look a value up again seconds after they wrote it (the next status event
// of the same message) and can fall back to reading it from NATS.
//
// It keeps two generations of at most half the size each: when the young
// one is full it becomes the old one and the old one is dropped. Cheaper
// than an LRU list, and as good for keys looked up soon after they were put.
package recent

import "sync"

// Map is safe for concurrent use.
type Map[K comparable, V any] struct {
	mu         sync.Mutex
	half       int
	young, old map[K]V
}

// New makes a Map of at most size entries (at least 2).
func New[K comparable, V any](size int) *Map[K, V] {
	half := max(size/2, 1)
	return &Map[K, V]{half: half, young: make(map[K]V, half)}
}

// Put sets k's value.
func (m *Map[K, V]) Put(k K, v V) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.young[k]; !ok && len(m.young) >= m.half {
		m.old, m.young = m.young, make(map[K]V, m.half)
	}
	m.young[k] = v
}

// Get returns k's value and whether it is known.
func (m *Map[K, V]) Get(k K) (V, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if v, ok := m.young[k]; ok {
		return v, true
	}
	v, ok := m.old[k]
	return v, ok
}

// Delete forgets k.
func (m *Map[K, V]) Delete(k K) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.young, k)
	delete(m.old, k)
}
