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
// cannot both win. The writes are made in the order of the fields.
type Change struct {
	HSet    map[string]any // record fields
	Set     []SetKey
	Del     []string
	XAdd    []StreamEntry
	Expire  int64 // seconds, on the record
	Publish []Message
	SRem    []SetMember
	Push    []ListPush // LPUSH, e.g. notifications to the outbox
	// ReadBack asks Apply to return the record as it is after the change.
	ReadBack bool
}

// SetMember removes Member from the set Key.
type SetMember struct {
	Key    string
	Member string
}

// ListPush pushes Value onto the head of the list Key.
type ListPush struct {
	Key   string
	Value string
}

// SetKey sets Key to Value, with a TTL in milliseconds when TTLMS > 0.
type SetKey struct {
	Key   string
	Value string
	TTLMS int64
}

// StreamEntry appends JSON to Stream, trimmed to about MaxLen.
type StreamEntry struct {
	Stream string
	MaxLen int64
	JSON   string
}

// Message is published on Channel.
type Message struct {
	Channel string
	Payload string
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

// changeScript takes the change as flat arguments, one operation after
// another (a letter, then its operands), rather than as JSON: decoding
// JSON in Lua made this script cost Redis three times as much.
var changeScript = redis.NewScript(`
local st = redis.call('HGET', KEYS[1], 'state')
if not st then return {'missing', ''} end
local function answer(status)
  local r = {status, st}
  if ARGV[2] == '1' then
    for _, v in ipairs(redis.call('HGETALL', KEYS[1])) do r[#r+1] = v end
  end
  return r
end
if ARGV[1] == 'unless-canceled' and st == 'canceled' then return answer('skipped') end
if ARGV[1] == 'unless-terminal' and (st == 'canceled' or st == 'succeeded' or st == 'failed') then return answer('skipped') end
local i = 3
while i <= #ARGV do
  local op = ARGV[i]
  if op == 'h' then
    local n = tonumber(ARGV[i+1])
    redis.call('HSET', KEYS[1], unpack(ARGV, i+2, i+1+2*n))
    i = i + 2 + 2*n
  elseif op == 's' then
    if ARGV[i+3] ~= '0' then redis.call('SET', ARGV[i+1], ARGV[i+2], 'PX', ARGV[i+3])
    else redis.call('SET', ARGV[i+1], ARGV[i+2]) end
    i = i + 4
  elseif op == 'd' then redis.call('DEL', ARGV[i+1]); i = i + 2
  elseif op == 'x' then redis.call('XADD', ARGV[i+1], 'MAXLEN', '~', ARGV[i+2], '*', 'json', ARGV[i+3]); i = i + 4
  elseif op == 'e' then redis.call('EXPIRE', KEYS[1], ARGV[i+1]); i = i + 2
  elseif op == 'p' then redis.call('PUBLISH', ARGV[i+1], ARGV[i+2]); i = i + 3
  elseif op == 'r' then redis.call('SREM', ARGV[i+1], ARGV[i+2]); i = i + 3
  elseif op == 'l' then redis.call('LPUSH', ARGV[i+1], ARGV[i+2]); i = i + 3
  else return redis.error_reply('storekeeper change: unknown operation ' .. tostring(op)) end
end
return answer('applied')
`)

// args flattens the change for changeScript.
func (c Change) args(guard Guard) []any {
	readBack := "0"
	if c.ReadBack {
		readBack = "1"
	}
	a := []any{string(guard), readBack}
	if len(c.HSet) > 0 {
		a = append(a, "h", len(c.HSet))
		for k, v := range c.HSet {
			a = append(a, k, v)
		}
	}
	for _, s := range c.Set {
		a = append(a, "s", s.Key, s.Value, s.TTLMS)
	}
	for _, k := range c.Del {
		a = append(a, "d", k)
	}
	for _, x := range c.XAdd {
		a = append(a, "x", x.Stream, x.MaxLen, x.JSON)
	}
	if c.Expire > 0 {
		a = append(a, "e", c.Expire)
	}
	for _, p := range c.Publish {
		a = append(a, "p", p.Channel, p.Payload)
	}
	for _, m := range c.SRem {
		a = append(a, "r", m.Key, m.Member)
	}
	for _, l := range c.Push {
		a = append(a, "l", l.Key, l.Value)
	}
	return a
}

// Applied is what Apply did: whether the change applied and the state the
// record had before; with Change.ReadBack, the record as it is after
// (changed or not), so that no step needs a second round trip to read it.
type Applied struct {
	OK     bool
	Prior  State
	Record Record
}

// Apply makes the change to job id's record and related keys if guard
// allows the record's current state, in one round trip; ErrUnknownJob
// when there is no record.
func Apply(ctx context.Context, rdb redis.Scripter, id string, guard Guard, c Change) (Applied, error) {
	out, err := changeScript.Run(ctx, rdb, []string{RecordKey(id)}, c.args(guard)...).StringSlice()
	if err != nil {
		return Applied{}, unavailable(err)
	}
	if out[0] == "missing" {
		return Applied{}, fmt.Errorf("%w %q", ErrUnknownJob, id)
	}
	res := Applied{OK: out[0] == "applied", Prior: State(out[1])}
	if c.ReadBack {
		h := make(map[string]string, (len(out)-2)/2)
		for i := 2; i+1 < len(out); i += 2 {
			h[out[i]] = out[i+1]
		}
		res.Record, err = RecordFromHash(h)
	}
	return res, err
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
