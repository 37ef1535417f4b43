package redistest

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// StartReplica starts a redis-server replicating s (replicaof) on a free
// port, with its own directory, and waits until the replication link is
// up and the replica has acknowledged a write to s, so that a WAIT on s
// counts it from then on. It is
// a Server like any other: Pause stalls the replica (it stops
// acknowledging, and a WAIT on s falls short), Resume lets it catch up,
// Kill and Restart crash and restart it (its config keeps replicaof). It
// stops when tb's test ends. opts apply to the replica (WithAOF).
//
// miniredis cannot replicate: on the fallback, StartReplica skips the
// test, or fails it when STOREKEEPER_REQUIRE_REDIS is set (Start would
// have failed first) or the caller passes RequireReal.
func (s *Server) StartReplica(tb testing.TB, opts ...Option) *Server {
	tb.Helper()
	var cfg config
	for _, o := range opts {
		o(&cfg)
	}
	if !s.Real() {
		if cfg.requireReal || requiredByEnv() {
			tb.Fatalf("redistest: a replica needs a real redis-server, and this server is miniredis")
		}
		tb.Skip("redistest: replicas need a real redis-server; redis-server is not on PATH and miniredis cannot replicate (set " + RequireEnv + "=1 to fail instead)")
	}
	r, err := start(append(opts, RequireReal(), func(c *config) { c.replicaOf = s.addr }))
	if err != nil {
		tb.Fatalf("%v", err)
	}
	tb.Cleanup(r.close)
	if err := waitReplicating(s, r); err != nil {
		tb.Fatalf("redistest: replica %s of %s: %v\n%s", r.addr, s.addr, err, lastLines(readFrom(filepath.Join(r.dir, logName), 0), 20))
	}
	return r
}

// waitReplicating polls until replica's link to primary is up, primary
// lists replica online, and replica has acknowledged a write made after
// that: a replica fresh from its first sync was seen (Redis 7.0) to
// acknowledge nothing for up to a second, its periodic REPLCONF ACK, so
// that a WAIT in the meantime would not count it.
func waitReplicating(primary, replica *Server) error {
	ctx := context.Background()
	pc := redis.NewClient(&redis.Options{Addr: primary.addr, MaxRetries: -1})
	defer pc.Close()
	rc := redis.NewClient(&redis.Options{Addr: replica.addr, MaxRetries: -1})
	defer rc.Close()
	deadline := time.Now().Add(readyTimeout)
	var last string
	for {
		ok, state, err := replicating(ctx, pc, rc, replica.port)
		if ok {
			return nil
		}
		last = state
		if err != nil {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not replicating after %v; last INFO replication of the primary:\n%s", readyTimeout, last)
		}
		time.Sleep(pollInterval) // polling a process this package started, not a test's wait
	}
}

// replicating makes a write on the primary (a PUBLISH) and tells whether
// the replica on port has acknowledged it, with a WAIT to prompt it
// (WAIT asks every replica for an acknowledgement at once). state is the
// primary's INFO replication.
func replicating(ctx context.Context, pc, rc *redis.Client, port int) (ok bool, state string, err error) {
	ri, err := rc.Info(ctx, "replication").Result()
	if err != nil || !strings.Contains(ri, "master_link_status:up") {
		return false, ri, err
	}
	conn := pc.Conn()
	defer conn.Close()
	if err := conn.Publish(ctx, "redistest:replicating", "").Err(); err != nil {
		return false, "", err
	}
	info, err := conn.Info(ctx, "replication").Result()
	if err != nil {
		return false, "", err
	}
	written := infoInt(info, "master_repl_offset:")
	if err := conn.Wait(ctx, 1, 100*time.Millisecond).Err(); err != nil {
		return false, info, err
	}
	if info, err = conn.Info(ctx, "replication").Result(); err != nil {
		return false, "", err
	}
	for _, line := range strings.Split(info, "\n") {
		if strings.HasPrefix(line, "slave") && strings.Contains(line, fmt.Sprintf("port=%d,", port)) && strings.Contains(line, "state=online") {
			return infoInt(line, "offset=") >= written, info, nil
		}
	}
	return false, info, nil
}

// infoInt is the number after key in an INFO text or line, -1 if none.
func infoInt(text, key string) int64 {
	i := strings.Index(text, key)
	if i < 0 {
		return -1
	}
	rest := text[i+len(key):]
	end := strings.IndexAny(rest, ",\r\n")
	if end < 0 {
		end = len(rest)
	}
	n, err := strconv.ParseInt(rest[:end], 10, 64)
	if err != nil {
		return -1
	}
	return n
}
