// Command embed is an application that owns a Pebble store and lets
// storekeeper maintain it in the same process: it writes through a store
// handle while storekeeper's worker compacts, backs up, verifies and
// restores the store, with schedules, automatic restore and notifications.
//
//	go run ./examples/embed                  # in-memory Redis, ./embed-data
//	go run ./examples/embed --redis redis://127.0.0.1:6379/0
//
// Then: curl -X PUT localhost:8081/kv/hello -d world; curl localhost:8081/kv/hello;
// curl -X POST localhost:8081/maintenance/backup (compact, backup, verify, restore).
//
// With --backup-target file:///some/dir (or s3://…), backups go off the
// machine and every write is shipped there within 250 ms (point-in-time
// recovery): curl -X PUT 'localhost:8081/kv/hello?wait=shipped' -d world
// answers only once the write is on the target (Store.WaitShipped).
//
// The embedding API is three calls: store.Open (with the application's
// own Pebble options), Registry.Store for handles, and worker.New/Start to
// run storekeeper's jobs in-process. jobsdb.Client enqueues jobs, as the
// HTTP API of `storekeeper serve` does.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/redis/go-redis/v9"

	"storekeeper/internal/memredis"
	"storekeeper/jobs"
	"storekeeper/jobsdb"
	"storekeeper/offsite"
	"storekeeper/ship"
	"storekeeper/store"
	"storekeeper/worker"
)

// storeName is the application's one store.
const storeName = "events"

// app is the application: its store, and storekeeper running beside it.
type app struct {
	reg    *store.Registry
	kv     *store.Store
	rdb    *redis.Client
	cache  *pebble.Cache
	target *offsite.Target // nil without a backup target
	worker *worker.Worker
	jobs   *jobsdb.Client
	log    *slog.Logger
}

type config struct {
	dataDir, backupDir string
	target             string // a backup target URL; empty: none
	redis              *redis.Options
	node               string
	log                *slog.Logger
	workerConfig       func(*worker.Config) // tests tune polling and retries
}

// start opens the store with the application's Pebble options and starts
// storekeeper's worker on it.
func start(ctx context.Context, cfg config) (*app, error) {
	// The application's own block cache. Pebble takes a reference per
	// open, and a restore reopens the store with these options: the cache
	// must outlive the registry, so it is released in close.
	cache := pebble.NewCache(32 << 20)
	reg, err := store.Open(store.Config{
		DataDir:   cfg.dataDir,
		BackupDir: cfg.backupDir,
		Stores:    []string{storeName},
		PebbleOptions: func(string) *pebble.Options {
			return &pebble.Options{Cache: cache, MemTableSize: 16 << 20}
		},
		Logger: cfg.log,
		// With a backup target, keep the commit log for shipping.
		Ship: cfg.target != "",
	})
	if err != nil {
		cache.Unref()
		return nil, err
	}
	kv, err := reg.Store(storeName)
	if err != nil {
		reg.Close()
		cache.Unref()
		return nil, err
	}
	rdb := redis.NewClient(cfg.redis)
	wcfg := worker.Config{Redis: rdb, Registry: reg, Node: cfg.node, Logger: cfg.log}
	var target *offsite.Target
	if cfg.target != "" {
		// Backups are uploaded to the target, and the worker runs a
		// shipper that sends every committed write there.
		if target, err = offsite.Open(ctx, "offsite", cfg.target, nil); err == nil {
			wcfg.Targets = []*offsite.Target{target}
			wcfg.Shipper, err = ship.New(ship.Config{Dir: filepath.Join(cfg.dataDir, store.MetaDir, "ship"), Targets: wcfg.Targets, Logger: cfg.log}, reg)
		}
	}
	if cfg.workerConfig != nil {
		cfg.workerConfig(&wcfg)
	}
	var w *worker.Worker
	if err == nil {
		w, err = worker.New(wcfg)
	}
	if err == nil {
		err = w.Start(ctx)
	}
	if err != nil {
		rdb.Close()
		reg.Close()
		if target != nil {
			target.Close()
		}
		cache.Unref()
		return nil, err
	}
	return &app{reg: reg, kv: kv, rdb: rdb, cache: cache, target: target, worker: w, jobs: jobsdb.NewClient(rdb, jobs.ClientConfig{}), log: cfg.log}, nil
}

