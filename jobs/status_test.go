package jobs

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// One rule decides which backups a restore may use: verified and not
// found bad since.
func TestBackupUsable(t *testing.T) {
	at := time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		name string
		b    BackupSummary
		want bool
	}{
		{"verified", BackupSummary{ID: "a", VerifiedAt: at}, true},
		{"never verified", BackupSummary{ID: "a"}, false},
		{"verified, then found bad", BackupSummary{ID: "a", VerifiedAt: at, Bad: true, Error: "checksum"}, false},
		{"bad", BackupSummary{ID: "a", Bad: true}, false},
	} {
		if got := c.b.Usable(); got != c.want {
			t.Errorf("%s: Usable() = %v, want %v", c.name, got, c.want)
		}
	}

	// Newest first: the newest usable one skips a newer unverified and a
	// newer bad backup; the newest good one skips only bad ones.
	list := []BackupSummary{{ID: "4", Bad: true, VerifiedAt: at}, {ID: "3"}, {ID: "2", VerifiedAt: at}, {ID: "1", VerifiedAt: at}}
	if b, ok := NewestUsable(list); !ok || b.ID != "2" {
		t.Errorf("NewestUsable = %q, %v; want 2", b.ID, ok)
	}
	if b, ok := NewestGood(list); !ok || b.ID != "3" {
		t.Errorf("NewestGood = %q, %v; want 3", b.ID, ok)
	}
	if _, ok := NewestUsable(list[:2]); ok {
		t.Error("NewestUsable found a backup among a bad and an unverified one")
	}
	if _, ok := NewestUsable(nil); ok {
		t.Error("NewestUsable found a backup in an empty list")
	}
}

// What a worker published before these types existed (an anonymous struct
// over the store package's values) still decodes, and encodes back to the
// same JSON.
func TestStoreStatusWire(t *testing.T) {
	const published = `{"node":"n1","stats":{"name":"orders","state":"open","disk_bytes":4096,"live_bytes":2048,` +
		`"estimated_keys":10,"levels":[{"level":0,"tables":1,"bytes":2048,"sublevels":1}],"read_amp":1,"l0_sublevels":1,` +
		`"tombstones":0,"garbage_point_bytes":0,"garbage_range_bytes":0,"above_bottom_bytes":0,"reclaimable_bytes":0,` +
		`"stats_complete":true,"last_verify":"2026-11-22T00:00:00Z","background_errors":0},` +
		`"backups":[{"id":"20261122T000000.000Z-000002","store":"orders","created_at":"2026-11-22T00:00:00Z","format_version":19,` +
		`"keys":10,"bytes":4096,"new_bytes":1024,"files":[{"name":"000005.sst","size":2048,"sha256":"ab","shared":true},` +
		`{"name":"MANIFEST-000001","size":100,"sha256":"cd"}],"verified_at":"0001-01-01T00:00:00Z","bad":true,"error":"checksum"}],` +
		`"at":"2026-11-22T00:00:01Z"}`
	var s StoreStatus
	if err := json.Unmarshal([]byte(published), &s); err != nil {
		t.Fatal(err)
	}
	if s.Stats.State != StoreOpen || len(s.Backups) != 1 || !s.Backups[0].Bad || s.Backups[0].Files[0].Shared != true {
		t.Fatalf("decoded %+v", s)
	}
	sameJSON(t, s, published)
}

// Results as the worker wrote them before these types (the store
// package's values, and maps for a verify) decode and encode back alike.
func TestResultsWire(t *testing.T) {
	for _, c := range []struct {
		name string
		v    any
		raw  string
	}{
		{"compact", &CompactResult{}, `{"outcome":"skipped","decision":{"compact":false,"reason":"store is empty","stats":{"name":"s","state":"open",` +
			`"disk_bytes":1,"live_bytes":0,"estimated_keys":0,"levels":null,"read_amp":0,"l0_sublevels":0,"tombstones":0,"garbage_point_bytes":0,` +
			`"garbage_range_bytes":0,"above_bottom_bytes":0,"reclaimable_bytes":0,"stats_complete":false,"background_errors":0}},` +
			`"bytes_before":1,"bytes_after":1,"duration":1000}`},
		{"backup", &BackupResult{}, `{"backup":{"id":"b","store":"s","created_at":"2026-11-22T00:00:00Z","format_version":19,"keys":1,"bytes":2,` +
			`"new_bytes":2,"files":[{"name":"000005.sst","size":2,"sha256":"ab"}],"verified_at":"2026-11-22T00:00:00Z"},"copied":1,"shared":0,"reread":0,"pruned":["a"],` +
			`"timing":{"checkpoint":1,"copy":2,"hash":3,"file_sync":4,"validate":5,"publish":6},"took":21}`},
		{"verify, corrupt", &VerifyResult{}, `{"corrupt":"pebble: corruption in 000005.sst"}`},
		{"verify, good", &VerifyResult{}, `{"live":{"files":2,"bytes":3,"deep":false,"duration":4},"backup":{"id":"b","files":2,"bytes":3,"points":9,"deep":true,"duration":5}}`},
		{"verify, bad backup", &VerifyResult{}, `{"live":{"files":2,"bytes":3,"deep":false,"duration":4},"backup":{"bad":"backup b is bad","id":"b"}}`},
		{"verify, no backup", &VerifyResult{}, `{"live":{"files":2,"bytes":3,"points":7,"deep":true,"duration":4}}`},
		{"restore", &RestoreResult{}, `{"backup_id":"b","backup_at":"2026-11-22T00:00:00Z","quarantine":"q/1",` +
			`"timing":{"fence":1,"stage":2,"hash":3,"sync":4,"verify":5,"swap":6,"reopen":7},"took":28}`},
	} {
		if err := json.Unmarshal([]byte(c.raw), c.v); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		sameJSON(t, c.v, c.raw)
	}
	var bad VerifyResult
	_ = json.Unmarshal([]byte(`{"live":{"files":1},"backup":{"bad":"x","id":"b"}}`), &bad)
	if bad.Backup == nil || bad.Backup.Bad != "x" || bad.Backup.VerifyCheck != nil {
		t.Errorf("a bad backup's check decoded as %+v", bad.Backup)
	}
}

// sameJSON fails unless v encodes to the JSON value of want (key order
// aside).
func sameJSON(t *testing.T, v any, want string) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var got, w any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(w, got); d != "" {
		t.Errorf("%T encodes differently (-was +now):\n%s", v, d)
	}
}
