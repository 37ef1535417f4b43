package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"sync"
)

// Strict request bodies. encoding/json matches an object's keys to a
// struct's fields case-insensitively ({"FORCE": true} sets force) and
// lets the last of duplicate keys win ({"force": false, "force": true}),
// so a body can mean one thing to the API and another to whatever
// checked it on the way. decodeStrict first walks the body's tokens
// against the target type: the body is one JSON object, every key is a
// field's exact name, no object has a key twice, nesting is bounded; only
// then does encoding/json decode it (unknown fields refused), which can
// no longer be surprised.

const maxJSONDepth = 32

var unmarshalerType = reflect.TypeFor[json.Unmarshaler]()

// decodeStrict decodes data, one JSON object, into v (a pointer to a
// struct), strictly; every error is a 400 invalid_request.
func decodeStrict(data []byte, v any) error {
	t := reflect.TypeOf(v)
	if t == nil || t.Kind() != reflect.Pointer {
		return fmt.Errorf("api: decodeStrict needs a pointer, not %T", v)
	}
	if err := checkStrict(data, t.Elem()); err != nil {
		return invalid("body: " + err.Error())
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return invalid("body: " + err.Error())
	}
	return nil
}

// checkStrict checks data against type t without decoding it.
func checkStrict(data []byte, t reflect.Type) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	first, err := dec.Token()
	if err != nil {
		return syntaxError(err)
	}
	if d, ok := first.(json.Delim); !ok || d != '{' {
		return errors.New("want one JSON object")
	}
	if err := walkObject(dec, t, 1); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("more than one JSON value")
	}
	return nil
}

func syntaxError(err error) error {
	if err == io.EOF {
		return errors.New("unexpected end of JSON input")
	}
	return err
}

// shape is the type whose keys are checked, nil where anything goes (an
// interface, a json.Unmarshaler, a type mismatch encoding/json reports).
func shape(t reflect.Type) reflect.Type {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil || t.Kind() == reflect.Interface || t.Implements(unmarshalerType) || reflect.PointerTo(t).Implements(unmarshalerType) {
		return nil
	}
	return t
}

// walkValue checks the value whose first token is next.
func walkValue(dec *json.Decoder, t reflect.Type, depth int) error {
	tok, err := dec.Token()
	if err != nil {
		return syntaxError(err)
	}
	d, ok := tok.(json.Delim)
	if !ok {
		return nil // a scalar: encoding/json checks its type
	}
	if depth >= maxJSONDepth {
		return fmt.Errorf("nested deeper than %d", maxJSONDepth)
	}
	t = shape(t)
	switch d {
	case '{':
		return walkObject(dec, t, depth+1)
	case '[':
		var elem reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			elem = t.Elem()
		}
		for dec.More() {
			if err := walkValue(dec, elem, depth+1); err != nil {
				return err
			}
		}
		_, err := dec.Token() // ]
		return syntaxError(err)
	}
	return fmt.Errorf("unexpected %v", d)
}

// walkObject checks an object's members after its '{', and its '}'.
func walkObject(dec *json.Decoder, t reflect.Type, depth int) error {
	t = shape(t)
	var fields map[string]reflect.Type
	var elem reflect.Type
	switch {
	case t == nil:
	case t.Kind() == reflect.Struct:
		fields = fieldsOf(t)
	case t.Kind() == reflect.Map:
		elem = t.Elem()
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return syntaxError(err)
		}
		key, ok := tok.(string)
		if !ok {
			return fmt.Errorf("object key %v is not a string", tok)
		}
		if seen[key] {
			return fmt.Errorf("key %q appears twice", key)
		}
		seen[key] = true
		ft := elem
		if fields != nil {
			var known bool
			if ft, known = fields[key]; !known {
				for name := range fields {
					if strings.EqualFold(name, key) {
						return fmt.Errorf("unknown field %q (keys are case-sensitive: %q)", key, name)
					}
				}
				return fmt.Errorf("unknown field %q", key)
			}
		}
		if err := walkValue(dec, ft, depth); err != nil {
			return err
		}
	}
	_, err := dec.Token() // }
	return syntaxError(err)
}

var fieldCache sync.Map // reflect.Type -> map[string]reflect.Type

// fieldsOf maps the JSON names of t's fields, as encoding/json names
// them (tag name, else the Go name; "-" left out; untagged embedded
// structs' fields promoted, the shallower one winning), to their types.
func fieldsOf(t reflect.Type) map[string]reflect.Type {
	if f, ok := fieldCache.Load(t); ok {
		return f.(map[string]reflect.Type)
	}
	out := map[string]reflect.Type{}
	collectFields(t, out, map[reflect.Type]bool{})
	fieldCache.Store(t, out)
	return out
}

func collectFields(t reflect.Type, out map[string]reflect.Type, visiting map[reflect.Type]bool) {
	if visiting[t] {
		return
	}
	visiting[t] = true
	defer delete(visiting, t)
	var embedded []reflect.Type
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				embedded = append(embedded, ft)
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	for _, et := range embedded {
		inner := map[string]reflect.Type{}
		collectFields(et, inner, visiting)
		for k, v := range inner {
			if _, taken := out[k]; !taken {
				out[k] = v
			}
		}
	}
}
