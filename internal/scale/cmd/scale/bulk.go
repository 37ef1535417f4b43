package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"storekeeper/internal/keyspace"
	"storekeeper/jobs"
	"storekeeper/jobsdb"
)

// bulkResult is one bulk enqueue (POST /api/admin/verify's work) over n
// stores, and raw asynq enqueueing n tasks beside it.
type bulkResult struct {
	wall, raw     time.Duration
	longest       time.Duration // Redis's longest command meanwhile (its latency monitor, 1 ms resolution)
	bytesPerJob   float64
	total, listed int
}

// measureBulk runs jobsdb.EnqueueBatch over n stores spread over 1,000
// owners on a fresh redis-server, then, on another fresh one, raw asynq
// enqueues of n tasks over 1,000 queues, eight at a time (as the batch
// hands them over).
func measureBulk(n int) (bulkResult, error) {
	var r bulkResult
	ctx := context.Background()
	err := withRedis(func(rdb *redis.Client) error {
		if err := rdb.ConfigSet(ctx, "latency-monitor-threshold", "1").Err(); err != nil {
			return err
		}
		for start := 0; start < n; start += 1000 {
			pipe := rdb.Pipeline()
			for i := start; i < min(start+1000, n); i++ {
				pipe.HSet(ctx, keyspace.StoresKey, fmt.Sprintf("s%06d", i), fmt.Sprintf("node%03d", i%1000))
			}
			if _, err := pipe.Exec(ctx); err != nil {
				return err
			}
		}
		before, err := usedMemory(ctx, rdb)
		if err != nil {
			return err
		}
		_ = rdb.Do(ctx, "LATENCY", "RESET").Err()
		c := jobsdb.NewClient(rdb, jobs.ClientConfig{})
		t0 := time.Now()
		b, err := c.EnqueueBatch(ctx, jobs.BatchRequest{Kind: jobs.KindVerify, Trigger: jobs.TriggerManual, Actor: "scale", List: 1000})
		r.wall = time.Since(t0)
		if err != nil {
			return err
		}
		r.total, r.listed = b.Total, len(b.Jobs)
		after, err := usedMemory(ctx, rdb)
		if err != nil {
			return err
		}
		r.bytesPerJob = float64(after-before) / float64(n)
		r.longest, err = longestCommand(ctx, rdb)
		return err
	})
	if err != nil {
		return r, err
	}
	err = withRedis(func(rdb *redis.Client) error {
		aq := asynq.NewClientFromRedisClient(rdb)
		var next atomic.Int64
		var wg sync.WaitGroup
		var firstErr atomic.Value
		t0 := time.Now()
		for range 8 {
			wg.Go(func() {
				for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
					_, err := aq.EnqueueContext(ctx, asynq.NewTask("verify", []byte(`{"store":"s`+strconv.Itoa(i)+`"}`)),
						asynq.TaskID(jobs.NewID()), asynq.Queue(fmt.Sprintf("node.node%03d", i%1000)))
					if err != nil {
						firstErr.CompareAndSwap(nil, err)
						return
					}
				}
			})
		}
		wg.Wait()
		r.raw = time.Since(t0)
		if err, _ := firstErr.Load().(error); err != nil {
			return err
		}
		return nil
	})
	return r, err
}

// withRedis runs fn against a fresh private redis-server.
func withRedis(fn func(*redis.Client) error) error { return withRedisPool(64, fn) }

// withRedisPool runs fn against a fresh private redis-server, through a
// client with pool connections.
func withRedisPool(pool int, fn func(*redis.Client) error) error {
	dir, err := os.MkdirTemp("", "storekeeper-scale-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	srv, addr, err := startRedis(dir)
	if err != nil {
		return err
	}
	defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
	rdb := redis.NewClient(&redis.Options{Addr: addr, PoolSize: pool})
	defer rdb.Close()
	return fn(rdb)
}

func usedMemory(ctx context.Context, rdb *redis.Client) (int64, error) {
	info, err := rdb.Info(ctx, "memory").Result()
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(infoField(info, "used_memory"), 10, 64)
}

// longestCommand is the latency monitor's worst "command" event since
// the reset: the longest Redis served nothing else (0 when none reached
// the 1 ms threshold).
func longestCommand(ctx context.Context, rdb *redis.Client) (time.Duration, error) {
	v, err := rdb.Do(ctx, "LATENCY", "LATEST").Slice()
	if err != nil {
		return 0, err
	}
	var worst int64
	for _, e := range v {
		row, _ := e.([]any)
		if len(row) >= 4 && row[0] == "command" {
			worst, _ = row[3].(int64)
		}
	}
	return time.Duration(worst) * time.Millisecond, nil
}
