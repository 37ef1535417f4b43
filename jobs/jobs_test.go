package jobs

import (
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"

	"storekeeper/internal/testsignal"
)

func TestIDsSortByTimeAndAreUnique(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]bool{}
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 1000 {
				id := NewID()
				mu.Lock()
				if seen[id] {
					t.Errorf("duplicate id %s", id)
				}
				seen[id] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	before := time.Now().Add(-time.Millisecond)
	a := NewID()
	// Ids sort by their millisecond, and within one by the order they
	// were made.
	if b := NewID(); a >= b {
		t.Fatalf("ids of one millisecond do not sort by creation: %s >= %s", a, b)
	}
	testsignal.WaitFor(t, "the next millisecond", func() bool { return time.Since(before) > 2*time.Millisecond })
	if b := NewID(); a >= b {
		t.Fatalf("ids do not sort by time: %s >= %s", a, b)
	}
	at, err := IDTime(a)
	if err != nil || at.Before(before.Truncate(time.Millisecond)) || at.After(time.Now()) {
		t.Fatalf("IDTime(%s) = %v, %v", a, at, err)
	}
	for _, bad := range []string{"", "x", "J01ARZ3NDEKTSV4RRFFQ69G5FAV", "j" + "zzzzzzzzzzzzzzzzzzzzzzzzzz"} {
		if _, err := IDTime(bad); err == nil {
			t.Errorf("IDTime(%q) accepted", bad)
		}
	}
}

func validPayload() Payload {
	return Payload{JobID: NewID(), Kind: KindCompact, Store: "orders", Trigger: TriggerManual, Actor: "alice", Params: Params{Force: true}}
}

func TestPayloadRoundTrip(t *testing.T) {
	p := validPayload()
	b, err := p.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(p, got); diff != "" {
		t.Fatalf("round trip (-want +got):\n%s", diff)
	}
}

// A payload that cannot be decoded or is invalid is never retried.
func TestDecodeRejectsBadPayloads(t *testing.T) {
	mutate := func(f func(*Payload)) []byte {
		p := validPayload()
		f(&p)
		b, _ := json.Marshal(p)
		return b
	}
	cases := map[string][]byte{
		"not json":         []byte("{"),
		"unknown field":    []byte(`{"job_id":"j1","kind":"compact","store":"a","trigger":"manual","actor":"x","params":{},"extra":1}`),
		"unknown kind":     mutate(func(p *Payload) { p.Kind = "explode" }),
		"hostile store":    mutate(func(p *Payload) { p.Store = "../etc" }),
		"no job id":        mutate(func(p *Payload) { p.JobID = "" }),
		"bad trigger":      mutate(func(p *Payload) { p.Trigger = "whim" }),
		"no actor":         mutate(func(p *Payload) { p.Actor = "" }),
		"foreign params":   mutate(func(p *Payload) { p.Kind = KindBackup }),
		"notify sinkless":  mutate(func(p *Payload) { p.Kind, p.Params = KindNotify, Params{} }),
		"restore deep":     mutate(func(p *Payload) { p.Kind, p.Params = KindRestore, Params{Deep: true} }),
		"verify backup id": mutate(func(p *Payload) { p.Kind, p.Params = KindVerify, Params{BackupID: "b"} }),
	}
	for name, b := range cases {
		_, err := Decode(b)
		if !errors.Is(err, ErrBadPayload) || !errors.Is(err, asynq.SkipRetry) {
			t.Errorf("%s: Decode = %v, want ErrBadPayload and asynq.SkipRetry", name, err)
		}
	}
}

func TestDedupeKey(t *testing.T) {
	a, b := validPayload(), validPayload()
	b.Actor, b.Trigger = "bob", TriggerScheduled // who asked does not matter
	if a.DedupeKey() != b.DedupeKey() {
		t.Fatal("same request, different keys")
	}
	b.Params.DryRun = true
	if a.DedupeKey() == b.DedupeKey() {
		t.Fatal("different parameters, same key")
	}
}
