package demo

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"storekeeper/jobs"
	"storekeeper/jobsdb"
	"storekeeper/store"
)

// seeded marks a demo store whose first churn is written, so a second
// `make run` neither rewrites it nor forgets what compactions did to it.
var seeded = []byte("_demo/seeded")

// Start seeds the demo stores that are new (churn, then a first backup
// through the job pipeline, so it shows in the history) and keeps a light
// writer running on every demo store until stop is called. stop returns
// once the writer has stopped: call it before the stores close.
func Start(ctx context.Context, reg *store.Registry, client *jobsdb.Client, log *slog.Logger) (stop func()) {
	log = log.With("component", "demo")
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		for _, d := range Stores {
			if err := seed(ctx, reg, client, d, log); err != nil {
				log.Warn("demo store not seeded", "store", d.Name, "err", err)
			}
		}
		writer(ctx, reg, log)
	})
	return func() { cancel(); wg.Wait() }
}

func seed(ctx context.Context, reg *store.Registry, client *jobsdb.Client, d Store, log *slog.Logger) error {
	s, err := reg.Store(d.Name)
	if err != nil {
		return err
	}
	if _, err := s.Get(seeded); err == nil {
		return nil
	}
	start := time.Now()
	if err := churn(s, d); err != nil {
		return err
	}
	if err := s.Set(seeded, []byte(time.Now().UTC().Format(time.RFC3339))); err != nil {
		return err
	}
	st := s.Stats()
	log.Info("demo store written", "store", d.Name, "keys", d.Keys, "disk_bytes", st.DiskBytes,
		"reclaimable_bytes", st.ReclaimableBytes, "took", time.Since(start).Round(time.Millisecond))
	if backups, err := s.Backups(); err == nil && len(backups) > 0 {
		return nil
	}
	e, err := client.Enqueue(ctx, jobs.Request{Kind: jobs.KindBackup, Store: d.Name, Trigger: jobs.TriggerManual, Actor: "demo"})
	if err != nil {
		return fmt.Errorf("first backup: %w", err)
	}
	log.Info("demo store's first backup enqueued", "store", d.Name, "job_id", e.Record.ID)
	return nil
}

// writer overwrites and deletes a few keys of each demo store every half
// second: garbage for the next compaction, changes for the next backup. A
// store that is being restored refuses writes for a moment; the writer
// skips it.
func writer(ctx context.Context, reg *store.Registry, log *slog.Logger) {
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	refused := map[string]bool{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for _, d := range Stores {
			s, err := reg.Store(d.Name)
			if err == nil {
				err = s.Update(func(b *store.Batch) error {
					val := make([]byte, d.Size)
					for range 40 {
						for j := range val {
							val[j] = byte('a' + rng.IntN(26))
						}
						if err := b.Set(fmt.Appendf(nil, "%s-%08d", d.Name, rng.IntN(d.Keys)), val); err != nil {
							return err
						}
					}
					for range 10 {
						if err := b.Delete(fmt.Appendf(nil, "%s-%08d", d.Name, rng.IntN(d.Keys))); err != nil {
							return err
						}
					}
					return nil
				})
			}
			if (err != nil) != refused[d.Name] {
				refused[d.Name] = err != nil
				if err != nil {
					log.Info("demo writer paused on a store", "store", d.Name, "err", err)
				} else {
					log.Info("demo writer resumed on a store", "store", d.Name)
				}
			}
		}
	}
}
