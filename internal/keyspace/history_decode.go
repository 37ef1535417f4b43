package keyspace

import (
	"encoding/json"
	"strconv"
	"strings"

	"storekeeper/jobs"
)

// DecodeHistoryJSON decodes a history entry's JSON as json.Unmarshal does,
// fast for the JSON storekeeper writes: one flat object, the fields'
// exact names, strings without escapes. Anything else (an escape, another
// name, a value of another type, a syntax error) goes to json.Unmarshal,
// so the result and the errors are always json.Unmarshal's. A page of
// history is 500 entries: with encoding/json alone, decoding them was
// half of a query's time.
func DecodeHistoryJSON(s string) (jobs.HistoryEntry, error) {
	if e, ok := FastHistoryEntry(s); ok {
		return e, nil
	}
	var e jobs.HistoryEntry
	err := json.Unmarshal([]byte(s), &e)
	return e, err
}

// FastHistoryEntry is DecodeHistoryJSON's fast path; ok false: use
// json.Unmarshal.
func FastHistoryEntry(s string) (e jobs.HistoryEntry, ok bool) {
	p := jsonScanner{s: s}
	if !p.byte('{') {
		return e, false
	}
	if p.byte('}') {
		return e, p.end()
	}
	for {
		key, ok := p.str()
		if !ok || !p.byte(':') {
			return e, false
		}
		p.space()
		if strings.HasPrefix(p.s[p.i:], "null") {
			// json.Unmarshal leaves the field as it is: here, zero.
			p.i += 4
		} else {
			var ok bool
			switch key {
			case "id":
				e.ID, ok = p.str()
			case "job_id":
				e.JobID, ok = p.str()
			case "kind":
				var v string
				v, ok = p.str()
				e.Kind = jobs.Kind(v)
			case "store":
				e.Store, ok = p.str()
			case "status":
				var v string
				v, ok = p.str()
				e.Status = jobs.HistoryStatus(v)
			case "reason":
				e.Reason, ok = p.str()
			case "trigger":
				var v string
				v, ok = p.str()
				e.Trigger = jobs.Trigger(v)
			case "actor":
				e.Actor, ok = p.str()
			case "attempts":
				var n int64
				n, ok = p.int(strconv.IntSize)
				e.Attempts = int(n)
			case "duration_ms":
				e.DurationMS, ok = p.int(64)
			case "bytes_before":
				e.BytesBefore, ok = p.uint()
			case "bytes_after":
				e.BytesAfter, ok = p.uint()
			case "backup_id":
				e.BackupID, ok = p.str()
			case "error":
				e.Error, ok = p.str()
			case "node":
				e.Node, ok = p.str()
			case "at":
				start := p.i
				if _, ok = p.str(); ok {
					ok = e.At.UnmarshalJSON([]byte(p.s[start:p.i])) == nil
				}
			}
			if !ok {
				return e, false
			}
		}
		if p.byte('}') {
			return e, p.end()
		}
		if !p.byte(',') {
			return e, false
		}
	}
}

// jsonScanner reads the JSON in s from i.
type jsonScanner struct {
	s string
	i int
}

func (p *jsonScanner) space() {
	for p.i < len(p.s) && (p.s[p.i] == ' ' || p.s[p.i] == '\t' || p.s[p.i] == '\n' || p.s[p.i] == '\r') {
		p.i++
	}
}

// byte consumes c, after any space.
func (p *jsonScanner) byte(c byte) bool {
	p.space()
	if p.i < len(p.s) && p.s[p.i] == c {
		p.i++
		return true
	}
	return false
}

// end reports whether nothing but space is left.
func (p *jsonScanner) end() bool {
	p.space()
	return p.i == len(p.s)
}

// str reads a string without escapes or control characters, all ASCII
// (json.Unmarshal replaces invalid UTF-8).
func (p *jsonScanner) str() (string, bool) {
	if !p.byte('"') {
		return "", false
	}
	for j := p.i; j < len(p.s); j++ {
		switch c := p.s[j]; {
		case c == '"':
			v := p.s[p.i:j]
			p.i = j + 1
			return v, true
		case c == '\\' || c < 0x20 || c >= 0x80:
			return "", false
		}
	}
	return "", false
}

// number reads a JSON integer: an optional minus, then 0 or a digit 1-9
// followed by digits.
func (p *jsonScanner) number() (string, bool) {
	p.space()
	start, j := p.i, p.i
	if j < len(p.s) && p.s[j] == '-' {
		j++
	}
	digits := j
	for j < len(p.s) && p.s[j] >= '0' && p.s[j] <= '9' {
		j++
	}
	if j == digits || (p.s[digits] == '0' && j > digits+1) {
		return "", false
	}
	if j < len(p.s) && (p.s[j] == '.' || p.s[j] == 'e' || p.s[j] == 'E') {
		return "", false // json.Unmarshal refuses a fraction for an integer field
	}
	p.i = j
	return p.s[start:j], true
}

func (p *jsonScanner) int(bits int) (int64, bool) {
	v, ok := p.number()
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(v, 10, bits)
	return n, err == nil
}

func (p *jsonScanner) uint() (uint64, bool) {
	v, ok := p.number()
	if !ok || v[0] == '-' {
		return 0, false
	}
	n, err := strconv.ParseUint(v, 10, 64)
	return n, err == nil
}
