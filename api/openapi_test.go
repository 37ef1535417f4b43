package api

import (
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"

	"storekeeper/internal/reflectfill"
	"storekeeper/jobs"
)

// fill sets every field of v, recursively, to a non-zero value
// (reflectfill), a job's result (a json.RawMessage) to a restore's.
func fill(v reflect.Value) {
	reflectfill.Fill(v, func(v reflect.Value) bool {
		if v.Type() != reflect.TypeFor[json.RawMessage]() {
			return false
		}
		r := jobs.RestoreResult{Replayed: true, BackupID: "x", Quarantine: "x", Log: &jobs.RestoredLog{}}
		fill(reflect.ValueOf(&r.Timing).Elem())
		fill(reflect.ValueOf(r.Log).Elem())
		b, _ := json.Marshal(r)
		v.SetBytes(b)
		return true
	})
}

// The schemas list exactly the fields a fully populated value of each Go
// type has in JSON, at every depth, each with its JSON type: the job
// record's, the other answers' and bodies', and the cross-process types
// of package jobs (a store's published stats and backups, the results).
func TestSchemasListEveryJSONField(t *testing.T) {
	schemas := componentSchemas()
	for _, c := range []struct {
		schema string
		v      any
	}{
		{"Job", &jobs.Record{}},
		{"Enqueued", &enqueued{}},
		{"HistoryEntry", &jobs.HistoryEntry{}},
		{"Store", &jobs.StoreView{}},
		{"StoreList", &storeList{}},
		{"StoreBackups", &storeBackups{}},
		{"Backup", &jobs.BackupSummary{}},
		{"StoreStats", &jobs.StoreStats{}},
		{"CompactResult", &jobs.CompactResult{}},
		{"BackupResult", &jobs.BackupResult{}},
		{"VerifyResult", &jobs.VerifyResult{}},
		{"RestoreResult", &jobs.RestoreResult{}},
		{"CompactBody", &compactBody{}},
		{"VerifyBody", &verifyBody{}},
		{"RestoreBody", &restoreBody{}},
		{"Batch", &batchAnswer{}},
		{"HistoryPage", &historyPage{}},
	} {
		fill(reflect.ValueOf(c.v).Elem())
		b, err := json.Marshal(c.v)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		for _, p := range schemaProblems(schemas, c.schema, schemas[c.schema], m) {
			t.Error(p)
		}
		// What is left out when empty is not required; the rest is.
		s := schemas[c.schema].(map[string]any)
		if req, ok := s["required"].([]string); ok {
			empty, _ := json.Marshal(reflect.New(reflect.TypeOf(c.v).Elem()).Interface())
			var e map[string]any
			_ = json.Unmarshal(empty, &e)
			if got, want := slices.Sorted(slices.Values(req)), slices.Sorted(maps.Keys(e)); !slices.Equal(got, want) {
				t.Errorf("schema %s requires %v; the zero %T has %v", c.schema, got, c.v, want)
			}
		}
	}
}

// Every JSON kept raw that the schemas describe by its shape is a field
// that exists, kept raw.
func TestKeptFieldsExist(t *testing.T) {
	for k := range kept {
		if f, ok := k.t.FieldByName(k.field); !ok || f.Type != reflect.TypeFor[json.RawMessage]() {
			t.Errorf("%s has no json.RawMessage field %s", k.t, k.field)
		}
	}
}

// schemaProblems checks a JSON value against a schema both ways: an
// object has exactly the properties the schema lists, and every value has
// the schema's JSON type. A schema of any JSON checks nothing; one that is
// any of several (a job's result) must fit one of them.
func schemaProblems(schemas map[string]any, at string, schema any, v any) []string {
	s := schema.(map[string]any)
	if ref, ok := s["$ref"].(string); ok {
		return schemaProblems(schemas, at, schemas[strings.TrimPrefix(ref, "#/components/schemas/")], v)
	}
	if alts, ok := s["anyOf"].([]any); ok {
		for _, alt := range alts {
			if schemaProblems(schemas, at, alt, v) == nil {
				return nil
			}
		}
		return []string{fmt.Sprintf("%s: %v fits none of %v", at, v, alts)}
	}
	want, _ := s["type"].(string)
	var got string
	switch x := v.(type) {
	case map[string]any:
		got = "object"
	case []any:
		got = "array"
	case string:
		got = "string"
	case float64:
		got = "number"
		if x == float64(int64(x)) {
			got = "integer"
		}
	case bool:
		got = "boolean"
	case nil:
		got = "null"
	}
	switch {
	case want == "":
		return nil // any JSON
	case got == "null" && s["nullable"] == true:
		return nil
	case got != want && !(want == "number" && got == "integer"):
		return []string{fmt.Sprintf("%s: schema type %s, JSON %s (%v)", at, want, got, v)}
	}
	var out []string
	switch x := v.(type) {
	case map[string]any:
		props, _ := s["properties"].(map[string]any)
		if ap, ok := s["additionalProperties"].(map[string]any); ok && len(props) == 0 {
			for k, fv := range x {
				out = append(out, schemaProblems(schemas, at+"."+k, ap, fv)...)
			}
			return out
		}
		if got, want := slices.Sorted(maps.Keys(x)), slices.Sorted(maps.Keys(props)); !slices.Equal(got, want) {
			out = append(out, fmt.Sprintf("%s: the schema lists %v; the JSON has %v", at, want, got))
		}
		for k, fv := range x {
			if ps, ok := props[k]; ok {
				out = append(out, schemaProblems(schemas, at+"."+k, ps, fv)...)
			}
		}
	case []any:
		for _, e := range x {
			out = append(out, schemaProblems(schemas, at+"[]", s["items"], e)...)
		}
	}
	return out
}

// Request bodies refuse unknown fields, as decodeBody reads them, and
// require only what the handler needs; bodies names documented routes,
// statuses and schemas only.
func TestRequestBodySchemas(t *testing.T) {
	schemas := componentSchemas()
	for _, c := range components {
		if !c.request {
			continue
		}
		s := schemas[c.name].(map[string]any)
		req, _ := s["required"].([]string)
		if s["additionalProperties"] != false || !slices.Equal(req, c.required) {
			t.Errorf("request body %s: %v", c.name, s)
		}
	}
	for route, b := range bodies {
		i := slices.IndexFunc(documented, func(r routeDoc) bool { return r.Method+" "+r.Path == route })
		if i < 0 {
			t.Errorf("bodies has %s, which is not documented", route)
			continue
		}
		if b.Request != "" && b.Request != ignored && schemas[b.Request] == nil {
			t.Errorf("%s: no schema %s", route, b.Request)
		}
		for code, name := range b.Answers {
			if !slices.Contains(documented[i].Responses, code) || schemas[name] == nil {
				t.Errorf("%s: answer %d %s is not a documented status with a schema", route, code, name)
			}
		}
	}
}
