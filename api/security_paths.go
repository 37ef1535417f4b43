package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"storekeeper/jobs"
)

// Paths on the workers' disks. A restore's result (and its
// store.restored event) names the quarantined generation by its absolute
// path, which says where a node keeps its data; an error may name a file
// under the data directory's .storekeeper/ the same way. The API shows
// such paths relative to the data directory: from ".storekeeper/" on
// (the directory every data dir holds), e.g.
// ".storekeeper/quarantine/orders/<gen>".

const dataMarker = ".storekeeper/"

// underDataDir is a path, or the part of one in a message, that leads to
// a data directory's .storekeeper/ (the last one, should the data
// directory's own path hold one).
var underDataDir = regexp.MustCompile(`[^\s"'(),;=]*/\.storekeeper/`)

// relativePath writes every path under a data directory's .storekeeper/
// in s relative to the data directory; the rest of s is left as it is.
func relativePath(s string) string {
	if !strings.Contains(s, "/"+dataMarker) {
		return s
	}
	return underDataDir.ReplaceAllLiteralString(s, dataMarker)
}

// relativeJSON rewrites every string value in raw (a JSON value) that
// names a path under a data directory; raw is returned as it is when it
// names none, or is not JSON.
func relativeJSON(raw []byte) []byte {
	if !bytes.Contains(raw, []byte("/"+dataMarker)) && !bytes.Contains(raw, []byte(`\/`+dataMarker)) {
		return raw
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return raw
	}
	v = relativeValue(v)
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return raw
	}
	return bytes.TrimRight(buf.Bytes(), "\n")
}

func relativeValue(v any) any {
	switch x := v.(type) {
	case string:
		return relativePath(x)
	case map[string]any:
		for k, e := range x {
			x[k] = relativeValue(e)
		}
	case []any:
		for i, e := range x {
			x[i] = relativeValue(e)
		}
	}
	return v
}

// publicRecord is a job record as the API shows it: the paths in its
// result and its attempts' errors relative to the data directory.
func publicRecord(r jobs.Record) jobs.Record {
	if len(r.Result) > 0 {
		r.Result = relativeJSON(r.Result)
	}
	if len(r.Errors) > 0 {
		errs := make([]jobs.AttemptError, len(r.Errors))
		for i, e := range r.Errors {
			e.Error = relativePath(e.Error)
			errs[i] = e
		}
		r.Errors = errs
	}
	return r
}

// publicHistory is history entries as the API shows them: the paths in
// their errors relative to the data directory.
func publicHistory(entries []jobs.HistoryEntry) []jobs.HistoryEntry {
	for i := range entries {
		entries[i].Error = relativePath(entries[i].Error)
	}
	return entries
}

// historyPageJSON is GET /api/history's body, {"history": […], "next":
// …}, built from the entries as HistoryStream holds them: each entry's
// JSON with its id put first and its paths relative (relativeJSON, which
// costs nothing for an entry that names none). Decoding and re-encoding a
// page of 500 entries was most of a query's time (docs/BENCHMARKS.md).
// Only what storekeeper's finishes write (json.Marshal of a HistoryEntry
// without its id: rawHistoryObject) is passed on so; anything else is
// decoded and encoded.
func historyPageJSON(entries []jobs.RawHistoryEntry, next string) ([]byte, error) {
	size := 32 + len(next)
	for _, e := range entries {
		size += len(e.ID) + len(e.JSON) + 16
	}
	buf := make([]byte, 0, size)
	buf = append(buf, `{"history":[`...)
	for i, e := range entries {
		if i > 0 {
			buf = append(buf, ',')
		}
		raw := e.JSON
		if !rawHistoryObject(raw) {
			var h jobs.HistoryEntry
			if err := json.Unmarshal([]byte(raw), &h); err != nil {
				return nil, fmt.Errorf("history entry %s: %w", e.ID, err)
			}
			h.ID = ""
			b, _ := json.Marshal(h)
			raw = string(b)
		}
		if strings.Contains(raw, dataMarker) {
			raw = string(relativeJSON([]byte(raw)))
		}
		buf = append(buf, `{"id":`...)
		buf = strconv.AppendQuote(buf, e.ID)
		buf = append(buf, ',')
		buf = append(buf, raw[1:]...)
	}
	buf = append(buf, `],"next":`...)
	buf = strconv.AppendQuote(buf, next)
	return append(buf, '}'), nil
}

// rawHistoryObject reports whether raw is an entry as storekeeper writes
// it: json.Marshal of a HistoryEntry with no id, which opens with its
// job_id and ends the object. (json.Valid on every entry cost as much as
// the rest of a query; an entry of that shape that is not JSON could only
// come from a hostile writer to Redis, which docs/SECURITY.md already
// counts as able to falsify history.)
func rawHistoryObject(raw string) bool {
	return strings.HasPrefix(raw, `{"job_id":`) && strings.HasSuffix(raw, "}")
}

// publicEvent is an event's JSON as the API shows it (the WebSocket): its
// paths (store.restored's quarantine) relative to the data directory. It
// costs nothing for an event that names no such path.
func publicEvent(raw []byte) []byte { return relativeJSON(raw) }
