package jobs

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Default stream bounds (trimmed approximately, as Redis does cheaply).
const (
	DefaultEventsMaxLen  = 100_000
	DefaultHistoryMaxLen = 100_000
)

// ErrBadQuery: a history query or stream id that cannot be used.
var ErrBadQuery = errors.New("bad query")

// ValidStreamID reports whether id is a stream entry id ("<ms>-<seq>" or "<ms>").
func ValidStreamID(id string) bool { _, _, err := ParseStreamID(id); return err == nil }

// CompareStreamIDs orders two valid stream entry ids: -1, 0 or 1.
func CompareStreamIDs(a, b string) int {
	ams, aseq, _ := ParseStreamID(a)
	bms, bseq, _ := ParseStreamID(b)
	switch {
	case ams != bms:
		return cmpU(ams, bms)
	default:
		return cmpU(aseq, bseq)
	}
}

func cmpU(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// ParseStreamID parses "<ms>-<seq>" (or "<ms>").
func ParseStreamID(id string) (uint64, uint64, error) {
	msPart, seqPart, hasSeq := strings.Cut(id, "-")
	ms, err := strconv.ParseUint(msPart, 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("not a stream id: %q", id)
	}
	if !hasSeq {
		return ms, 0, nil
	}
	seq, err := strconv.ParseUint(seqPart, 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("not a stream id: %q", id)
	}
	return ms, seq, nil
}
