package store

// stateEvent is a change of a store's state, or a corruption report, on
// its way to the registry's hooks (OnStateChange, OnCorrupt).
type stateEvent struct {
	state   State
	cause   error
	changed bool // the state changed: the OnStateChange hooks run
	corrupt bool // damage was found: the OnCorrupt hooks run
}

// queueLocked appends e to the events to deliver. s.mu must be held, and
// the state already changed, so the queue's order is the order of the
// changes.
func (s *Store) queueLocked(e stateEvent) {
	s.events = append(s.events, e)
}

// deliver hands the queued events to the hooks, in order, without holding
// s.mu while a hook runs (a hook may read the store, or change its state:
// that event is queued and delivered after the current one). One goroutine
// delivers at a time; a caller that finds another delivering leaves its
// events to it, so a change can be reported an instant after the call that
// made it returns.
func (s *Store) deliver() {
	s.mu.Lock()
	if s.delivering {
		s.mu.Unlock()
		return
	}
	s.delivering = true
	for len(s.events) > 0 {
		events := s.events
		s.events = nil
		s.mu.Unlock()
		for _, e := range events {
			s.reg.notify(s.name, e)
		}
		s.mu.Lock()
	}
	s.delivering = false
	s.mu.Unlock()
}
