package egress

// The messages this process holds (from prepare until settled) and those it
// handled lately, by id. A restarted NATS server forgets the last moments of
// its consumers' state, so a message this process holds, or has just
// submitted and acked, can come back as a first delivery: the first must
// not be submitted beside the one held, and the second must be checked like
// a redelivery (it is acked if its submit was recorded).

// handledSize bounds Stage.handled: some seconds of messages at thousands
// a second, about what a restarting server can have forgotten.
const handledSize = 1 << 15

// hold marks id held by this process; false when it is already.
func (s *Stage) hold(id string) bool {
	s.heldMu.Lock()
	defer s.heldMu.Unlock()
	if s.held[id] {
		return false
	}
	s.held[id] = true
	return true
}

// release ends the hold on id; it stays among the handled ones.
func (s *Stage) release(id string) {
	s.heldMu.Lock()
	delete(s.held, id)
	s.heldMu.Unlock()
}

// seen reports whether this process handled id lately, and remembers that
// it does now.
func (s *Stage) seen(id string) bool {
	_, ok := s.handled.Get(id)
	s.handled.Put(id, struct{}{})
	return ok
}
