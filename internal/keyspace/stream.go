package keyspace

import (
	"encoding/json"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// Stream names. Each entry has one field, StreamField, holding the JSON
// of an Event or a HistoryEntry; the entry id is its id.
const (
	EventsStream  = "storekeeper:events"
	HistoryStream = "storekeeper:history"
	StreamField   = "json"
)

// AppendArgs returns the XADD arguments that append v (an Event or a
// HistoryEntry, without its ID) to stream, trimmed to about maxLen, so a
// caller can pipeline it with the record update it belongs to.
func AppendArgs(stream string, maxLen int64, v any) (*redis.XAddArgs, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return &redis.XAddArgs{Stream: stream, MaxLen: maxLen, Approx: true, Values: []any{StreamField, b}}, nil
}

func DecodeEntry[T any](m redis.XMessage, setID func(*T, string)) (T, error) {
	var v T
	s, _ := m.Values[StreamField].(string)
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		return v, fmt.Errorf("stream entry %s: %w", m.ID, err)
	}
	setID(&v, m.ID)
	return v, nil
}
