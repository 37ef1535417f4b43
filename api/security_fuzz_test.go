package api

import (
	"bytes"
	"encoding/json"
	"net/url"
	"reflect"
	"slices"
	"testing"

	"storekeeper/jobs"
)

// Fuzz targets of the request body decoder and of the origin check. Their
// seed corpora are in testdata/fuzz/<name>/: go test runs the seeds only;
// make fuzz explores, e.g. go test ./api -run '^$' -fuzz '^FuzzDecodeStrict$'.

// bodyTypes are the request bodies the API decodes.
var bodyTypes = []func() any{
	func() any { return &compactBody{} },
	func() any { return &verifyBody{} },
	func() any { return &restoreBody{} },
	func() any { return &struct{}{} },
	func() any { return &jobs.PushSubscription{} },
	func() any { return &pushUnsubscribeBody{} },
}

// topKeys lists the keys of data's top-level object in order, duplicates
// kept; ok is false when data is not one.
func topKeys(data []byte) (keys []string, ok bool) {
	dec := json.NewDecoder(bytes.NewReader(data))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, false
	}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, false
		}
		k, _ := t.(string)
		keys = append(keys, k)
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return nil, false
		}
	}
	return keys, true
}

// A body the strict decoder accepts is one JSON object that encoding/json
// (unknown fields refused) decodes to the same value, whose top-level keys
// are each an exact field name, none twice; a body it refuses is a 400
// invalid_request. It never panics.
func FuzzDecodeStrict(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, mk := range bodyTypes {
			v := mk()
			err := decodeStrict(data, v)
			if err != nil {
				if ae, ok := err.(*apiError); !ok || ae.status != 400 || ae.code != "invalid_request" {
					t.Fatalf("%q into %T: %v is not a 400 invalid_request", data, v, err)
				}
				continue
			}
			std := mk()
			dec := json.NewDecoder(bytes.NewReader(data))
			dec.DisallowUnknownFields()
			if err := dec.Decode(std); err != nil {
				t.Fatalf("%q into %T: accepted strictly, refused by encoding/json: %v", data, v, err)
			}
			if !reflect.DeepEqual(v, std) {
				t.Fatalf("%q into %T: strictly %+v, encoding/json %+v", data, v, v, std)
			}
			keys, ok := topKeys(data)
			if !ok {
				t.Fatalf("%q into %T: accepted, but not one JSON object", data, v)
			}
			names := fieldsOf(reflect.TypeOf(v).Elem())
			for i, k := range keys {
				if _, exact := names[k]; !exact {
					t.Fatalf("%q into %T: accepted the key %q, which is no field's exact name", data, v, k)
				}
				if slices.Contains(keys[:i], k) {
					t.Fatalf("%q into %T: accepted the key %q twice", data, v, k)
				}
			}
		}
	})
}

// An origin the check accepts is, canonically, the server's own or an
// allowed one, whatever the Host header says; the Host header never
// changes the answer. It never panics.
func FuzzCheckOrigin(f *testing.F) {
	rdb := testRedis(f)
	servers := []*Server{
		newSecServer(f, rdb, func(c *Config) { c.AllowedOrigins = []string{"https://ops.example.com"} }),
		newSecServer(f, rdb, func(c *Config) { c.Listen, c.TLS = "127.0.0.1:8443", true }),
		newSecServer(f, rdb, func(c *Config) { c.PublicURL = "https://sk.example.com" }),
	}
	f.Fuzz(func(t *testing.T, origin, host string, tlsOn bool) {
		for i, s := range servers {
			r := originRequest("POST", "127.0.0.1:8080", host, tlsOn, origin)
			got := s.checkOrigin(r)
			if alt := s.checkOrigin(originRequest("POST", "127.0.0.1:8080", "127.0.0.1:8080", tlsOn, origin)); alt != got {
				t.Fatalf("server %d, Origin %q: Host %q answers %v, the server's own Host %v", i, origin, host, got, alt)
			}
			if !got {
				continue
			}
			u, err := url.Parse(origin)
			if err != nil {
				t.Fatalf("server %d: accepted %q, which does not parse: %v", i, origin, err)
			}
			canon, ok := canonicalOrigin(u, false)
			if !ok || !s.origins[canon] && !slices.Contains(s.ownOrigins(r), canon) {
				t.Fatalf("server %d: accepted %q (%q), neither its own %v nor allowed %v", i, origin, canon, s.ownOrigins(r), s.origins)
			}
			if again, err := parseOrigin(canon, false); err != nil || again != canon {
				t.Fatalf("server %d: %q is canonically %q, which reads back as %q (%v)", i, origin, canon, again, err)
			}
		}
	})
}
