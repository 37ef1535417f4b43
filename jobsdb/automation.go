package jobsdb

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"storekeeper/internal/keyspace"
	"storekeeper/jobs"
)

// Pause pauses a store that some node owns.
func Pause(ctx context.Context, rdb redis.Cmdable, store, actor string) error {
	if err := knownStore(ctx, rdb, store); err != nil {
		return err
	}
	b, _ := json.Marshal(jobs.PauseInfo{Actor: actor, At: time.Now().UTC()})
	return unavailableOrNil(rdb.HSet(ctx, keyspace.PausedKey, store, string(b)).Err())
}

// Resume resumes a paused store; resuming one that is not paused is fine.
func Resume(ctx context.Context, rdb redis.Cmdable, store string) error {
	if err := knownStore(ctx, rdb, store); err != nil {
		return err
	}
	return unavailableOrNil(rdb.HDel(ctx, keyspace.PausedKey, store).Err())
}

// Paused returns the paused stores.
func Paused(ctx context.Context, rdb redis.Cmdable) (map[string]jobs.PauseInfo, error) {
	h, err := rdb.HGetAll(ctx, keyspace.PausedKey).Result()
	if err != nil {
		return nil, unavailable(err)
	}
	out := make(map[string]jobs.PauseInfo, len(h))
	for store, v := range h {
		var p jobs.PauseInfo
		_ = json.Unmarshal([]byte(v), &p)
		out[store] = p
	}
	return out, nil
}

// IsPaused reports whether store is paused.
func IsPaused(ctx context.Context, rdb redis.Cmdable, store string) (bool, error) {
	ok, err := rdb.HExists(ctx, keyspace.PausedKey, store).Result()
	return ok, unavailableOrNil(err)
}

func knownStore(ctx context.Context, rdb redis.Cmdable, store string) error {
	if err := jobs.ValidateStoreName(store); err != nil {
		return err
	}
	ok, err := rdb.HExists(ctx, keyspace.StoresKey, store).Result()
	if err != nil {
		return unavailable(err)
	}
	if !ok {
		return fmt.Errorf("%w %q: no node owns it", jobs.ErrUnknownStore, store)
	}
	return nil
}

func unavailableOrNil(err error) error {
	if err == nil {
		return nil
	}
	return unavailable(err)
}

// NodeUp announces a starting node: its heartbeat, and node.up.
func NodeUp(ctx context.Context, rdb redis.Scripter, info jobs.NodeInfo, ttl time.Duration, eventsMaxLen int64) error {
	b, _ := json.Marshal(info)
	ev, _ := json.Marshal(jobs.Event{Type: jobs.EventNodeUp, Node: info.Node, At: info.At})
	err := keyspace.NodeUpScript.Run(ctx, rdb, []string{keyspace.NodeKey(info.Node), keyspace.NodesKey, keyspace.NodeDownKey(info.Node), keyspace.EventsStream},
		string(b), ttl.Milliseconds(), eventsMaxLen, info.Node, string(ev)).Err()
	return unavailableOrNil(err)
}

// NodeBeat renews a node's heartbeat.
func NodeBeat(ctx context.Context, rdb redis.Cmdable, info jobs.NodeInfo, ttl time.Duration) error {
	b, _ := json.Marshal(info)
	return unavailableOrNil(rdb.Set(ctx, keyspace.NodeKey(info.Node), string(b), ttl).Err())
}

// CheckNodes appends node.down for every known node whose heartbeat has
// expired and whose node.down was not emitted yet; it returns those nodes.
// Any number of processes may run it: each node.down is emitted once.
func CheckNodes(ctx context.Context, rdb redis.UniversalClient, eventsMaxLen int64) ([]string, error) {
	down, _, err := CheckNodesCount(ctx, rdb, eventsMaxLen)
	return down, err
}

// CheckNodesCount is CheckNodes, also returning how many nodes are known
// (up or down): a worker checks less often the more nodes share the work.
func CheckNodesCount(ctx context.Context, rdb redis.UniversalClient, eventsMaxLen int64) ([]string, int, error) {
	nodes, err := rdb.SMembers(ctx, keyspace.NodesKey).Result()
	if err != nil {
		return nil, 0, unavailable(err)
	}
	down, err := checkNodes(ctx, rdb, nodes, eventsMaxLen)
	return down, len(nodes), err
}

