package jobs

import (
	"errors"
)

// ErrLayoutMismatch: Redis holds data in a key layout this build does
// not know; the node refuses to start.
var ErrLayoutMismatch = errors.New("redis key layout mismatch")
