package api

import (
	"encoding/json"
	"maps"
	"reflect"
	"slices"
	"testing"
	"time"

	"storekeeper/jobs"
)

// fill sets every field of v, recursively, to a non-zero value, so that
// encoding/json writes every field, omitempty ones included.
func fill(v reflect.Value) {
	switch {
	case v.Type() == reflect.TypeFor[time.Time]():
		v.Set(reflect.ValueOf(time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)))
		return
	case v.Type() == reflect.TypeFor[json.RawMessage]():
		v.SetBytes([]byte(`{"x":1}`))
		return
	case v.Type() == reflect.TypeFor[backupInfo](): // passes its raw JSON through
		var b backupInfo
		_ = json.Unmarshal([]byte(`{"id":"x","created_at":"2024-01-02T03:04:05Z","verified_at":"2024-01-02T03:04:05Z","bad":true}`), &b)
		v.Set(reflect.ValueOf(b))
		return
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString("x")
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(1)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(1)
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(v.Elem())
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 1, 1))
		fill(v.Index(0))
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fill(v.Field(i))
			}
		}
	}
}

// The schemas list exactly the fields a fully populated value of each Go
// type has in JSON: the job record's, and the other answers' and bodies'.
func TestSchemasListEveryJSONField(t *testing.T) {
	schemas := componentSchemas()
	for _, c := range []struct {
		schema string
		v      any
	}{
		{"Job", &jobs.Record{}},
		{"Enqueued", &enqueued{}},
		{"HistoryEntry", &jobs.HistoryEntry{}},
		{"Store", &storeView{}},
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
		s := schemas[c.schema].(map[string]any)
		got := slices.Sorted(maps.Keys(s["properties"].(map[string]any)))
		want := slices.Sorted(maps.Keys(m))
		if !slices.Equal(got, want) {
			t.Errorf("schema %s lists %v; the JSON of %T has %v", c.schema, got, c.v, want)
		}
		// What is left out when empty is not required; the rest is.
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
