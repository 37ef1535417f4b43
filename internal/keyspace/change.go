package keyspace

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"storekeeper/jobs"
)

// Change is a set of writes that belong to one step of a job's life: its
// record fields, stream entries, lock releases, the owner's stats. Apply
// makes them in one round trip and atomically, and only if the record is
// in the state its Guard expects, so a cancel and a finishing handler
// cannot both win. The writes are made in the order of the fields.
//
// A Change must be safe to run any number of times: go-redis sends a
// command again when its answer is late (Redis stalled, not down), and a
// stalled Redis later runs the first copy and every retry. So every Change
// has an Op, unique to the call that makes it; the record remembers the Op
// of the last change applied to it, and a run that finds its own Op there
// is a replay: it writes nothing and reports Replayed. A replay that
// arrives after some other change has been applied finds the record in a
// state its guard refuses (a finished attempt's run, a terminal state).
type Change struct {
	Op      string         // unique to this call: NewOp(step)
	HSet    map[string]any // record fields
	Set     []SetKey
	Del     []string
	XAdd    []StreamEntry
	Expire  int64 // seconds, on the record
	Publish []Message
	SRem    []SetMember
	Push    []ListPush // LPUSH, e.g. notifications to the outbox
	// IfWasActive are stream entries appended only when the record was
	// active before the change: a start that takes over an attempt whose
	// worker vanished (asynq's recoverer moved its task without running
	// any middleware) first ends that attempt with job.retrying, so each
	// job.started is followed by exactly one end.
	IfWasActive []StreamEntry
	// Lease, when set, fences the change: it applies only while the
	// store's lease still holds exactly this value (its fencing token
	// included), and Apply reports Fenced otherwise.
	Lease *LeaseCheck
	// Ack, when set, acknowledges the attempt's asynq task with the
	// change, as asynq's done would (AsynqAck). It is done last, and only
	// by a change that applies.
	Ack *AsynqAck
	// ReadBack asks Apply to return the record as it is after the change.
	ReadBack bool
	// ReadFields, instead, asks for only these of its fields (names
	// without ','; a missing one reads ""): what the caller cannot know.
	// A job's start knows the rest (its payload), so it reads five
	// fields, not the whole record.
	ReadFields []string
}

// Fence is the fencing token the change is accepted under: its lease
// check's, 0 when it is not fenced.
func (c *Change) Fence() int64 {
	if c.Lease == nil {
		return 0
	}
	return c.Lease.Token
}

// LeaseCheck names the lease value a fenced change expects.
type LeaseCheck struct {
	Key   string
	Value string
	Token int64 // the fencing token in Value, which the change's events carry (jobs.Event.Fence)
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
	// Indexes get a copy of the entry under the same id (the history's
	// filtered views: NewHistoryEntry); Stream's oldest entry bounds them.
	Indexes []string
}

// Message is published on Channel.
type Message struct {
	Channel string
	Payload string
}

// NewEntry returns the stream entry appending v's JSON to stream.
func NewEntry(stream string, maxLen int64, v any) StreamEntry {
	b, _ := json.Marshal(v)
	return StreamEntry{Stream: stream, MaxLen: maxLen, JSON: string(b)}
}

// AddEntry appends v's JSON to stream.
func (c *Change) AddEntry(stream string, maxLen int64, v any) {
	c.XAdd = append(c.XAdd, NewEntry(stream, maxLen, v))
}

// EventEntry returns the stream entry appending e to EventsStream.
func EventEntry(maxLen int64, e jobs.Event) StreamEntry { return NewEntry(EventsStream, maxLen, e) }

// AddEvent appends e to EventsStream.
func (c *Change) AddEvent(maxLen int64, e jobs.Event) { c.XAdd = append(c.XAdd, EventEntry(maxLen, e)) }

// SetStoreStatus publishes store's status (StatsKey; js: a StoreStatus as
// JSON) with the change, as a job's end does so that the API never
// answers from older state than the job's.
func (c *Change) SetStoreStatus(store, js string) {
	c.Set = append(c.Set, SetKey{Key: StatsKey(store), Value: js})
}

// SetBackupFiles publishes store's backups' file lists (BackupFilesKey;
// js: jobs.BackupFileLists as JSON) with the change, as a job's end does
// when the backups changed.
func (c *Change) SetBackupFiles(store, js string) {
	c.Set = append(c.Set, SetKey{Key: BackupFilesKey(store), Value: js})
}

