package api

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"time"

	"storekeeper/jobs"
)

// The OpenAPI document's component schemas are derived from the Go types
// the handlers decode and encode, read the way encoding/json reads them,
// so a field added to a body or an answer is documented without anyone
// remembering to. The answers the handlers build as gin.H have a shape
// type here; internal/e2e checks live answers against every schema.

// Answer shapes for the handlers' gin.H answers.
type (
	batchAnswer struct {
		BatchID      string `json:"batch_id"`
		Total        int    `json:"total"`        // the batch's jobs
		New          int    `json:"new"`          // made for it
		Deduplicated int    `json:"deduplicated"` // already in flight
		// The first 1,000 jobs in the stores' order; when total is more,
		// GET /api/jobs?batch= pages through them all.
		Jobs []enqueued `json:"jobs"`
	}
	jobList struct {
		Jobs       []jobs.Record `json:"jobs"`
		NextCursor string        `json:"next_cursor,omitempty"` // with limit: the next page's cursor; absent on the last
	}
	historyPage struct {
		History []jobs.HistoryEntry `json:"history"`
		Next    string              `json:"next"` // "" on the last page; else before= for the next one
	}
	storeList struct {
		Stores []jobs.StoreView `json:"stores"`
		// A page (limit, cursor or a filter given) also has these.
		Next  string `json:"next_cursor,omitempty"`
		Total int    `json:"total,omitempty"`
	}
	storeBackups struct {
		Store   string               `json:"store"`
		Backups []jobs.BackupSummary `json:"backups"`
	}
	pauseState struct {
		Store  string `json:"store"`
		Paused bool   `json:"paused"`
	}
	nodeList struct {
		Nodes []jobs.NodeStatus `json:"nodes"` // by name
	}
	scheduleList struct {
		Nodes  []jobs.NodeSchedules      `json:"nodes"`
		Paused map[string]jobs.PauseInfo `json:"paused"`
	}
	dashboardAnswer struct {
		// Every store; with ?limit= the first page (GET /api/stores
		// ?limit=&cursor=next_cursor reads the next).
		Stores    []jobs.StoreView     `json:"stores"`
		History   []jobs.HistoryEntry  `json:"history"`
		Queues    []queueView          `json:"queues"`
		Schedules []jobs.NodeSchedules `json:"schedules"`
		Nodes     []jobs.NodeStatus    `json:"nodes"`
		// The stores' conditions (with ?limit=: of the stores on the
		// page) and the recent job failures.
		Health []jobs.HealthCondition `json:"health"`
		At     time.Time              `json:"at"`
		// With ?limit=: how many stores there are, the cursor of the next
		// page ("" on the last), and how many queues there are (listed in
		// queues only when at most 50; asynqmon at /monitoring lists all);
		// nodes then carry no info (GET /api/nodes has it), schedules no
		// store lists, and when more than 50 nodes publish schedules they
		// come as schedule_groups instead (GET /api/schedules has each).
		StoresTotal    *int            `json:"stores_total,omitempty"`
		NextCursor     *string         `json:"next_cursor,omitempty"`
		QueuesTotal    *int            `json:"queues_total,omitempty"`
		ScheduleGroups []scheduleGroup `json:"schedule_groups,omitempty"`
	}
	errorAnswer struct {
		Error   string `json:"error"` // the stable code, e.g. unknown_store
		Message string `json:"message"`
	}
	healthAnswer struct {
		Status string `json:"status"`
	}
	readyAnswer struct {
		Ready  bool              `json:"ready"`
		Checks map[string]string `json:"checks"`
	}
	pushKeyAnswer struct {
		PublicKey string `json:"public_key"` // base64url, the applicationServerKey
	}
	pushUnsubscribeBody struct {
		Endpoint string `json:"endpoint"` // or ?endpoint=
	}
	pushSubscribed struct {
		ID string `json:"id"`
	}
	pushUnsubscribed struct {
		ID      string `json:"id"`
		Deleted bool   `json:"deleted"`
	}
)

// component is one named schema: a request body (unknown fields
// refused, as decodeBody does; only the fields in required are needed) or
// an answer.
type component struct {
	name     string
	t        reflect.Type
	request  bool
	required []string
}

