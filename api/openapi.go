package api

import (
	"net/http"
	"regexp"
	"strconv"
	"strings"

	"github.com/gin-gonic/gin"
)

// routeDoc documents one route; a test checks that the documented routes
// and the registered ones are the same set.
type routeDoc struct {
	Method, Path, Role, Summary string
	Responses                   []int
}

var documented = []routeDoc{
	{"POST", "/api/admin/compact", "operator", "Compact every store: one job per store under a batch id; body {force?, dry_run?}", []int{202, 400, 401, 403, 413, 503}},
	{"POST", "/api/admin/compact/:store", "operator", "Compact one store; body {force?, dry_run?}", []int{202, 400, 401, 403, 404, 413, 503}},
	{"POST", "/api/admin/backup", "operator", "Back up every store", []int{202, 400, 401, 403, 503}},
	{"POST", "/api/admin/backup/:store", "operator", "Back up one store", []int{202, 400, 401, 403, 404, 503}},
	{"POST", "/api/admin/verify", "operator", "Verify every store; body {deep?}", []int{202, 400, 401, 403, 503}},
	{"POST", "/api/admin/verify/:store", "operator", "Verify one store and its newest backup; body {deep?}", []int{202, 400, 401, 403, 404, 503}},
	{"POST", "/api/admin/restore/:store", "operator", "Restore a store; body {backup_id?} (empty: the newest verified backup)", []int{202, 400, 401, 403, 404, 409, 503}},
	{"GET", "/api/jobs", "viewer", "Jobs in flight, or a batch's jobs (?batch=); filters store, kind, state", []int{200, 400, 401, 503}},
	{"GET", "/api/jobs/:id", "viewer", "A job's record", []int{200, 401, 404, 503}},
	{"DELETE", "/api/jobs/:id", "operator", "Cancel a job (final)", []int{200, 401, 403, 404, 409, 503}},
	{"GET", "/api/history", "viewer", "Finished jobs newest first; store, kind, limit (1–500), before=<id>", []int{200, 400, 401, 503}},
	{"GET", "/api/stores", "viewer", "Every store: owner, node up, paused, stats, backups, health", []int{200, 401, 503}},
	{"GET", "/api/stores/:store", "viewer", "One store", []int{200, 401, 404, 503}},
	{"GET", "/api/stores/:store/backups", "viewer", "A store's backups, newest first", []int{200, 401, 404, 503}},
	{"POST", "/api/stores/:store/pause", "operator", "Pause scheduled and automatic jobs of a store", []int{200, 401, 403, 404, 503}},
	{"POST", "/api/stores/:store/resume", "operator", "Resume them", []int{200, 401, 403, 404, 503}},
	{"GET", "/api/schedules", "viewer", "Each node's schedules with next runs; paused stores", []int{200, 401, 503}},
	{"GET", "/api/dashboard", "viewer", "One snapshot: stores, recent history, queues, schedules, nodes, health", []int{200, 401, 503}},
	{"GET", "/api/openapi.json", "open", "This document", []int{200}},
	{"GET", "/ws", "viewer", "Events as JSON text frames; store, job, kind (repeatable), since=<event id>; token by header or ?token=", []int{101, 400, 401, 403}},
	{"GET", "/metrics", "open", "Prometheus metrics", []int{200}},
	{"GET", "/healthz", "open", "The process is up", []int{200}},
	{"GET", "/readyz", "open", "Redis is reachable and this process's components are healthy", []int{200, 503}},
}

var pathParam = regexp.MustCompile(`:([a-z_]+)`)

func (s *Server) openAPI(c *gin.Context) {
	paths := map[string]map[string]any{}
	for _, r := range documented {
		p := pathParam.ReplaceAllString(r.Path, "{$1}")
		if paths[p] == nil {
			paths[p] = map[string]any{}
		}
		resp := map[string]any{}
		for _, code := range r.Responses {
			resp[strconv.Itoa(code)] = map[string]any{"description": http.StatusText(code)}
		}
		op := map[string]any{"summary": r.Summary, "responses": resp}
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
	c.JSON(http.StatusOK, gin.H{
		"openapi": "3.0.3",
		"info":    gin.H{"title": "storekeeper", "version": "1"},
		"paths":   paths,
		"components": gin.H{"securitySchemes": gin.H{"bearer": gin.H{"type": "http", "scheme": "bearer"}},
			"schemas": gin.H{"Error": gin.H{"type": "object", "properties": gin.H{"error": gin.H{"type": "string"}, "message": gin.H{"type": "string"}}}}},
	})
}

// Routes lists the registered routes as "METHOD /path/{param}", as the
// OpenAPI document names them; asynqmon's mount is not part of the API.
func Routes(s *Server) []string {
	var out []string
	for _, r := range s.engine.Routes() {
		if strings.HasPrefix(r.Path, "/monitoring") {
			continue
		}
		out = append(out, r.Method+" "+pathParam.ReplaceAllString(r.Path, "{$1}"))
	}
	return out
}
