package jobs

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Change is a set of writes that belong to one step of a job's life: its
// record fields, stream entries, lock releases, the owner's stats. Apply
// makes them in one round trip and atomically, and only if the record is
// in a state that allows the step, so a cancel and a finishing handler
// cannot both win.
type Change struct {
	HSet    map[string]any `json:"hset,omitempty"`
	Set     []SetKey       `json:"set,omitempty"`
	Del     []string       `json:"del,omitempty"`
	XAdd    []StreamEntry  `json:"xadd,omitempty"`
	Expire  int64          `json:"expire,omitempty"` // seconds, on the record
	Publish []Message      `json:"publish,omitempty"`
	SRem    []SetMember    `json:"srem,omitempty"`
}

// SetMember removes Member from the set Key.
type SetMember struct {
	Key    string `json:"k"`
	Member string `json:"m"`
}

// SetKey sets Key to Value, with a TTL in milliseconds when TTLMS > 0.
type SetKey struct {
	Key   string `json:"k"`
	Value string `json:"v"`
	TTLMS int64  `json:"ttl"`
}

// StreamEntry appends JSON to Stream, trimmed to about MaxLen.
type StreamEntry struct {
	Stream string `json:"s"`
	MaxLen int64  `json:"n"`
	JSON   string `json:"j"`
}

// Message is published on Channel.
type Message struct {
	Channel string `json:"c"`
	Payload string `json:"p"`
}

// AddEntry appends v's JSON to stream.
func (c *Change) AddEntry(stream string, maxLen int64, v any) {
	b, _ := json.Marshal(v)
	c.XAdd = append(c.XAdd, StreamEntry{Stream: stream, MaxLen: maxLen, JSON: string(b)})
}

// Guard says in which record states a Change applies.
type Guard string

const (
	// UnlessCanceled: any state but canceled (a step of a running job).
	UnlessCanceled Guard = "unless-canceled"
	// UnlessTerminal: only while the job is in flight (a cancel).
	UnlessTerminal Guard = "unless-terminal"
)

var changeScript = redis.NewScript(`
local st = redis.call('HGET', KEYS[1], 'state')
if not st then return {'missing', ''} end
if ARGV[2] == 'unless-canceled' and st == 'canceled' then return {'skipped', st} end
if ARGV[2] == 'unless-terminal' and (st == 'canceled' or st == 'succeeded' or st == 'failed') then return {'skipped', st} end
local c = cjson.decode(ARGV[1])
if c.hset then
  local a = {}
  for k, v in pairs(c.hset) do a[#a+1] = k; a[#a+1] = tostring(v) end
  if #a > 0 then redis.call('HSET', KEYS[1], unpack(a)) end
end
if c.set then for _, s in ipairs(c.set) do
  if s.ttl > 0 then redis.call('SET', s.k, s.v, 'PX', s.ttl) else redis.call('SET', s.k, s.v) end
end end
if c.del then for _, k in ipairs(c.del) do redis.call('DEL', k) end end
if c.xadd then for _, x in ipairs(c.xadd) do redis.call('XADD', x.s, 'MAXLEN', '~', x.n, '*', 'json', x.j) end end
if c.expire and c.expire > 0 then redis.call('EXPIRE', KEYS[1], c.expire) end
if c.publish then for _, p in ipairs(c.publish) do redis.call('PUBLISH', p.c, p.p) end end
if c.srem then for _, m in ipairs(c.srem) do redis.call('SREM', m.k, m.m) end end
return {'applied', st}
`)

// Apply makes the change to job id's record and related keys if guard
// allows the record's current state. It reports whether it applied and
// the state the record had; ErrUnknownJob when there is no record.
func Apply(ctx context.Context, rdb redis.Scripter, id string, guard Guard, c Change) (applied bool, prior State, err error) {
	b, err := json.Marshal(c)
	if err != nil {
		return false, "", err
	}
	out, err := changeScript.Run(ctx, rdb, []string{RecordKey(id)}, string(b), string(guard)).StringSlice()
	if err != nil {
		return false, "", unavailable(err)
	}
	if out[0] == "missing" {
		return false, "", fmt.Errorf("%w %q", ErrUnknownJob, id)
	}
	return out[0] == "applied", State(out[1]), nil
}

// InFlightKey is the set of job ids of a queue that are not finished yet:
// what each worker's reconciler checks against asynq.
func InFlightKey(queue string) string { return "storekeeper:inflight:" + queue }

// Finish adds what every terminal state does: release the job's locks,
// leave the in-flight set, and expire the record after retention.
func (c *Change) Finish(r Record, retention time.Duration) {
	c.Del = append(c.Del, ReleaseLocks(r)...)
	c.SRem = append(c.SRem, SetMember{Key: InFlightKey(r.Queue), Member: r.ID})
	c.Expire = int64(retention / time.Second)
}

// ReleaseLocks are the lock keys a job holds while in flight.
func ReleaseLocks(r Record) []string {
	keys := []string{LockKey(Payload{Kind: r.Kind, Store: r.Store, Params: r.Params})}
	if r.Kind == KindRestore {
		keys = append(keys, RestoreLockKey(r.Store))
	}
	return keys
}
