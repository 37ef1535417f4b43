package e2e

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"storekeeper/jobs"
)

// checkOpenAPIDoc checks the served document: valid JSON, every $ref
// resolving, a JSON request body schema on every POST, and live answers of
// every documented kind matching their schemas (no undocumented field, no
// required one missing, the types right).
func checkOpenAPIDoc(t *testing.T, e *env, raw []byte) {
	t.Helper()
	if !json.Valid(raw) {
		t.Fatalf("openapi.json is not valid JSON: %.200s", raw)
	}
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	refs := 0
	walk(doc, func(v map[string]any) {
		if r, ok := v["$ref"]; ok {
			refs++
			if _, err := resolve(doc, r); err != nil {
				t.Errorf("$ref %v: %v", r, err)
			}
		}
	})
	if refs == 0 {
		t.Fatal("no $ref in the document")
	}
	for p, ops := range doc["paths"].(map[string]any) {
		for m, op := range ops.(map[string]any) {
			if m != "post" {
				continue
			}
			schema, err := lookup(op, "requestBody", "content", "application/json", "schema")
			if err != nil || schema == nil {
				t.Errorf("POST %s has no JSON request body schema (api/openapi.go, bodies): %v", p, err)
			}
		}
	}

	// Live answers against their schemas.
	op := operatorToken
	enq := e.do("POST", "/api/admin/backup/orders", op, nil)
	job := enq.body["job_id"].(string)
	e.waitJob(job, jobs.StateSucceeded)
	cases := []struct {
		method, path, template string
		body                   any
		status                 int
	}{
		{"POST", "/api/admin/compact/orders", "/api/admin/compact/{store}", map[string]bool{"dry_run": true}, 202},
		{"POST", "/api/admin/compact", "/api/admin/compact", map[string]bool{"dry_run": true}, 202},
		{"POST", "/api/admin/verify/users", "/api/admin/verify/{store}", map[string]bool{"deep": true}, 202},
		{"POST", "/api/admin/restore/users", "/api/admin/restore/{store}", nil, 409},
		{"POST", "/api/admin/compact/orders", "/api/admin/compact/{store}", `{"color":"red"}`, 400},
		{"GET", "/api/jobs/" + job, "/api/jobs/{id}", nil, 200},
		{"GET", "/api/jobs", "/api/jobs", nil, 200},
		{"GET", "/api/history?limit=5", "/api/history", nil, 200},
		{"GET", "/api/stores", "/api/stores", nil, 200},
		{"GET", "/api/stores/orders", "/api/stores/{store}", nil, 200},
		{"GET", "/api/stores/orders/backups", "/api/stores/{store}/backups", nil, 200},
		{"GET", "/api/stores/nosuch", "/api/stores/{store}", nil, 404},
		{"POST", "/api/stores/users/pause", "/api/stores/{store}/pause", nil, 200},
		{"GET", "/api/schedules", "/api/schedules", nil, 200},
		{"GET", "/api/nodes", "/api/nodes", nil, 200},
		{"GET", "/api/nodes?node=nosuch", "/api/nodes", nil, 404},
		{"GET", "/api/dashboard", "/api/dashboard", nil, 200},
		{"POST", "/api/stores/users/resume", "/api/stores/{store}/resume", nil, 200},
		{"DELETE", "/api/jobs/" + job, "/api/jobs/{id}", nil, 409},
		{"GET", "/healthz", "/healthz", nil, 200},
		{"GET", "/readyz", "/readyz", nil, 200},
	}
	for _, c := range cases {
		a := e.do(c.method, c.path, op, c.body)
		name := c.method + " " + c.path
		if a.status != c.status {
			t.Errorf("%s: %d %s, want %d", name, a.status, a.raw, c.status)
			continue
		}
		schema, err := lookup(doc, "paths", c.template, strings.ToLower(c.method), "responses", strconv.Itoa(c.status), "content", "application/json", "schema")
		if err != nil {
			t.Errorf("%s: no schema for %d: %v", name, c.status, err)
			continue
		}
		var v any
		_ = json.Unmarshal(a.raw, &v)
		for _, p := range conform(doc, schema, v, "") {
			t.Errorf("%s answered %d with %s", name, c.status, p)
		}
	}
}

