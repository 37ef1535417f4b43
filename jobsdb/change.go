package jobsdb

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"storekeeper/internal/keyspace"
	"storekeeper/jobs"
)

// Applied is what Apply did. OK means the change is in effect: applied by
// this run, or (Replayed) by an earlier run of the very same call whose
// answer was lost. Otherwise the guard refused it (Prior is the state it
// found) or, Fenced, the store's lease is no longer the one it expected.
// With Change.ReadBack, Record is the record as it is after the change
// (changed or not), so that no step needs a second round trip to read it;
// with Change.ReadFields, Fields holds those fields alone.
// With Change.Ack, Acked means the asynq task is gone from its queue:
// acknowledged by this change (or an earlier send of it), so asynq's own
// done has nothing left to do.
type Applied struct {
	OK       bool
	Replayed bool
	Fenced   bool
	Acked    bool
	Prior    jobs.State
	Record   jobs.Record
	Fields   map[string]string
}

// ErrNoOp: a Change without an Op cannot be told apart from its replays.
var ErrNoOp = errors.New("change has no op")

// Apply makes the change to job id's record and related keys if guard
// allows the record's current state, in one round trip; ErrUnknownJob
// when there is no record. It is safe to send any number of times.
func Apply(ctx context.Context, rdb redis.Scripter, id string, guard keyspace.Guard, c keyspace.Change) (Applied, error) {
	if c.Op == "" {
		return Applied{}, ErrNoOp
	}
	keys := []string{keyspace.RecordKey(id), keyspace.RecordKey(id)}
	if c.Lease != nil {
		keys[1] = c.Lease.Key
	}
	out, err := keyspace.ChangeScript.Run(ctx, rdb, keys, c.Args(guard)...).StringSlice()
	if err != nil {
		return Applied{}, unavailable(err)
	}
	if out[0] == "missing" {
		return Applied{}, fmt.Errorf("%w %q", jobs.ErrUnknownJob, id)
	}
	res := Applied{OK: out[0] == "applied" || out[0] == "replayed", Replayed: out[0] == "replayed",
		Fenced: out[0] == "fenced", Prior: jobs.State(out[1]), Acked: out[2] == "1"}
	switch {
	case c.ReadBack:
		res.Record, err = jobs.RecordFromHash(pairs(out[3:]))
	case len(c.ReadFields) > 0:
		if len(out) != 3+len(c.ReadFields) {
			return res, fmt.Errorf("job %s: read back %d values for %d fields", id, len(out)-3, len(c.ReadFields))
		}
		res.Fields = make(map[string]string, len(c.ReadFields))
		for i, f := range c.ReadFields {
			res.Fields[f] = out[3+i]
		}
	}
	return res, err
}

// pairs turns a flat field, value list into a map.
func pairs(flat []string) map[string]string {
	h := make(map[string]string, len(flat)/2)
	for i := 0; i+1 < len(flat); i += 2 {
		h[flat[i]] = flat[i+1]
	}
	return h
}

// Progress appends e (a job.progress event) for the attempt run of job id,
// as its report number seq (increasing from 1 within the run). It reports
// whether the event is in the stream (appended now or by an earlier send).
func Progress(ctx context.Context, rdb redis.Scripter, id, run string, seq int64, maxLen int64, e jobs.Event) (bool, error) {
	b, _ := json.Marshal(e)
	n, err := keyspace.ProgressScript.Run(ctx, rdb, []string{keyspace.RecordKey(id), keyspace.EventsStream}, run, seq, maxLen, string(b)).Int()
	if err != nil {
		return false, unavailable(err)
	}
	return n != 0, nil
}

// LoadScripts loads the job path's scripts into Redis's script cache, so
// that their first runs are one EVALSHA each rather than an EVALSHA that
// fails with NOSCRIPT and an EVAL. (go-redis falls back to EVAL only on
// NOSCRIPT: a first EVALSHA whose answer was lost is not replayed as an
// EVAL.) A Redis that restarts empty is refilled by that fallback.
func LoadScripts(ctx context.Context, rdb redis.Scripter) error {
	for _, s := range keyspace.Scripts {
		if err := s.Load(ctx, rdb).Err(); err != nil {
			return unavailable(err)
		}
	}
	return nil
}