// ClearIncident deletes store's incident (IncidentKey) with the change,
// as a restore's success does: a new corruption is a new incident.
func (c *Change) ClearIncident(store string) { c.Del = append(c.Del, IncidentKey(store)) }

// NewOp returns a fresh operation id for a Change: step names what the
// change does ("start", "end", "cancel", …), which tests and logs read.
func NewOp(step string) string { return step + ":" + randomHex(8) }

// NewRun returns a fresh run token: one per attempt a worker starts.
func NewRun() string { return randomHex(8) }

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Guard says in which record states a Change applies. Every guard also
// names the run or the state it expects, so a change sent again after
// later changes were made can never undo them.
type Guard struct {
	mode    string
	run     string
	attempt int
	state   jobs.State
}

// StartGuard admits the start of attempt by run: the record is not
// terminal, run has not started before, and the attempt is not older than
// the record's (a newer one than an active record's: that record's
// attempt was lost with its worker).
func StartGuard(run string, attempt int) Guard {
	return Guard{mode: "start", run: run, attempt: attempt}
}

// RunGuard admits a change by the attempt that run started, while it is
// still the active one (its end, its progress).
func RunGuard(run string) Guard { return Guard{mode: "run", run: run} }

// LiveGuard admits a change to any job not in a terminal state (a cancel).
func LiveGuard() Guard { return Guard{mode: "live"} }

// ObservedGuard admits a change only while the record is exactly as the
// caller observed it: state, run and attempts (the reconciler settling
// what it examined; an abandon of a job that never started).
func ObservedGuard(r jobs.Record) Guard {
	return Guard{mode: "observed", state: r.State, run: r.Run, attempt: r.Attempts}
}

// ActiveGuard admits a change to a record that is active, whatever its run
// (a restarting node requeueing the attempts its dead process left).
func ActiveGuard() Guard { return Guard{mode: "active"} }

// EndedGuard admits a change to a record in a terminal state: a report
// that only appends events (what an attempt did on its store after the
// job was settled without it). It must not change the record's state: a
// terminal state is final.
func EndedGuard() Guard { return Guard{mode: "ended"} }

// ChangeScript takes the change as flat arguments, one operation after
// another (a letter, then its operands), rather than as JSON: decoding
// JSON in Lua made this script cost Redis three times as much.
//
// KEYS[1] the record, KEYS[2] the lease to check (or the record again).
// ARGV: op, guard mode, read back ('0' nothing, '1' the whole record,
// else the names of the fields to read, joined by ','), run, attempt,
// state, lease value ("" = no check), the asynq task to acknowledge
// ("" = none), then the operations; the first is always 'h', the
// record's fields with the op among them (Args), so a change that
// applies marks the record with its op before it writes anything else. The answer is the status, the
// record's state before, whether the task is acknowledged ('1': gone from
// asynq, by this change or an earlier send of it) and, with read back,
// the record's fields: field, value pairs for the whole record, the
// values alone, in order, for named fields.
var ChangeScript = redis.NewScript(historyAddLua + asynqAckLua + `
local cur = redis.call('HMGET', KEYS[1], 'state', 'op', 'run', 'attempts')
local st = cur[1]
if not st then return {'missing', ''} end
local acked = '0'
local function answer(status)
  local r = {status, st, acked}
  if ARGV[3] == '1' then
    for _, v in ipairs(redis.call('HGETALL', KEYS[1])) do r[#r+1] = v end
  elseif ARGV[3] ~= '0' then
    local names = {}
    for f in string.gmatch(ARGV[3], '[^,]+') do names[#names+1] = f end
    local vs = redis.call('HMGET', KEYS[1], unpack(names))
    for i = 1, #names do r[#r+1] = vs[i] or '' end
  end
  return r
end
if cur[2] == ARGV[1] then
  if ARGV[8] ~= '' and redis.call('EXISTS', ARGV[8]) == 0 then acked = '1' end
  return answer('replayed')
end
local run, att = cur[3] or '', tonumber(cur[4] or '0') or 0
local terminal = st == 'canceled' or st == 'succeeded' or st == 'failed'
local mode, ok = ARGV[2], false
if mode == 'start' then
  local a = tonumber(ARGV[5])
  ok = not terminal and run ~= ARGV[4] and ((st ~= 'active' and a >= att) or (st == 'active' and a > att))
elseif mode == 'run' then ok = st == 'active' and run == ARGV[4]
elseif mode == 'live' then ok = not terminal
elseif mode == 'active' then ok = st == 'active'
elseif mode == 'ended' then ok = terminal
elseif mode == 'observed' then ok = st == ARGV[6] and run == ARGV[4] and att == tonumber(ARGV[5])
end
if not ok then return answer('skipped') end
if ARGV[7] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[7] then return answer('fenced') end
local was = st
local i = 9
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
  elseif op == 'a' then
    if was == 'active' then redis.call('XADD', ARGV[i+1], 'MAXLEN', '~', ARGV[i+2], '*', 'json', ARGV[i+3]) end
    i = i + 4
  elseif op == 'x' then redis.call('XADD', ARGV[i+1], 'MAXLEN', '~', ARGV[i+2], '*', 'json', ARGV[i+3]); i = i + 4
  elseif op == 'y' then
    local n = tonumber(ARGV[i+5])
    history_add(ARGV[i+1], ARGV[i+2], ARGV[i+3], ARGV[i+4], {unpack(ARGV, i+6, i+5+n)})
    i = i + 6 + n
  elseif op == 'e' then redis.call('EXPIRE', KEYS[1], ARGV[i+1]); i = i + 2
  elseif op == 'p' then redis.call('PUBLISH', ARGV[i+1], ARGV[i+2]); i = i + 3
  elseif op == 'r' then redis.call('SREM', ARGV[i+1], ARGV[i+2]); i = i + 3
  elseif op == 'l' then redis.call('LPUSH', ARGV[i+1], ARGV[i+2]); i = i + 3
  elseif op == 'q' then
    if asynqAck(ARGV[i+1], ARGV[i+2], ARGV[8], ARGV[i+3], ARGV[i+4], ARGV[i+5], ARGV[i+6]) then acked = '1' end
    i = i + 7
  else return redis.error_reply('storekeeper change: unknown operation ' .. tostring(op)) end
end
return answer('applied')
`)

