package store

import "encoding/json"

// State is a store's lifecycle state. Its JSON form and String are the
// name; the numbers are not stable across versions.
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
	// StateUnavailable: the store could not be opened for a reason that
	// says nothing about its files: an I/O error, a full disk, a
	// permission, too many open files. It has no database; handles return
	// ErrUnavailable naming the cause, and the registry retries the open
	// with backoff until it succeeds (or finds damage). Never a reason for
	// a restore: the files may be intact.
	StateUnavailable
	// StateClosed: the store was closed; handles return ErrClosed.
	StateClosed
)

// stateNew is a store's state before its first open ends. The store is
// not listed yet, so no caller ever sees it.
const stateNew State = -1

// stateNames in the order of the constants; a State is published by name.
var stateNames = [...]string{"open", "restoring", "corrupt", "unavailable", "closed"}

func (s State) String() string {
	if s >= 0 && int(s) < len(stateNames) {
		return stateNames[s]
	}
	return "unknown"
}

// MarshalJSON writes the state as its name.
func (s State) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }
