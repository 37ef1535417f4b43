package api

import (
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"github.com/gin-gonic/gin"
)

// routeDoc documents one route; a test checks that the documented routes
// and the registered ones are the same set.
type routeDoc struct {
	Method, Path, Role, Summary string
	Responses                   []int
}

var documented = []routeDoc{
	{"POST", "/api/admin/compact", "operator", "Compact every store: one job per store under a batch id; body {force?, dry_run?}", []int{202, 400, 401, 403, 413, 415, 503}},
	{"POST", "/api/admin/compact/:store", "operator", "Compact one store; body {force?, dry_run?}", []int{202, 400, 401, 403, 404, 413, 415, 503}},
	{"POST", "/api/admin/backup", "operator", "Back up every store; body {reencrypt?}", []int{202, 400, 401, 403, 415, 503}},
	{"POST", "/api/admin/backup/:store", "operator", "Back up one store; body {reencrypt?}: then rewrite its backups on every encrypted backup target for the current recipients (needs --backup-identity on its node); 409 nothing_to_reencrypt when its node's published status shows no encrypted target", []int{202, 400, 401, 403, 404, 409, 415, 503}},
	{"POST", "/api/admin/verify", "operator", "Verify every store; body {deep?}", []int{202, 400, 401, 403, 415, 503}},
	{"POST", "/api/admin/verify/:store", "operator", "Verify one store and its newest backup; body {deep?}", []int{202, 400, 401, 403, 404, 415, 503}},
	{"POST", "/api/admin/drill", "operator", "Drill every store: restore a backup of each into a scratch directory on its node (never the live store) and prove it (hashes, fingerprint, CheckLevels); body {target?, backup_id?}", []int{202, 400, 401, 403, 415, 503}},
	{"POST", "/api/admin/drill/:store", "operator", "Drill one store; body {target?, backup_id?} (default: its newest backup, from each backup target in turn, or the local backups when there is none), or {at} (RFC 3339) to prove it restorable to that moment (the backup a restore to it would use plus the shipped commit log, replayed in the scratch copy); 404 unknown_target when the store's node has no such target; for at, as for a restore to a moment: 409 not_shipping, before_log_start or store_unknown_state", []int{202, 400, 401, 403, 404, 409, 415, 503}},
	{"POST", "/api/admin/restore/:store", "operator", "Restore a store; body {backup_id?} (empty: the newest usable backup: verified and not marked bad), or {target, backup_id?} to fetch it from a backup target, or {at} (RFC 3339) to restore it as it was at that moment: the newest backup holding nothing committed after it plus the shipped commit log up to it (the job's result names the last write included); 409 no_backup when the named backup, or every backup, is not usable (named or not, a backup never verified is refused); 409 not_shipping for at when the store's node does not ship its commit log, 409 before_log_start for at before the store's commit log starts (its status's log_start); 409 store_unknown_state until its owner has published its state", []int{202, 400, 401, 403, 404, 409, 415, 503}},
	{"POST", "/api/admin/adopt/:store", "operator", "Adopt a store whose machine is gone: the node the body names makes it from a backup target; body {node, target, backup_id?, force?}. 404 unknown_node; 409 node_down when that node is not up, store_exists when it has the store, store_held while the store's owner may still serve it (its node is up, or its lease is held and force was not given); 409 restore_in_progress while a restore or adoption of it is in flight. The adopter's claim takes a new fencing token and pins the store to it: the old owner, back, holds it as lost; jobs queued for it fail store_moved", []int{202, 400, 401, 403, 404, 409, 415, 503}},
	{"GET", "/api/jobs", "viewer", "Jobs in flight, or a batch's jobs (?batch=), newest first; filters store, kind, state; ?limit= (1..1000) pages them, the next page from ?cursor=<next_cursor>", []int{200, 400, 401, 503}},
	{"GET", "/api/jobs/:id", "viewer", "A job's record", []int{200, 401, 404, 503}},
	{"DELETE", "/api/jobs/:id", "operator", "Cancel a job (final); 409 job_finished when it has ended, 409 not_cancelable for a restore that has started (it may already have replaced the store, and runs to its end)", []int{200, 401, 403, 404, 409, 415, 503}},
	{"GET", "/api/history", "viewer", "Finished jobs newest first; store, kind, limit (1–500), before=<id> (400 bad_cursor when it is not an entry id); filtered views read at most limit entries", []int{200, 400, 401, 503}},
	{"GET", "/api/stores", "viewer", "Every store: owner, node up, paused, stats, backups (without their files: see /api/stores/{store}/backups), health. With limit (1–1000, default 100), cursor (next_cursor of the page before), node, state or health (ok, unhealthy or a condition kind): one page in name order, with next_cursor (\"\" after the last) and total; a page reads at most 5000 stores' status, so with a rare filter it may hold fewer than limit and still go on", []int{200, 400, 401, 503}},
	{"GET", "/api/stores/:store", "viewer", "One store", []int{200, 401, 404, 503}},
	{"GET", "/api/stores/:store/backups", "viewer", "A store's backups, newest first, with their files", []int{200, 401, 404, 503}},
	{"POST", "/api/stores/:store/pause", "operator", "Pause scheduled and automatic jobs of a store", []int{200, 401, 403, 404, 415, 503}},
	{"POST", "/api/stores/:store/resume", "operator", "Resume them", []int{200, 401, 403, 404, 415, 503}},
	{"GET", "/api/schedules", "viewer", "Each node's schedules with next runs; paused stores", []int{200, 401, 503}},
	{"GET", "/api/nodes", "viewer", "Every node that has run, up or down, with its last heartbeat (its stores, the stores it lost, its version); ?node= answers one node (404 unknown_node)", []int{200, 401, 404, 503}},
	{"GET", "/api/dashboard", "viewer", "One snapshot: stores, recent history, queues, schedules, nodes, health; ?limit= (1..1000) gives the first page of stores only (with stores_total and next_cursor, the health of that page, the queues when at most 50): what the dashboard page reads, whatever the number of stores", []int{200, 400, 401, 503}},
	{"GET", "/api/push/key", "viewer", "Web Push: the VAPID public key (applicationServerKey) as {public_key} (base64url)", []int{200, 401, 503}},
	{"POST", "/api/push/subscriptions", "viewer", "Web Push: subscribe a browser; body its PushSubscription JSON {endpoint, keys:{p256dh, auth}}; 201 {id}; the endpoint must be https to a public address (400 push_endpoint_refused); a subscription belongs to the token that made it; 409 too_many_subscriptions past 8 per token", []int{201, 400, 401, 403, 409, 413, 415, 503}},
	{"DELETE", "/api/push/subscriptions", "viewer", "Web Push: unsubscribe; body {endpoint} or ?endpoint=", []int{200, 400, 401, 403, 404, 415, 503}},
	{"GET", "/api/openapi.json", "open", "This document", []int{200}},
	{"GET", "/ws", "viewer", "Events as JSON text frames; store, job, kind (repeatable), since=<event id>; token by header or ?token=. Control frames: {\"type\":\"stream.live\"} once subscribed (after the replay), stream.gap {since}, stream.dropped {count}. 400 too_many_filters past 100 filter values, 429 too_many_watchers past 64 per token on this process, 403 cross_origin for a foreign Origin", []int{101, 400, 401, 403, 429}},
	{"GET", "/metrics", "open", "Prometheus metrics from a snapshot at most a few seconds old; open, or the metrics token as Bearer when --metrics-token is set", []int{200, 401}},
	{"GET", "/healthz", "open", "The process is up", []int{200}},
	{"GET", "/", "open", "The dashboard page (it asks for a token; its files are under /ui/)", []int{200}},
	{"GET", "/readyz", "open", "Redis is reachable and this process's components are healthy", []int{200, 503}},
}

// bodies names the schemas (components.schemas) of a documented route's
// JSON request body and of its answers by status, keyed "METHOD path" as in
// documented. Every POST has a request body here (a test checks it); every
// status from 400 up answers Error.
var bodies = map[string]routeBodies{
	"POST /api/admin/compact":        {Request: "CompactBody", Answers: map[int]string{202: "Batch"}},
	"POST /api/admin/compact/:store": {Request: "CompactBody", Answers: map[int]string{202: "Enqueued"}},
	"POST /api/admin/backup":         {Request: "BackupBody", Answers: map[int]string{202: "Batch"}},
	"POST /api/admin/backup/:store":  {Request: "BackupBody", Answers: map[int]string{202: "Enqueued"}},
	"POST /api/admin/verify":         {Request: "VerifyBody", Answers: map[int]string{202: "Batch"}},
	"POST /api/admin/verify/:store":  {Request: "VerifyBody", Answers: map[int]string{202: "Enqueued"}},
	"POST /api/admin/drill":          {Request: "DrillBody", Answers: map[int]string{202: "Batch"}},
	"POST /api/admin/drill/:store":   {Request: "DrillBody", Answers: map[int]string{202: "Enqueued"}},
	"POST /api/admin/restore/:store": {Request: "RestoreBody", Answers: map[int]string{202: "Enqueued"}},
	"POST /api/admin/adopt/:store":   {Request: "AdoptBody", Answers: map[int]string{202: "Enqueued"}},
	"GET /api/jobs":                  {Answers: map[int]string{200: "JobList"}},
	"GET /api/jobs/:id":              {Answers: map[int]string{200: "Job"}},
	"DELETE /api/jobs/:id":           {Answers: map[int]string{200: "Job"}},
	"GET /api/history":               {Answers: map[int]string{200: "HistoryPage"}},
	"GET /api/stores":                {Answers: map[int]string{200: "StoreList"}},
	"GET /api/stores/:store":         {Answers: map[int]string{200: "Store"}},
	"GET /api/stores/:store/backups": {Answers: map[int]string{200: "StoreBackups"}},
	"POST /api/stores/:store/pause":  {Request: "EmptyBody", Answers: map[int]string{200: "PauseState"}},
	"POST /api/stores/:store/resume": {Request: "EmptyBody", Answers: map[int]string{200: "PauseState"}},
	"GET /api/schedules":             {Answers: map[int]string{200: "Schedules"}},
	"GET /api/nodes":                 {Answers: map[int]string{200: "NodeList"}},
	"GET /api/dashboard":             {Answers: map[int]string{200: "Dashboard"}},
	"GET /api/push/key":              {Answers: map[int]string{200: "PushKey"}},
	"POST /api/push/subscriptions":   {Request: "PushSubscription", Answers: map[int]string{201: "PushSubscribed"}},
	"DELETE /api/push/subscriptions": {Request: "PushUnsubscribe", Answers: map[int]string{200: "PushUnsubscribed"}},
	"GET /healthz":                   {Answers: map[int]string{200: "Health"}},
	"GET /readyz":                    {Answers: map[int]string{200: "Ready", 503: "Ready"}},
}