// close stops in the right order: the worker (it finishes or requeues its
// jobs), then the stores, then Redis.
func (a *app) close() {
	a.worker.Shutdown() // its shipper sends what is left first
	if err := a.reg.Close(); err != nil {
		a.log.Error("closing stores", "err", err)
	}
	if a.target != nil {
		a.target.Close()
	}
	a.cache.Unref()
	a.rdb.Close()
}

// put writes a key, retrying while a restore holds the store: the handle
// answers store.ErrUnavailable (a typed error, never a panic) until the
// restored store is open again.
func (a *app) put(ctx context.Context, key, value []byte) error {
	for {
		err := a.kv.Set(key, value)
		if !errors.Is(err, store.ErrUnavailable) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (a *app) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /kv/{key}", func(w http.ResponseWriter, r *http.Request) {
		v, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err == nil {
			err = a.put(r.Context(), []byte(r.PathValue("key")), v)
		}
		if err == nil && r.URL.Query().Get("wait") == "shipped" {
			// Off the machine before answering: waits for the shipper's
			// next seal, shared with every other waiter.
			err = a.kv.WaitShipped(r.Context())
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusNoContent) // acknowledged: synced to the WAL (and shipped, with ?wait=shipped)
	})
	mux.HandleFunc("GET /kv/{key}", func(w http.ResponseWriter, r *http.Request) {
		v, err := a.kv.Get([]byte(r.PathValue("key")))
		switch {
		case errors.Is(err, store.ErrNotFound):
			http.Error(w, "not found", http.StatusNotFound)
		case err != nil:
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
		default:
			_, _ = w.Write(v)
		}
	})
	mux.HandleFunc("POST /maintenance/{kind}", func(w http.ResponseWriter, r *http.Request) {
		res, err := a.jobs.Enqueue(r.Context(), jobs.Request{Kind: jobs.Kind(r.PathValue("kind")), Store: storeName,
			Trigger: jobs.TriggerManual, Actor: "embed"})
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "job %s (%s)\n", res.Record.ID, res.Record.State)
	})
	return mux
}

func main() {
	redisURL := flag.String("redis", "", "redis:// URL; empty runs an in-memory Redis in this process")
	dataDir := flag.String("data-dir", "./embed-data", "where the application's store lives")
	listen := flag.String("listen", "127.0.0.1:8081", "HTTP address")
	target := flag.String("backup-target", "", "URL of object storage (s3://…, file:///dir) backups and every write are shipped to; empty: none")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var opt *redis.Options
	if *redisURL == "" {
		mr, err := memredis.Start()
		if err != nil {
			log.Error("in-memory Redis", "err", err)
			os.Exit(1)
		}
		defer mr.Close()
		opt = &redis.Options{Addr: mr.Addr()}
		log.Warn("no --redis: jobs, events and history live in this process's memory only")
	} else {
		var err error
		if opt, err = redis.ParseURL(*redisURL); err != nil {
			log.Error("--redis", "err", err)
			os.Exit(2)
		}
	}
	a, err := start(ctx, config{dataDir: filepath.Join(*dataDir, "stores"), backupDir: filepath.Join(*dataDir, "backups"),
		target: *target, redis: opt, node: "embed", log: log})
	if err != nil {
		log.Error("start", "err", err)
		os.Exit(1)
	}
	defer a.close()
	srv := &http.Server{Addr: *listen, Handler: a.routes(), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shut)
	}()
	log.Info("embed listening", "addr", *listen, "store", storeName)
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Error("serve", "err", err)
	}
}
