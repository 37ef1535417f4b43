package chaos

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"storekeeper/jobs"
)

// The point-in-time invariant: once the faults stopped and the cluster
// converged, every store is restored, through the API as an operator
// would, to the moment just before the run's last fault. The nodes' W
// ledger lines (chaosnode's markShipped: Store.WaitShipped returned) say
// which writes were acknowledged and shipped by then; after the nodes
// stop, chaosnode verify --pitr wants every one of them present and no
// write begun after the moment and acknowledged before the restore was
// asked for (see its pitrReport).

// pitrRun is what restoreToMoment did.
type pitrRun struct {
	at        time.Time
	requested map[string]time.Time // store → when its restore was asked for
	jobs      map[string]string    // store → restore job id, those that succeeded
	iv        *invariant
}

// restoreToMoment restores every store to at and waits up to timeout for
// the restores.
func (k *checker) restoreToMoment(at time.Time, timeout time.Duration) *pitrRun {
	p := &pitrRun{at: at, requested: map[string]time.Time{}, jobs: map[string]string{},
		iv: &invariant{Name: "a restore to the moment before the last fault holds exactly the writes acknowledged and shipped by then"}}
	ids := map[string]string{}
	for _, n := range k.c.nodes {
		for _, name := range n.stores {
			p.requested[name] = time.Now()
			id, status := k.l.enqueue(k.ctx, jobs.KindRestore, name, map[string]any{"at": at.UTC().Format(time.RFC3339Nano)})
			if id == "" {
				p.iv.failf("%s: restore to %s not accepted: %d", name, at.UTC().Format(time.RFC3339Nano), status)
				continue
			}
			ids[name] = id
		}
	}
	deadline := time.Now().Add(timeout)
	for _, name := range sortedKeys(ids) {
		id := ids[name]
		r, err := k.awaitJob(id, deadline)
		switch {
		case err != nil:
			p.iv.failf("%s: %v", name, err)
		case r.State != jobs.StateSucceeded:
			p.iv.failf("%s: restore to a moment %s %s: %+v", name, id, r.State, r.Errors)
		default:
			p.jobs[name] = id
		}
	}
	return p
}

// file writes the --pitr file of chaosnode verify: one line per store
// restored to the moment and not restored again afterwards (an automatic
// restore after a late corruption would have replaced what is checked:
// such a store is named in the note, not checked).
func (p *pitrRun) file(k *checker, path string) error {
	var lines, again []string
	for name, id := range p.jobs {
		var ours time.Time
		for _, h := range k.history[id] {
			ours = h.At
		}
		later := false
		for jid, hs := range k.history {
			for _, h := range hs {
				if jid != id && h.Store == name && h.Kind == jobs.KindRestore && h.Status == jobs.StatusRestored && h.At.After(ours) {
					later = true
				}
			}
		}
		if later {
			again = append(again, name)
			continue
		}
		lines = append(lines, fmt.Sprintf("%s %d %d", name, p.at.UnixNano(), p.requested[name].UnixNano()))
	}
	sort.Strings(lines)
	sort.Strings(again)
	if len(again) > 0 {
		p.iv.Note = "restored again afterwards, not checked: " + strings.Join(again, ", ") + "; "
	}
	return os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644)
}

// pitrStore is the part of chaosnode verify's report about a restore to a
// moment.
type pitrStore struct {
	Shipped int      `json:"shipped"`
	Excused int      `json:"excused"`
	Kept    int      `json:"kept"`
	Dropped int      `json:"dropped"`
	Missing []string `json:"missing"`
	After   []string `json:"after"`
}

// add folds one store's verify report into the invariant.
func (p *pitrRun) add(name string, r *pitrStore, sum *pitrStore, checked *int) {
	if r == nil {
		return
	}
	*checked++
	sum.Shipped += r.Shipped
	sum.Excused += r.Excused
	sum.Kept += r.Kept
	sum.Dropped += r.Dropped
	sum.Missing = append(sum.Missing, r.Missing...)
	for _, key := range r.Missing {
		p.iv.failf("%s: %s was acknowledged and shipped before %s but is not in the store restored to that moment", name, key, p.at.UTC().Format(time.RFC3339Nano))
	}
	for _, key := range r.After {
		p.iv.failf("%s: %s was written after %s, before the restore to that moment, and is in the restored store", name, key, p.at.UTC().Format(time.RFC3339Nano))
	}
}