// routeBodies names a route's schemas: Request is a component name, or
// ignored for a POST that does not read its body.
type routeBodies struct {
	Request string
	Answers map[int]string
}

const ignored = "-"

var pathParam = regexp.MustCompile(`:([a-z_]+)`)

func (s *Server) openAPI(c *gin.Context) { c.JSON(http.StatusOK, openAPIDoc()) }

// openAPIDoc is the OpenAPI 3.0 document: documented's routes, with the
// schemas bodies names.
var openAPIDoc = sync.OnceValue(func() map[string]any {
	paths := map[string]map[string]any{}
	for _, r := range documented {
		p := pathParam.ReplaceAllString(r.Path, "{$1}")
		if paths[p] == nil {
			paths[p] = map[string]any{}
		}
		b := bodies[r.Method+" "+r.Path]
		resp := map[string]any{}
		for _, code := range r.Responses {
			d := map[string]any{"description": http.StatusText(code)}
			name := b.Answers[code]
			if name == "" && code >= 400 {
				name = "Error"
			}
			if name != "" {
				d["content"] = jsonContent(schemaRef(name))
			}
			resp[strconv.Itoa(code)] = d
		}
		op := map[string]any{"summary": r.Summary, "responses": resp}
		if b.Request != "" {
			op["requestBody"] = requestBody(b.Request)
		}
		if r.Role != "open" {
			op["security"] = []map[string][]string{{"bearer": {}}}
			op["x-role"] = r.Role
		}
		var params []map[string]any
		for _, m := range pathParam.FindAllStringSubmatch(r.Path, -1) {
			params = append(params, map[string]any{"name": m[1], "in": "path", "required": true, "schema": map[string]string{"type": "string"}})
		}
		if params != nil {
			op["parameters"] = params
		}
		paths[p][strings.ToLower(r.Method)] = op
	}
	return map[string]any{
		"openapi": "3.0.3",
		"info":    map[string]any{"title": "storekeeper", "version": "1"},
		"paths":   paths,
		"components": map[string]any{
			"securitySchemes": map[string]any{"bearer": map[string]any{"type": "http", "scheme": "bearer"}},
			"schemas":         componentSchemas(),
		},
	}
})

// Routes lists the registered routes as "METHOD /path/{param}", as the
// OpenAPI document names them; asynqmon's mount and the dashboard page's
// files (/ui/) are not part of the API.
func Routes(s *Server) []string {
	var out []string
	for _, r := range s.engine.Routes() {
		if strings.HasPrefix(r.Path, "/monitoring") || strings.HasPrefix(r.Path, "/ui/") {
			continue
		}
		out = append(out, r.Method+" "+pathParam.ReplaceAllString(r.Path, "{$1}"))
	}
	return out
}