func checkNodes(ctx context.Context, rdb redis.UniversalClient, nodes []string, eventsMaxLen int64) ([]string, error) {
	if len(nodes) == 0 {
		return nil, nil
	}
	// One read of every node's heartbeat and down mark: only a node with
	// neither (its heartbeat expired, node.down not written yet) needs the
	// script, which decides again atomically. Without this read, every
	// node ran the script for every node on every beat: N² round trips
	// per beat interval across the deployment.
	keys := make([]string, 0, 2*len(nodes))
	for _, n := range nodes {
		keys = append(keys, keyspace.NodeKey(n), keyspace.NodeDownKey(n))
	}
	vals, err := rdb.MGet(ctx, keys...).Result()
	if err != nil {
		return nil, unavailable(err)
	}
	var down []string
	for i, n := range nodes {
		if vals[2*i] != nil || vals[2*i+1] != nil {
			continue // up, or already announced down
		}
		now := time.Now().UTC()
		ev, _ := json.Marshal(jobs.Event{Type: jobs.EventNodeDown, Node: n, At: now})
		emitted, err := keyspace.NodeDownScript.Run(ctx, rdb, []string{keyspace.NodeKey(n), keyspace.NodeDownKey(n), keyspace.EventsStream},
			eventsMaxLen, string(ev), now.Format(time.RFC3339Nano)).Int()
		if err != nil {
			return down, unavailable(err)
		}
		if emitted == 1 {
			down = append(down, n)
		}
	}
	return down, nil
}

// Nodes lists every known node.
func Nodes(ctx context.Context, rdb redis.Cmdable) ([]jobs.NodeStatus, error) {
	names, err := rdb.SMembers(ctx, keyspace.NodesKey).Result()
	if err != nil {
		return nil, unavailable(err)
	}
	out := make([]jobs.NodeStatus, 0, len(names))
	if len(names) == 0 {
		return out, nil
	}
	// One round trip for every node's heartbeat, however many nodes.
	keys := make([]string, len(names))
	for i, n := range names {
		keys[i] = keyspace.NodeKey(n)
	}
	vals, err := rdb.MGet(ctx, keys...).Result()
	if err != nil {
		return nil, unavailable(err)
	}
	for i, n := range names {
		st := jobs.NodeStatus{Node: n}
		if v, ok := vals[i].(string); ok {
			var info jobs.NodeInfo
			if json.Unmarshal([]byte(v), &info) == nil {
				st.Up, st.Info = true, &info
			}
		}
		out = append(out, st)
	}
	return out, nil
}

// Schedules returns every node's schedules.
func Schedules(ctx context.Context, rdb redis.Cmdable) ([]jobs.NodeSchedules, error) {
	h, err := rdb.HGetAll(ctx, keyspace.SchedulesKey).Result()
	if err != nil {
		return nil, unavailable(err)
	}
	var out []jobs.NodeSchedules
	for _, v := range h {
		var s jobs.NodeSchedules
		if json.Unmarshal([]byte(v), &s) == nil {
			out = append(out, s)
		}
	}
	return out, nil
}

// Announce sets key to value, appends ev and queues n (when not nil), all
// at once, unless key is set already. It reports whether the announcement
// is made (now, or by an earlier run of this very call: key holds value)
// and, when another value holds key, that value.
func Announce(ctx context.Context, rdb redis.Scripter, key, value string, eventsMaxLen int64, ev jobs.Event, n *jobs.Notification) (bool, string, error) {
	b, _ := json.Marshal(ev)
	push := ""
	if n != nil {
		push = keyspace.OutboxPush(*n).Value
	}
	out, err := keyspace.AnnounceScript.Run(ctx, rdb, []string{key, keyspace.EventsStream, keyspace.OutboxKey}, value, eventsMaxLen, string(b), push).StringSlice()
	if err != nil {
		return false, "", unavailable(err)
	}
	if out[0] == "exists" {
		return false, out[1], nil
	}
	return true, "", nil
}

// PublishSchedules writes a node's schedules.
func PublishSchedules(ctx context.Context, rdb redis.Cmdable, s jobs.NodeSchedules) error {
	b, _ := json.Marshal(s)
	return unavailableOrNil(rdb.HSet(ctx, keyspace.SchedulesKey, s.Node, string(b)).Err())
}