var components = []component{
	{name: "CompactBody", t: reflect.TypeFor[compactBody](), request: true},
	{name: "VerifyBody", t: reflect.TypeFor[verifyBody](), request: true},
	{name: "RestoreBody", t: reflect.TypeFor[restoreBody](), request: true},
	{name: "DrillBody", t: reflect.TypeFor[drillBody](), request: true},
	{name: "BackupBody", t: reflect.TypeFor[backupBody](), request: true},
	{name: "AdoptBody", t: reflect.TypeFor[adoptBody](), request: true},
	{name: "EmptyBody", t: reflect.TypeFor[struct{}](), request: true},
	{name: "Enqueued", t: reflect.TypeFor[enqueued]()},
	{name: "Batch", t: reflect.TypeFor[batchAnswer]()},
	{name: "Job", t: reflect.TypeFor[jobs.Record]()},
	{name: "JobList", t: reflect.TypeFor[jobList]()},
	{name: "HistoryEntry", t: reflect.TypeFor[jobs.HistoryEntry]()},
	{name: "HistoryPage", t: reflect.TypeFor[historyPage]()},
	{name: "Store", t: reflect.TypeFor[jobs.StoreView]()},
	{name: "StoreList", t: reflect.TypeFor[storeList]()},
	{name: "Backup", t: reflect.TypeFor[jobs.BackupSummary]()},
	{name: "StoreStats", t: reflect.TypeFor[jobs.StoreStats]()},
	{name: "CompactResult", t: reflect.TypeFor[jobs.CompactResult]()},
	{name: "BackupResult", t: reflect.TypeFor[jobs.BackupResult]()},
	{name: "VerifyResult", t: reflect.TypeFor[jobs.VerifyResult]()},
	{name: "RestoreResult", t: reflect.TypeFor[jobs.RestoreResult]()},
	{name: "StoreBackups", t: reflect.TypeFor[storeBackups]()},
	{name: "PauseState", t: reflect.TypeFor[pauseState]()},
	{name: "Schedules", t: reflect.TypeFor[scheduleList]()},
	{name: "NodeList", t: reflect.TypeFor[nodeList]()},
	{name: "Dashboard", t: reflect.TypeFor[dashboardAnswer]()},
	{name: "Error", t: reflect.TypeFor[errorAnswer]()},
	{name: "Health", t: reflect.TypeFor[healthAnswer]()},
	{name: "Ready", t: reflect.TypeFor[readyAnswer]()},
	{name: "PushKey", t: reflect.TypeFor[pushKeyAnswer]()},
	{name: "PushSubscription", t: reflect.TypeFor[jobs.PushSubscription](), request: true, required: []string{"endpoint", "keys"}},
	{name: "PushSubscribed", t: reflect.TypeFor[pushSubscribed]()},
	{name: "PushUnsubscribe", t: reflect.TypeFor[pushUnsubscribeBody](), request: true},
	{name: "PushUnsubscribed", t: reflect.TypeFor[pushUnsubscribed]()},
}

// ignoredBody is the request body of a POST that does not read its body.
var ignoredBody = map[string]any{"description": "Not read: any body, or none, is the same."}

var (
	timeType      = reflect.TypeFor[time.Time]()
	rawType       = reflect.TypeFor[json.RawMessage]()
	marshalerType = reflect.TypeFor[json.Marshaler]()
)

// enums are the string types with a closed set of values.
var enums = map[reflect.Type][]string{
	reflect.TypeFor[jobs.Kind]():           names(jobs.Kinds),
	reflect.TypeFor[jobs.StoreState]():     names(jobs.StoreStates),
	reflect.TypeFor[jobs.CompactOutcome](): names([]jobs.CompactOutcome{jobs.OutcomeCompacted, jobs.OutcomeSkipped, jobs.OutcomeDryRun}),
}

func names[S ~string](xs []S) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = string(x)
	}
	return out
}

// kept names the JSON a Go type keeps raw, by the types it holds: a job's
// result is one of the result types, by the job's kind.
var kept = map[keptField]map[string]any{
	{reflect.TypeFor[jobs.Record](), "Result"}: resultSchema,
}

type keptField struct {
	t     reflect.Type
	field string
}

var resultSchema = map[string]any{
	"description": "The job's result, by kind: CompactResult, BackupResult, VerifyResult or RestoreResult.",
	"anyOf":       []any{schemaRef("CompactResult"), schemaRef("BackupResult"), schemaRef("VerifyResult"), schemaRef("RestoreResult")},
}

