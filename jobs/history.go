package jobs

import (
	"fmt"
	"strconv"
	"strings"
)

// HistoryLegacyScan bounds the entries of HistoryStream that one filtered
// query scans when it reaches entries the indexes do not hold.
const HistoryLegacyScan = 1000

// HistoryQuery selects history entries, newest first.
type HistoryQuery struct {
	Store  string // empty: every store
	Kind   Kind   // empty: every kind
	Limit  int    // 1..500; 0 means 50
	Before string // an entry id: only older entries (the paging cursor)
}

// ErrBadCursor: a history cursor that is not an entry id (it is also an
// ErrBadQuery).
var ErrBadCursor = fmt.Errorf("%w: bad cursor", ErrBadQuery)

// ParseHistoryCursor checks a paging cursor: a stream entry id "<ms>-<seq>"
// or "<ms>" (meaning "<ms>-0"), each part decimal digits within 64 bits,
// and not 0-0 (nothing is older). It returns the id in canonical form.
func ParseHistoryCursor(s string) (string, error) {
	msPart, seqPart, hasSeq := strings.Cut(s, "-")
	ms, ok := parseDecimal(msPart)
	seq := uint64(0)
	if ok && hasSeq {
		seq, ok = parseDecimal(seqPart)
	}
	if !ok {
		return "", fmt.Errorf("%w: before %q is not a history entry id (<ms>-<seq>)", ErrBadCursor, s)
	}
	if ms == 0 && seq == 0 {
		return "", fmt.Errorf("%w: before %q: no entry is older", ErrBadCursor, s)
	}
	return strconv.FormatUint(ms, 10) + "-" + strconv.FormatUint(seq, 10), nil
}

// parseDecimal parses digits only (no sign, no spaces) within 64 bits.
func parseDecimal(s string) (uint64, bool) {
	if s == "" || strings.TrimLeft(s, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.ParseUint(s, 10, 64)
	return n, err == nil
}

// RawHistoryEntry is a history entry as HistoryStream holds it: its id
// and its JSON (a HistoryEntry without its id).
type RawHistoryEntry struct {
	ID   string
	JSON string
}
