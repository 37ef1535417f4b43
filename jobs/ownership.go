package jobs

import (
	"encoding/json"
	"fmt"
	"regexp"
)

// Ownership keys. A worker node owns each store it opens; it writes the
// lease (SET NX with a TTL, renewed by its heartbeat) and records itself as
// the store's owner in StoresKey, where the store stays after the lease
// expires: it is then listed with its node down, and jobs for it queue on
// that node's queue until the node returns.
const StoresKey = "storekeeper:stores" // hash: store -> owning node

// LeaseKey is the owner lease of a store.
func LeaseKey(store string) string { return "storekeeper:lease:" + store }

// Lease is the value of a store's owner lease.
type Lease struct {
	Node     string `json:"node"`
	Host     string `json:"host"`
	Instance string `json:"instance"` // one per process start
}

// Encode returns the lease's value.
func (l Lease) Encode() string { b, _ := json.Marshal(l); return string(b) }

// DecodeLease parses a lease value.
func DecodeLease(s string) (Lease, error) {
	var l Lease
	if err := json.Unmarshal([]byte(s), &l); err != nil {
		return l, fmt.Errorf("bad lease %q: %w", s, err)
	}
	return l, nil
}

// NodeNamePattern is what a node name (default: the host name) must match.
const NodeNamePattern = `^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`

var nodeNameRE = regexp.MustCompile(NodeNamePattern)

// ValidateNodeName checks a node name.
func ValidateNodeName(name string) error {
	if !nodeNameRE.MatchString(name) {
		return fmt.Errorf("invalid node name %q: must match %s", name, NodeNamePattern)
	}
	return nil
}

// NodeQueue is the asynq queue a node consumes.
func NodeQueue(node string) string { return "node." + node }

// NotifyQueue is the queue every node consumes for notify jobs.
const NotifyQueue = "notify"

// StatsKey holds a store's latest stats and backups as JSON, published by
// its owner's heartbeat and before any job on it is marked finished: the
// API never answers from older state.
func StatsKey(store string) string { return "storekeeper:storestats:" + store }
