package webhooks

import "sync"

// urlCache remembers the callback_url of recently accepted messages, so
// that their later events (three or more a message) find it without reading
// the message's first event back from SMS_STATUS. An accepted event is a
// message's first and carries its callback_url (empty: none), so what it
// says is the answer. A miss (the accepted event went to another instance,
// or was forgotten) falls back to the read.
//
// Two generations of at most half the size each: when the young one is
// full it becomes the old one, and the old one is dropped. Cheaper than an
// LRU list and good enough for ids that are looked up within seconds of
// being added.
type urlCache struct {
	mu         sync.Mutex
	half       int
	young, old map[string]string
}

func newURLCache(size int) *urlCache {
	half := max(size/2, 1)
	return &urlCache{half: half, young: make(map[string]string, half)}
}

// put remembers id's callback URL (empty: none).
func (c *urlCache) put(id, url string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.young) >= c.half {
		c.old, c.young = c.young, make(map[string]string, c.half)
	}
	c.young[id] = url
}

// get returns id's callback URL and whether it is known.
func (c *urlCache) get(id string) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if u, ok := c.young[id]; ok {
		return u, true
	}
	u, ok := c.old[id]
	return u, ok
}
