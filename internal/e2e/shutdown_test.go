package e2e

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"storekeeper/api"
	"storekeeper/internal/pushtest"
	"storekeeper/internal/redistest"
	"storekeeper/jobs"
	"storekeeper/store"
	"storekeeper/worker"
)

// A node run in one process (stores, worker and API, with a WebSocket
// watcher replaying and a job run through it all) and then stopped
// leaves no goroutine behind: every component's Stop ends what its Start
// began. The node's Redis client is its own, closed last as serve does
// (it owns the autopipeliner the API starts on it); the Redis server,
// started before, is not counted.
func TestStartStopLeavesNoGoroutine(t *testing.T) {
	rs := redistest.Start(t)
	before := goleak.IgnoreCurrent()
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr()})

	root := t.TempDir()
	reg, err := store.Open(store.Config{DataDir: filepath.Join(root, "data"), BackupDir: filepath.Join(root, "backups"),
		Stores: []string{"orders"}, NoSync: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	w, err := worker.New(worker.Config{Redis: rdb, Registry: reg, Node: "n1", TaskCheckInterval: 10 * time.Millisecond,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	tokens, _ := api.ParseTokens("ops:operator:" + operatorToken)
	a, err := api.New(api.Config{Redis: rdb, Tokens: tokens, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a.Handler())
	client := srv.Client()

	// A watcher with a replay, and a job it sees end.
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http")+"/ws?since=0",
		http.Header{"Authorization": {"Bearer " + operatorToken}})
	if err != nil {
		t.Fatal(err)
	}
	pushtest.WaitLive(t, ws)
	req, _ := http.NewRequest("POST", srv.URL+"/api/admin/verify/orders", nil)
	req.Header.Set("Authorization", "Bearer "+operatorToken)
	resp, err := client.Do(req)
	if err != nil || resp.StatusCode/100 != 2 {
		t.Fatalf("enqueue: %v, %v", resp, err)
	}
	resp.Body.Close()
	for {
		m := readEvent(t, ws)
		if m["type"] == string(jobs.EventJobSucceeded) {
			break
		}
	}

	// Stop, each part under a deadline, in the order serve stops them.
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	ws.Close()
	client.CloseIdleConnections()
	srv.Close()
	if err := a.Stop(ctx); err != nil {
		t.Fatalf("api Stop: %v", err)
	}
	if err := w.Stop(ctx); err != nil {
		t.Fatalf("worker Stop: %v", err)
	}
	if err := reg.Close(); err != nil {
		t.Fatalf("registry Close: %v", err)
	}
	if err := rdb.Close(); err != nil {
		t.Fatalf("Redis client Close: %v", err)
	}
	goleak.VerifyNone(t, before)
}
