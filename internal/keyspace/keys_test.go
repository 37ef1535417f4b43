package keyspace

import (
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"storekeeper/jobs"
)

// keyLayout is storekeeper's Redis key layout, version LayoutVersion:
// every key name and pattern, the streams and the channel, spelled out.
// If this test fails, a key changed: data written by nodes of the previous
// build is no longer where this build looks. Bump LayoutVersion, and say
// in docs/design.md how to upgrade (or migrate) — do not just edit the
// strings here.
var keyLayout = map[string]struct{ got, want string }{
	// constants
	"LayoutKey":            {LayoutKey, "storekeeper:layout"},
	"StoresKey":            {StoresKey, "storekeeper:stores"},
	"PausedKey":            {PausedKey, "storekeeper:paused"},
	"NodesKey":             {NodesKey, "storekeeper:nodes"},
	"SchedulesKey":         {SchedulesKey, "storekeeper:schedules"},
	"OutboxKey":            {OutboxKey, "storekeeper:outbox"},
	"NotifyFailedKey":      {NotifyFailedKey, "storekeeper:notify:failed"},
	"VAPIDKey":             {VAPIDKey, "storekeeper:push:vapid"},
	"PushSubscriptionsKey": {PushSubscriptionsKey, "storekeeper:push:subscriptions"},
	"PushMovedKey":         {PushMovedKey, "storekeeper:push:moved"},
	"HistoryIndexMeta":     {HistoryIndexMeta, "storekeeper:history:index"},
	"EventsStream":         {EventsStream, "storekeeper:events"},
	"HistoryStream":        {HistoryStream, "storekeeper:history"},
	"CancelChannel":        {CancelChannel, "storekeeper:cancel"},
	// keys made from names
	"RecordKey": {RecordKey("j01"), "storekeeper:job:j01"},
	// the lock's suffix: the first 8 bytes of SHA-256 of the request's
	// DedupeKey, in hex
	"LockKey":             {LockKey(jobs.Payload{Kind: jobs.KindCompact, Store: "orders", Params: jobs.Params{Force: true}}), "storekeeper:lock:orders:compact:3d78735839fe9fbf"},
	"RestoreLockKey":      {RestoreLockKey("orders"), "storekeeper:lock:orders:restore"},
	"BatchKey":            {BatchKey("b01"), "storekeeper:batch:b01"},
	"BatchChunksKey":      {BatchChunksKey("b01"), "storekeeper:batchchunks:b01"},
	"InFlightKey":         {InFlightKey("node.n1"), "storekeeper:inflight:node.n1"},
	"LeaseKey":            {LeaseKey("orders"), "storekeeper:lease:orders"},
	"LeaseTokenKey":       {LeaseTokenKey("orders"), "storekeeper:leasetoken:orders"},
	"HomeKey":             {HomeKey("orders"), "storekeeper:home:orders"},
	"StatsKey":            {StatsKey("orders"), "storekeeper:storestats:orders"},
	"BackupFilesKey":      {BackupFilesKey("orders"), "storekeeper:backupfiles:orders"},
	"NodeKey":             {NodeKey("n1"), "storekeeper:node:n1"},
	"NodeDownKey":         {NodeDownKey("n1"), "storekeeper:nodedown:n1"},
	"SlotKey":             {SlotKey(jobs.KindBackup, "orders", time.Unix(1700000000, 0)), "storekeeper:slot:backup:orders:1700000000"},
	"IncidentKey":         {IncidentKey("orders"), "storekeeper:incident:orders"},
	"ShipGapKey":          {ShipGapKey("orders", "t1", 42), "storekeeper:shipgap:orders:t1:42"},
	"StoreLostKey":        {StoreLostKey("orders", "n1"), "storekeeper:lost:orders:n1"},
	"AutoRestoresKey":     {AutoRestoresKey("orders"), "storekeeper:autorestores:orders"},
	"OutboxProcessingKey": {OutboxProcessingKey("n1"), "storekeeper:outbox:n1"},
	// asynq's own (v0.26.0), which the enqueue scripts write and crash
	// recovery moves: not storekeeper's to change, but pinned all the same
	"AsynqPendingKey": {AsynqPendingKey("node.n1"), "asynq:{node.n1}:pending"},
	"AsynqActiveKey":  {AsynqActiveKey("node.n1"), "asynq:{node.n1}:active"},
	"AsynqLeaseKey":   {AsynqLeaseKey("node.n1"), "asynq:{node.n1}:lease"},
	"AsynqProcessedKey": {AsynqProcessedKey("node.n1", time.Date(2026, 12, 5, 23, 59, 0, 0, time.FixedZone("x", -3600))),
		"asynq:{node.n1}:processed:2026-12-06"},
	"AsynqProcessedTotalKey": {AsynqProcessedTotalKey("node.n1"), "asynq:{node.n1}:processed"},
	"ConfirmChannel":         {ConfirmChannel, "storekeeper:confirm"},
	"DeliveryKey":            {DeliveryKey("n01", "webhook"), "storekeeper:delivery:n01:webhook"},
	"PushOwnerKey":           {PushOwnerKey("alice"), "storekeeper:push:owner:alice"},
	"HistoryIndexKey":        {strings.Join(HistoryIndexes("orders", jobs.KindCompact), " "), "storekeeper:history:store:orders storekeeper:history:kind:compact storekeeper:history:sk:orders:compact"},
	// asynq queues (asynq's keys embed them) and the streams' entry field
	"NodeQueue":   {jobs.NodeQueue("n1"), "node.n1"},
	"NotifyQueue": {jobs.NotifyQueue, "notify"},
	"StreamField": {StreamField, "json"},
}