func walk(v any, f func(map[string]any)) {
	switch x := v.(type) {
	case map[string]any:
		f(x)
		for _, y := range x {
			walk(y, f)
		}
	case []any:
		for _, y := range x {
			walk(y, f)
		}
	}
}

// resolve follows a local $ref ("#/a/b").
func resolve(doc map[string]any, ref any) (any, error) {
	s, ok := ref.(string)
	if !ok || !strings.HasPrefix(s, "#/") {
		return nil, fmt.Errorf("not a local reference")
	}
	return lookup(doc, strings.Split(s[2:], "/")...)
}

func lookup(v any, keys ...string) (any, error) {
	for i, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%s is not an object", strings.Join(keys[:i], "/"))
		}
		if v, ok = m[k]; !ok {
			return nil, fmt.Errorf("no %s", strings.Join(keys[:i+1], "/"))
		}
	}
	return v, nil
}

// conform lists how v departs from schema. Stricter than OpenAPI on
// purpose: an object field the schema does not list is a finding unless
// additionalProperties allows it, so an answer cannot grow undocumented.
func conform(doc map[string]any, schema, v any, at string) []string {
	s, _ := schema.(map[string]any)
	if r, ok := s["$ref"]; ok {
		target, err := resolve(doc, r)
		if err != nil {
			return []string{at + ": " + err.Error()}
		}
		return conform(doc, target, v, at)
	}
	if v == nil && s["nullable"] == true {
		return nil
	}
	bad := func(format string, args ...any) []string {
		return []string{fmt.Sprintf("%s: "+format, append([]any{orRoot(at)}, args...)...)}
	}
	switch s["type"] {
	case nil:
		return nil // any JSON
	case "object":
		m, ok := v.(map[string]any)
		if !ok {
			return bad("%v is not an object", v)
		}
		var out []string
		for _, r := range asSlice(s["required"]) {
			if _, ok := m[r.(string)]; !ok {
				out = append(out, fmt.Sprintf("%s: required %s missing", orRoot(at), r))
			}
		}
		props, _ := s["properties"].(map[string]any)
		for k, fv := range m {
			if ps, ok := props[k]; ok {
				out = append(out, conform(doc, ps, fv, at+"."+k)...)
				continue
			}
			switch ap := s["additionalProperties"].(type) {
			case bool:
				if !ap {
					out = append(out, fmt.Sprintf("%s: field %s not allowed", orRoot(at), k))
				}
			case map[string]any:
				out = append(out, conform(doc, ap, fv, at+"."+k)...)
			default:
				out = append(out, fmt.Sprintf("%s: undocumented field %s", orRoot(at), k))
			}
		}
		return out
	case "array":
		xs, ok := v.([]any)
		if !ok {
			return bad("%v is not an array", v)
		}
		var out []string
		for i, x := range xs {
			out = append(out, conform(doc, s["items"], x, fmt.Sprintf("%s[%d]", at, i))...)
		}
		return out
	case "string":
		str, ok := v.(string)
		if !ok {
			return bad("%v is not a string", v)
		}
		if s["format"] == "date-time" {
			if _, err := time.Parse(time.RFC3339Nano, str); err != nil {
				return bad("%q is not a date-time", str)
			}
		}
		if enum := asSlice(s["enum"]); enum != nil && !slices.Contains(enum, any(str)) {
			return bad("%q is not one of %v", str, enum)
		}
	case "integer":
		f, ok := v.(float64)
		if !ok || f != math.Trunc(f) {
			return bad("%v is not an integer", v)
		}
	case "number":
		if _, ok := v.(float64); !ok {
			return bad("%v is not a number", v)
		}
	case "boolean":
		if _, ok := v.(bool); !ok {
			return bad("%v is not a boolean", v)
		}
	}
	return nil
}

func asSlice(v any) []any { s, _ := v.([]any); return s }

func orRoot(at string) string {
	if at == "" {
		return "the body"
	}
	return "the body" + at
}
