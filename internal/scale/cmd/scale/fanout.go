package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"storekeeper/api"
	"storekeeper/client"
	"storekeeper/jobs"
	"storekeeper/jobsdb"
)

// fanout starts an API server on rdb with n WebSocket watchers of
// compact events (storekeeper's client.Watch), compacts jobs stores (one
// enqueue each), and returns, for every event every watcher received,
// the time from the event's stamp (set by the worker or the enqueue) to
// its arrival: the API's fan-out, Redis's stream and the WebSocket
// together.
func fanout(ctx context.Context, rdb *redis.Client, watchers int, stores []string) ([]time.Duration, error) {
	const secret = "scale-fanout-viewer-token-0123456789"
	base, stop, err := serveAPI(ctx, rdb, secret, api.RoleOperator)
	if err != nil {
		return nil, err
	}
	defer stop()
	c, err := client.New(base, client.WithToken(secret))
	if err != nil {
		return nil, err
	}
	want := 3 * len(stores) // enqueued, started, succeeded
	var mu sync.Mutex
	var lat []time.Duration
	var wg sync.WaitGroup
	ready := make(chan error, watchers)
	wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	for range watchers {
		wg.Go(func() {
			feed, err := c.Watch(wctx, client.Filter{Kinds: []jobs.Kind{jobs.KindCompact}})
			if err != nil {
				ready <- err
				return
			}
			live := false
			var mine []time.Duration
			for len(mine) < want {
				fr, err := feed.Next(wctx)
				if err != nil {
					if !live {
						ready <- err
					}
					break
				}
				if fr.Event.Type == "stream.live" && !live {
					live = true
					ready <- nil
					continue
				}
				if !fr.Event.At.IsZero() && fr.Event.Kind == jobs.KindCompact {
					mine = append(mine, time.Since(fr.Event.At))
				}
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		})
	}
	for range watchers {
		if err := <-ready; err != nil {
			cancel()
			wg.Wait()
			return nil, fmt.Errorf("a watcher: %w", err)
		}
	}
	jc := jobsdb.NewClient(rdb, jobs.ClientConfig{})
	for _, st := range stores {
		if _, err := jc.Enqueue(ctx, jobs.Request{Kind: jobs.KindCompact, Store: st, Trigger: jobs.TriggerManual, Actor: "scale"}); err != nil {
			cancel()
			wg.Wait()
			return nil, err
		}
	}
	wg.Wait()
	if len(lat) < watchers*want {
		return lat, errors.New(fmt.Sprint("watchers received ", len(lat), " of ", watchers*want, " events"))
	}
	return lat, nil
}

// serveAPI starts an API server on rdb (no cap on watchers) for a token
// of role with secret, on a loopback port: base is its URL, stop closes
// it.
func serveAPI(ctx context.Context, rdb redis.UniversalClient, secret string, role api.Role) (base string, stop func(), err error) {
	srv, err := api.New(api.Config{Redis: rdb, Tokens: []api.Token{{Name: "scale", Role: role, Secret: secret}},
		MaxWatchersPerToken: -1, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return "", nil, err
	}
	if err := srv.Start(ctx); err != nil {
		return "", nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		srv.Close()
		return "", nil, err
	}
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	return "http://" + ln.Addr().String(), func() { _ = hs.Close(); srv.Close() }, nil
}
