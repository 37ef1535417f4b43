package jobs

import (
	"fmt"
	"regexp"
)

// Kind names a job's kind. The strings are stable: they are asynq task
// types, Redis record fields and API values.
type Kind string

const (
	KindCompact Kind = "compact"
	KindBackup  Kind = "backup"
	KindVerify  Kind = "verify"
	KindRestore Kind = "restore"
	// KindDrill restores a store's backup into a scratch directory and
	// proves it usable, never touching the live store.
	KindDrill Kind = "drill"
	// KindAdopt creates a store on a node that never held it, from a
	// backup on a backup target: the disaster recovery of a store whose
	// machine is gone. It runs on the node it names (Params.Node), not
	// on the store's owner.
	KindAdopt  Kind = "adopt"
	KindNotify Kind = "notify"
)

// Kinds lists every kind, maintenance kinds first.
var Kinds = []Kind{KindCompact, KindBackup, KindVerify, KindRestore, KindDrill, KindAdopt, KindNotify}

// Valid reports whether k is a known kind.
func (k Kind) Valid() bool {
	for _, v := range Kinds {
		if k == v {
			return true
		}
	}
	return false
}

// Maintenance reports whether jobs of this kind run on a store (and so
// serialise on it); notify does not.
func (k Kind) Maintenance() bool { return k.Valid() && k != KindNotify }

// Exclusive reports whether jobs of this kind replace a store's data
// (restore, adopt): one of them per store may be in flight, and one
// that has started is never canceled.
func (k Kind) Exclusive() bool { return k == KindRestore || k == KindAdopt }

// DefaultMaxRetry is each kind's retry budget (docs/design.md's job table).
var DefaultMaxRetry = map[Kind]int{
	KindCompact: 3,
	KindBackup:  3,
	KindVerify:  1,
	KindRestore: 2,
	KindDrill:   1,
	KindAdopt:   2,
	KindNotify:  8,
}

// Trigger says what started a job.
type Trigger string

const (
	TriggerManual    Trigger = "manual"
	TriggerScheduled Trigger = "scheduled"
	TriggerAuto      Trigger = "auto"
)

// Valid reports whether t is a known trigger.
func (t Trigger) Valid() bool {
	return t == TriggerManual || t == TriggerScheduled || t == TriggerAuto
}

// Actors that are not API token names.
const (
	ActorScheduler = "scheduler"
	ActorSystem    = "system"
)

// StoreNamePattern is the store name rule. It must equal store.NamePattern;
// jobs may not import store (docs/design.md's layout), so cmd/storekeeper's
// tests check the two agree.
const StoreNamePattern = `^[a-z0-9][a-z0-9_-]{0,62}$`

var storeNameRE = regexp.MustCompile(StoreNamePattern)

// ValidateStoreName checks a store name without touching anything.
func ValidateStoreName(name string) error {
	if !storeNameRE.MatchString(name) {
		return fmt.Errorf("%w %q: must match %s", ErrInvalidStore, name, StoreNamePattern)
	}
	return nil
}
