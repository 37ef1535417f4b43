// Package reflectfill sets every exported field of a value, recursively,
// to a non-zero value: for tests that prove every field of a type survives
// a trip (encoding/json writes each one, omitempty ones included; a
// conversion carries each one; a schema lists each one).
package reflectfill

import (
	"reflect"
	"time"
)

// At is the time every time.Time field is set to.
var At = time.Date(2026, 11, 22, 1, 2, 3, 0, time.UTC)

// Fill sets v. custom, when not nil, is asked first at every depth and
// returns true when it set v itself (a type Fill would fill wrongly, such
// as a json.RawMessage).
func Fill(v reflect.Value, custom func(reflect.Value) bool) {
	if custom != nil && custom(v) {
		return
	}
	if v.Type() == reflect.TypeFor[time.Time]() {
		v.Set(reflect.ValueOf(At))
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
	case reflect.Float32, reflect.Float64:
		v.SetFloat(1)
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		Fill(v.Elem(), custom)
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 1, 1))
		Fill(v.Index(0), custom)
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				Fill(v.Field(i), custom)
			}
		}
	}
}

// Filled returns a T with every field set by Fill.
func Filled[T any]() T {
	var v T
	Fill(reflect.ValueOf(&v).Elem(), nil)
	return v
}