// componentSchemas returns every component's schema; a component used
// inside another is a $ref there.
func componentSchemas() map[string]any {
	refs := map[reflect.Type]string{}
	for _, c := range components {
		if !c.request && c.t.Kind() == reflect.Struct && c.t.Name() != "" {
			refs[c.t] = c.name
		}
	}
	out := map[string]any{}
	for _, c := range components {
		s := schemaGen{refs: refs, request: c.request}.object(c.t)
		if c.required != nil {
			s["required"] = c.required
		}
		out[c.name] = s
	}
	return out
}

// requestBody documents a route's request body, component name.
func requestBody(name string) map[string]any {
	if name == ignored {
		return map[string]any{"required": false, "content": jsonContent(ignoredBody)}
	}
	i := slices.IndexFunc(components, func(c component) bool { return c.name == name })
	if i >= 0 && components[i].required != nil {
		return map[string]any{"required": true, "description": "Unknown fields are a 400.", "content": jsonContent(schemaRef(name))}
	}
	return map[string]any{"required": false, "description": "Optional: no body is the same as {}. Unknown fields are a 400.",
		"content": jsonContent(schemaRef(name))}
}

func jsonContent(schema map[string]any) map[string]any {
	return map[string]any{"application/json": map[string]any{"schema": schema}}
}

func schemaRef(name string) map[string]any {
	return map[string]any{"$ref": "#/components/schemas/" + name}
}

type schemaGen struct {
	refs    map[reflect.Type]string
	request bool
}

// of returns the schema of what encoding/json makes of a t.
func (g schemaGen) of(t reflect.Type) map[string]any {
	if name, ok := g.refs[t]; ok {
		return schemaRef(name)
	}
	switch t {
	case timeType:
		return map[string]any{"type": "string", "format": "date-time"}
	case rawType:
		return map[string]any{} // any JSON value
	}
	switch t.Kind() {
	case reflect.Pointer:
		s := g.of(t.Elem())
		if _, ref := s["$ref"]; !ref {
			s["nullable"] = true
		}
		return s
	case reflect.String:
		s := map[string]any{"type": "string"}
		if e, ok := enums[t]; ok {
			s["enum"] = e
		}
		return s
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return map[string]any{"type": "integer", "format": "int64"}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return map[string]any{"type": "integer", "format": "int64", "minimum": 0}
	case reflect.Float32, reflect.Float64:
		return map[string]any{"type": "number"}
	case reflect.Slice, reflect.Array:
		return map[string]any{"type": "array", "items": g.of(t.Elem())}
	case reflect.Map:
		return map[string]any{"type": "object", "additionalProperties": g.of(t.Elem())}
	case reflect.Struct:
		return g.object(t)
	}
	return map[string]any{}
}

// object is a struct's schema: its JSON fields, embedded structs' fields
// promoted, and the fields that are always present (no omitempty or
// omitzero) required. A request body requires nothing and refuses unknown
// fields. A type with its own MarshalJSON passes more through: its fields
// are described, none required.
func (g schemaGen) object(t reflect.Type) map[string]any {
	props := map[string]any{}
	var required []string
	g.fields(t, props, &required)
	s := map[string]any{"type": "object", "properties": props}
	custom := t.Implements(marshalerType)
	switch {
	case g.request:
		s["additionalProperties"] = false
	case custom:
		s["additionalProperties"] = true
	case len(required) > 0:
		s["required"] = required
	}
	return s
}

func (g schemaGen) fields(t reflect.Type, props map[string]any, required *[]string) {
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct {
			g.fields(f.Type, props, required)
			continue
		}
		if f.Anonymous && name == "" && f.Type.Kind() == reflect.Pointer && f.Type.Elem().Kind() == reflect.Struct {
			var none []string // a nil embedded pointer writes none of its fields
			g.fields(f.Type.Elem(), props, &none)
			continue
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		if k, ok := kept[keptField{t, f.Name}]; ok {
			props[name] = k
		} else {
			props[name] = g.of(f.Type)
		}
		if !strings.Contains(opts, "omitempty") && !strings.Contains(opts, "omitzero") {
			*required = append(*required, name)
		}
	}
}