func TestKeyLayout(t *testing.T) {
	if LayoutVersion != 1 {
		t.Fatalf("LayoutVersion is %d: update keyLayout to that version's keys", LayoutVersion)
	}
	for name, k := range keyLayout {
		if k.got != k.want {
			t.Errorf("%s = %q, layout %d has %q: a changed key needs a new LayoutVersion and an upgrade procedure", name, k.got, LayoutVersion, k.want)
		}
	}
}

// Every key the package declares is pinned above: an exported constant
// whose value starts with "storekeeper:", and every function named …Key
// (the key builders).
func TestKeyLayoutIsComplete(t *testing.T) {
	fset := token.NewFileSet()
	names, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	var files []*ast.File
	for _, name := range names {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	var declared []string
	for _, f := range files {
		for _, d := range f.Decls {
			switch d := d.(type) {
			case *ast.FuncDecl:
				if d.Recv == nil && strings.HasSuffix(strings.ToLower(d.Name.Name), "key") && d.Name.Name != "DedupeKey" {
					declared = append(declared, d.Name.Name)
				}
			case *ast.GenDecl:
				if d.Tok != token.CONST {
					continue
				}
				for _, s := range d.Specs {
					vs := s.(*ast.ValueSpec)
					for i, n := range vs.Names {
						if i >= len(vs.Values) {
							continue
						}
						if v := constString(vs.Values[i]); strings.HasPrefix(v, "storekeeper:") && n.IsExported() {
							declared = append(declared, n.Name)
						}
					}
				}
			}
		}
	}
	slices.Sort(declared)
	var missing []string
	for _, n := range declared {
		if _, ok := keyLayout[n]; !ok {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		t.Fatalf("keys not pinned in keyLayout: %v (declared: %v; pinned: %v)", missing, declared, slices.Sorted(maps.Keys(keyLayout)))
	}
}

// constString is the value of a string literal, or of two concatenated.
func constString(e ast.Expr) string {
	switch e := e.(type) {
	case *ast.BasicLit:
		s, _ := strconv.Unquote(e.Value)
		return s
	case *ast.BinaryExpr:
		return constString(e.X) + constString(e.Y)
	}
	return ""
}

// The job record's hash fields are part of the layout too: the scripts
// read them by name (the change script also keeps op and run there, and
// the enqueue script enq_ms).
func TestRecordFieldLayout(t *testing.T) {
	got := slices.Sorted(maps.Keys(jobs.Record{}.Fields()))
	want := []string{"actor", "attempts", "batch_id", "enqueued_at", "errors", "finished_at", "id", "kind", "max_retry",
		"node", "params", "queue", "reason", "result", "started_at", "state", "store", "trigger"}
	if !slices.Equal(got, want) {
		t.Fatalf("record fields %v, layout %d has %v", got, LayoutVersion, want)
	}
}