// Args flattens the change for ChangeScript.
func (c Change) Args(g Guard) []any {
	readBack := "0"
	switch {
	case c.ReadBack:
		readBack = "1"
	case len(c.ReadFields) > 0:
		readBack = strings.Join(c.ReadFields, ",")
	}
	lease := ""
	if c.Lease != nil {
		lease = c.Lease.Value
	}
	ack := ""
	if c.Ack != nil {
		ack = c.Ack.TaskKey()
	}
	n := 8 + 4 + 7 + 2*len(c.HSet) + 4*len(c.Set) + 2*len(c.Del) + 4*len(c.IfWasActive) + 2 +
		3*(len(c.Publish)+len(c.SRem)+len(c.Push))
	for _, x := range c.XAdd {
		n += 6 + len(x.Indexes)
	}
	a := make([]any, 0, n) // the list is built once
	a = append(a, c.Op, g.mode, readBack, g.run, g.attempt, string(g.state), lease, ack)
	// The record's fields come first, the op (the replay marker) among
	// them: the script writes nothing else before it.
	a = append(a, "h", len(c.HSet)+1, "op", c.Op)
	for k, v := range c.HSet {
		a = append(a, k, v)
	}
	for _, s := range c.Set {
		a = append(a, "s", s.Key, s.Value, s.TTLMS)
	}
	for _, k := range c.Del {
		a = append(a, "d", k)
	}
	for _, x := range c.IfWasActive {
		a = append(a, "a", x.Stream, x.MaxLen, x.JSON)
	}
	for _, x := range c.XAdd {
		if len(x.Indexes) > 0 {
			a = append(a, "y", x.Stream, x.MaxLen, x.JSON, HistoryIndexMeta, len(x.Indexes))
			for _, k := range x.Indexes {
				a = append(a, k)
			}
			continue
		}
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
	if k := c.Ack; k != nil {
		a = append(a, "q", AsynqActiveKey(k.Queue), AsynqLeaseKey(k.Queue), AsynqProcessedKey(k.Queue, k.At),
			AsynqProcessedTotalKey(k.Queue), k.TaskID, k.At.Add(AsynqStatsTTL).Unix())
	}
	return a
}

// ProgressScript appends a job.progress event while the run that reports
// it is the record's active one, once per sequence number: a report sent
// again, or overtaken by a later one, appends nothing.
var ProgressScript = redis.NewScript(`
local cur = redis.call('HMGET', KEYS[1], 'state', 'run', 'pseq')
if cur[1] ~= 'active' or cur[2] ~= ARGV[1] then return 0 end
if (tonumber(cur[3] or '0') or 0) >= tonumber(ARGV[2]) then return 2 end
redis.call('HSET', KEYS[1], 'pseq', ARGV[2])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'json', ARGV[4])
return 1
`)

// InFlightKey is the set of job ids of a queue that are not finished yet:
// what each worker's reconciler checks against asynq.
func InFlightKey(queue string) string { return "storekeeper:inflight:" + queue }

// Finish adds what every terminal state does: release the job's locks,
// leave the in-flight set, and expire the record after retention.
func (c *Change) Finish(r jobs.Record, retention time.Duration) {
	c.Del = append(c.Del, ReleaseLocks(r)...)
	c.SRem = append(c.SRem, SetMember{Key: InFlightKey(r.Queue), Member: r.ID})
	c.Expire = int64(retention / time.Second)
}

// End fills c with the terminal step t of job r: record fields, locks,
// expiry, events and the history entry.
func (c *Change) End(r jobs.Record, t jobs.Terminal, cfg jobs.ClientConfig) {
	cfg = cfg.WithDefaults()
	if c.HSet == nil {
		c.HSet = map[string]any{}
	}
	c.HSet["state"] = string(t.State)
	c.HSet["reason"] = t.Reason
	c.HSet["finished_at"] = jobs.FormatTime(t.At)
	if len(t.Result) > 0 {
		c.HSet["result"] = string(t.Result)
	}
	if t.Error != "" && t.State == jobs.StateFailed {
		errs := append(append([]jobs.AttemptError(nil), r.Errors...), jobs.AttemptError{Attempt: t.Event.Attempt, Error: t.Error, At: t.At})
		b, _ := json.Marshal(errs)
		c.HSet["errors"] = string(b)
	}
	c.Finish(r, cfg.RecordRetention)
	for _, e := range t.Before {
		e.At = t.At
		c.AddEntry(EventsStream, cfg.EventsMaxLen, e)
	}
	ev := t.Event
	ev.Type = map[jobs.State]jobs.EventType{jobs.StateSucceeded: jobs.EventJobSucceeded, jobs.StateFailed: jobs.EventJobFailed, jobs.StateCanceled: jobs.EventJobCanceled}[t.State]
	ev.JobID, ev.Kind, ev.Store, ev.Trigger = r.ID, r.Kind, r.Store, r.Trigger
	if ev.Actor == "" {
		ev.Actor = r.Actor
	}
	if ev.Node == "" {
		ev.Node = r.Node
	}
	if ev.MaxRetry == 0 {
		ev.MaxRetry = r.MaxRetry
	}
	if ev.Error == "" && t.State != jobs.StateSucceeded {
		ev.Error = t.Error
	}
	if len(t.Result) > 0 {
		ev.Result = t.Result
	}
	ev.At = t.At
	c.AddEntry(EventsStream, cfg.EventsMaxLen, ev)
	h := t.History
	h.JobID, h.Kind, h.Store, h.Trigger, h.Actor = r.ID, r.Kind, r.Store, r.Trigger, r.Actor
	if h.Status == "" {
		h.Status = map[jobs.State]jobs.HistoryStatus{jobs.StateFailed: jobs.StatusFailed, jobs.StateCanceled: jobs.StatusCanceled}[t.State]
	}
	if h.Reason == "" {
		h.Reason = t.Reason
	}
	if h.Error == "" && t.State == jobs.StateFailed {
		h.Error = t.Error
	}
	if h.Node == "" {
		h.Node = r.Node
	}
	if h.Attempts == 0 {
		h.Attempts = r.Attempts
	}
	if h.DurationMS == 0 {
		h.DurationMS = durationMS(r.StartedAt, t.At)
	}
	h.At = t.At
	c.XAdd = append(c.XAdd, NewHistoryEntry(cfg.HistoryMaxLen, h))
}

// ReleaseLocks are the lock keys a job holds while in flight.
func ReleaseLocks(r jobs.Record) []string {
	keys := []string{LockKey(jobs.Payload{Kind: r.Kind, Store: r.Store, Params: r.Params})}
	if r.Kind.Exclusive() {
		keys = append(keys, RestoreLockKey(r.Store))
	}
	return keys
}

// Scripts are the Lua scripts of the job path, loaded by LoadScripts.
var Scripts = []*redis.Script{ChangeScript, ProgressScript, EnqueueScript, EnqueueBatchScript, EnqueueNotifyScript, AnnounceScript,
	ClaimScript, AdoptScript, AbandonAdoptScript, RenewScript, PublishStatsScript, HeartbeatScript, NodeUpScript, NodeDownScript}
