package jobs

import (
	"encoding/json"
	"fmt"
	"regexp"
)

// Lease is the value of a store's owner lease.
type Lease struct {
	Node     string `json:"node"`
	Host     string `json:"host"`
	Instance string `json:"instance"` // one per process start
	Token    int64  `json:"token"`    // the claim's fencing token
}

// Encode returns the lease's value.
func (l Lease) Encode() string { b, _ := json.Marshal(l); return string(b) }

// LeaseState is what a renewal found.
type LeaseState int

const (
	LeaseHeld    LeaseState = iota // still ours: extended
	LeaseExpired                   // gone: free to claim again
	LeaseTaken                     // another claim holds it
)

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
