package api

import (
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"storekeeper/internal/keyspace"
	"storekeeper/jobs"
	"storekeeper/jobsdb"
)

// A restore is refused before any job is made unless jobs'
// BackupSummary.Usable accepts its backup: the one it names, or the newest
// usable one when it names none. An explicit backup id gets no exemption:
// one never verified is a 409, as one marked bad.
func TestRestoreTakesOnlyUsableBackups(t *testing.T) {
	rdb := testRedis(t)
	s := newSecServer(t, rdb, nil)
	t.Cleanup(s.Close)
	h := s.Handler()
	ctx := t.Context()
	at := time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)
	publish := func(backups ...jobs.BackupSummary) {
		t.Helper()
		b, _ := json.Marshal(jobs.StoreStatus{Node: "n1", Stats: jobs.StoreStats{Name: "orders", State: jobs.StoreCorrupt}, Backups: backups, At: at})
		if err := rdb.HSet(ctx, keyspace.StoresKey, "orders", "n1").Err(); err != nil {
			t.Fatal(err)
		}
		if err := rdb.Set(ctx, keyspace.StatsKey("orders"), b, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	restore := func(body string) (int, string) {
		t.Helper()
		req := httptest.NewRequest("POST", "/api/admin/restore/orders", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+secOperator)
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code == 202 {
			// One restore per store at a time: cancel it for the next case.
			var e enqueued
			_ = json.Unmarshal(rec.Body.Bytes(), &e)
			if _, err := jobsdb.NewClient(rdb, jobs.ClientConfig{}).Cancel(ctx, e.ID, "t"); err != nil {
				t.Fatal(err)
			}
			return rec.Code, e.Params.BackupID
		}
		var a errorAnswer
		_ = json.Unmarshal(rec.Body.Bytes(), &a)
		return rec.Code, a.Error
	}

	unverified := jobs.BackupSummary{ID: "20261122T030000.000Z-000004", CreatedAt: at.Add(3 * time.Hour)}
	bad := jobs.BackupSummary{ID: "20261122T020000.000Z-000003", CreatedAt: at.Add(2 * time.Hour), VerifiedAt: at, Bad: true, Error: "checksum"}
	good := jobs.BackupSummary{ID: "20261122T010000.000Z-000002", CreatedAt: at.Add(time.Hour), VerifiedAt: at.Add(time.Hour)}

	publish(unverified, bad)
	for _, c := range []struct {
		body string
		code int
		want string
	}{
		{`{"backup_id":"` + unverified.ID + `"}`, 409, "no_backup"},
		{`{"backup_id":"` + bad.ID + `"}`, 409, "no_backup"},
		{`{}`, 409, "no_backup"},
		{`{"backup_id":"20261122T000000.000Z-000001"}`, 404, "unknown_backup"},
	} {
		if code, got := restore(c.body); code != c.code || got != c.want {
			t.Errorf("restore %s with only an unverified and a bad backup: %d %s, want %d %s", c.body, code, got, c.code, c.want)
		}
	}

	publish(unverified, bad, good)
	for _, c := range []struct {
		body string
		code int
		want string
	}{
		{`{"backup_id":"` + good.ID + `"}`, 202, good.ID},
		{`{}`, 202, ""}, // the worker takes the newest usable one when it runs
		{`{"backup_id":"` + unverified.ID + `"}`, 409, "no_backup"},
	} {
		if code, got := restore(c.body); code != c.code || got != c.want {
			t.Errorf("restore %s: %d %s, want %d %s", c.body, code, got, c.code, c.want)
		}
	}
}
