package chaos

import (
	"strings"
	"testing"

	"storekeeper/jobs"
)

// The fencing checker fails on each kind of stale effect it exists to
// catch, and passes a log in which tokens only grow.
func TestFencingChecker(t *testing.T) {
	ev := func(id string, typ jobs.EventType, store string, fence int64) jobs.Event {
		return jobs.Event{ID: id, Type: typ, JobID: "j" + id, Store: store, Fence: fence}
	}
	good := []jobs.Event{
		ev("100-0", jobs.EventJobStarted, "a", 1),
		ev("101-0", jobs.EventJobStarted, "b", 7),
		ev("102-0", jobs.EventJobRetrying, "a", 0), // a lost lease's retry is not fenced
		ev("103-0", jobs.EventJobSucceeded, "a", 2),
		ev("104-0", jobs.EventJobCanceled, "b", 0),
	}
	for _, c := range []struct {
		name   string
		events []jobs.Event
		steals []steal
		want   string // "" passes
	}{
		{"tokens only grow", good, nil, ""},
		{"a token goes down", append(good, ev("105-0", jobs.EventJobSucceeded, "a", 1)), nil, "after token 2"},
		{"started without a token", append(good, ev("105-0", jobs.EventJobStarted, "b", 0)), nil, "carries no fencing token"},
		{"accepted after a steal", good, []steal{{Store: "a", Token: 3, AtMS: 100}}, "after the harness claimed token 3"},
		{"all before the steal", good, []steal{{Store: "a", Token: 3, AtMS: 103}}, ""},
	} {
		k := &checker{events: c.events}
		fl := newFenceLog()
		for _, s := range c.steals {
			fl.stole(s)
		}
		iv := k.fencing(fl)
		got := strings.Join(iv.Violations, "; ")
		if (c.want == "") != (got == "") || !strings.Contains(got, c.want) {
			t.Errorf("%s: violations %q, want %q", c.name, got, c.want)
		}
	}
}
