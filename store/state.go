package store

import "encoding/json"

// State is a store's lifecycle state.
type State int

const (
	// StateOpen: the store serves reads and writes.
	StateOpen State = iota
	// StateRestoring: the store is fenced while a restore replaces it;
	// handles return ErrUnavailable.
	StateRestoring
	// StateCorrupt: damage was found. A store found corrupt while open keeps
	// serving (an automatic restore will fence it); one that could not be
	// opened safely has no database and handles return ErrUnavailable.
	StateCorrupt
	// StateClosed: the store was closed; handles return ErrClosed.
	StateClosed
)

var stateNames = [...]string{"open", "restoring", "corrupt", "closed"}

func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return "unknown"
}

// MarshalJSON writes the state as its name.
func (s State) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }
