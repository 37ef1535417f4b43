package api

import (
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"storekeeper/internal/keyspace"
	"storekeeper/internal/redistest"
)

// With Jobs.MinReplicas, an enqueue the replicas do not confirm is
// answered 503 redis_unavailable, saying the job may or may not have been
// accepted; the same request once the replica is back is answered 202
// with that job, deduplicated. (The API's enqueues are autopipelined;
// the confirmation is not.)
func TestUnconfirmedEnqueueIs503(t *testing.T) {
	srv := redistest.Start(t)
	rep := srv.StartReplica(t)
	rdb := srv.Client(t)
	s := newSecServer(t, rdb, func(c *Config) { c.Jobs.MinReplicas, c.Jobs.MinReplicasTimeout = 1, 300*time.Millisecond })
	h := s.Handler()
	if err := rdb.HSet(t.Context(), keyspace.StoresKey, "orders", "n1").Err(); err != nil {
		t.Fatal(err)
	}
	compact := func() *httptest.ResponseRecorder {
		t.Helper()
		req := httptest.NewRequest("POST", "/api/admin/compact/orders", strings.NewReader(`{"force":true}`))
		req.Header.Set("Authorization", "Bearer "+secOperator)
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}

	if err := rep.Pause(); err != nil {
		t.Fatal(err)
	}
	rec := compact()
	var a errorAnswer
	if err := json.Unmarshal(rec.Body.Bytes(), &a); err != nil || rec.Code != 503 || a.Error != "redis_unavailable" || !strings.Contains(a.Message, "may or may not have been accepted") {
		t.Fatalf("compact with the replica paused: %d %s", rec.Code, rec.Body)
	}
	if err := rep.Resume(); err != nil {
		t.Fatal(err)
	}
	rec = compact()
	var e enqueued
	if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || rec.Code != 202 || !e.Deduplicated || !strings.Contains(a.Message, e.ID) {
		t.Fatalf("compact with the replica back: %d %s; want 202 with the job the 503 named, deduplicated", rec.Code, rec.Body)
	}
}
