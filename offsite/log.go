package offsite

import (
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"

	"gocloud.dev/blob"

	"storekeeper/store"
)

// The shipped commit log (point-in-time recovery, package ship): each
// store's timelines, and for each timeline its segments, every one a run
// of committed batches [First, Next) written whole by one create-only PUT,
// so a segment is either wholly there or absent. Keys:
//
//	stores/<store>/timelines/<timeline>.json
//	stores/<store>/log/<timeline>/<first>-<next>.seg (20-digit numbers)
//
// On an encrypted target both are sealed like manifests: encrypted to the
// recipients, with a MAC under the naming key, so a planted segment is
// refused.

// Segment is one shipped run of batches of a timeline.
type Segment struct {
	Timeline string
	First    uint64 // sequence number of its first batch
	Next     uint64 // the sequence number after its last batch
	Size     int64  // bytes as stored
}

func timelineKey(storeName, id string) string {
	return "stores/" + storeName + "/timelines/" + id + ".json"
}

func segmentPrefix(storeName, timeline string) string {
	return "stores/" + storeName + "/log/" + timeline + "/"
}

// SegmentName is a segment's file name, locally and on targets.
func SegmentName(first, next uint64) string {
	return fmt.Sprintf("%020d-%020d.seg", first, next)
}

// ParseSegmentName reads a SegmentName.
func ParseSegmentName(name string) (first, next uint64, ok bool) {
	if _, err := fmt.Sscanf(name, "%020d-%020d.seg", &first, &next); err != nil || SegmentName(first, next) != name {
		return 0, 0, false
	}
	return first, next, true
}

// PutSegment stores one sealed segment of a store's timeline, create-only:
// a segment already there (sent before a crash) is left as it is.
func (t *Target) PutSegment(ctx context.Context, storeName, timeline string, first, next uint64, data []byte) error {
	b, err := t.sealBlob("segment", data)
	if err != nil {
		return err
	}
	err = t.writeAll(ctx, segmentPrefix(storeName, timeline)+SegmentName(first, next), b, &blob.WriterOptions{IfNotExist: true, ContentType: "application/octet-stream"})
	if err != nil && !exists(err) {
		return fmt.Errorf("target %s: segment: %w", t.Name, err)
	}
	return nil
}

// writeAll writes b under key. Unlike Bucket.WriteAll it computes no
// Content-MD5 (WriteAll hashes b twice: measured 12% of the CPU of a
// shipping store's writes): a segment carries its own SHA-256 or MAC.
func (t *Target) writeAll(ctx context.Context, key string, b []byte, opts *blob.WriterOptions) error {
	w, err := t.bucket.NewWriter(ctx, key, opts)
	if err != nil {
		return err
	}
	if _, err := w.Write(b); err != nil {
		_ = w.Close()
		return err
	}
	return w.Close()
}

// Segments lists the segments of a store's timeline the target holds, in
// order of First.
func (t *Target) Segments(ctx context.Context, storeName, timeline string) ([]Segment, error) {
	var out []Segment
	it := t.bucket.List(&blob.ListOptions{Prefix: segmentPrefix(storeName, timeline)})
	for {
		obj, err := it.Next(ctx)
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("target %s: list segments: %w", t.Name, err)
		}
		name := obj.Key[strings.LastIndexByte(obj.Key, '/')+1:]
		if first, next, ok := ParseSegmentName(name); ok {
			out = append(out, Segment{Timeline: timeline, First: first, Next: next, Size: obj.Size})
		}
	}
	slices.SortFunc(out, func(a, b Segment) int {
		if a.First != b.First {
			return cmp.Compare(a.First, b.First)
		}
		return cmp.Compare(b.Next, a.Next)
	})
	return out, nil
}

// ReadSegment returns a segment's content as PutSegment was given it.
func (t *Target) ReadSegment(ctx context.Context, storeName string, s Segment) ([]byte, error) {
	b, err := t.bucket.ReadAll(ctx, segmentPrefix(storeName, s.Timeline)+SegmentName(s.First, s.Next))
	if err != nil {
		return nil, fmt.Errorf("target %s: segment %s/%s: %w", t.Name, s.Timeline, SegmentName(s.First, s.Next), err)
	}
	return t.openBlob("segment", b)
}

// DeleteSegment removes a segment (retention).
func (t *Target) DeleteSegment(ctx context.Context, storeName string, s Segment) error {
	err := t.bucket.Delete(ctx, segmentPrefix(storeName, s.Timeline)+SegmentName(s.First, s.Next))
	if err != nil && !notFound(err) {
		return fmt.Errorf("target %s: delete segment: %w", t.Name, err)
	}
	return nil
}

// PutTimeline records a store's timeline, create-only.
func (t *Target) PutTimeline(ctx context.Context, tl store.Timeline) error {
	plain, err := json.Marshal(tl)
	if err != nil {
		return err
	}
	b, err := t.sealBlob("timeline", plain)
	if err != nil {
		return err
	}
	err = t.bucket.WriteAll(ctx, timelineKey(tl.Store, tl.ID), b, &blob.WriterOptions{IfNotExist: true, ContentType: "application/json"})
	if err != nil && !exists(err) {
		return fmt.Errorf("target %s: timeline: %w", t.Name, err)
	}
	return nil
}

// Timeline reads a store's timeline record.
func (t *Target) Timeline(ctx context.Context, storeName, id string) (store.Timeline, error) {
	var tl store.Timeline
	b, err := t.bucket.ReadAll(ctx, timelineKey(storeName, id))
	if err != nil {
		return tl, fmt.Errorf("target %s: timeline %s: %w", t.Name, id, err)
	}
	plain, err := t.openBlob("timeline", b)
	if err != nil {
		return tl, err
	}
	if err := json.Unmarshal(plain, &tl); err != nil || tl.ID != id || tl.Store != storeName {
		return tl, fmt.Errorf("target %s: timeline %s: %w: not its record", t.Name, id, store.ErrBadBackup)
	}
	return tl, nil
}

// sealBlob encrypts b with a MAC under the naming key, for purpose, when
// the target is encrypted; otherwise it returns b with its SHA-256, so a
// damaged object is refused either way.
func (t *Target) sealBlob(purpose string, b []byte) ([]byte, error) {
	tag := t.blobTag(purpose, b)
	out := append(append(make([]byte, 0, len(b)+len(tag)), tag...), b...)
	if t.enc == nil {
		return out, nil
	}
	return seal(out, t.enc.Recipients)
}

// openBlob reverses sealBlob.
func (t *Target) openBlob(purpose string, b []byte) ([]byte, error) {
	if t.enc != nil {
		var err error
		if b, err = t.open(b); err != nil {
			return nil, err
		}
	}
	if len(b) < sha256.Size {
		return nil, fmt.Errorf("target %s: %s of %d bytes: %w: truncated", t.Name, purpose, len(b), store.ErrBadBackup)
	}
	tag, body := b[:sha256.Size], b[sha256.Size:]
	if !hmac.Equal(tag, t.blobTag(purpose, body)) {
		return nil, fmt.Errorf("target %s: %s: %w: its checksum (or MAC) does not match", t.Name, purpose, store.ErrBadBackup)
	}
	return body, nil
}

func (t *Target) blobTag(purpose string, b []byte) []byte {
	if t.enc == nil {
		h := sha256.New()
		h.Write([]byte("storekeeper " + purpose + "\x00"))
		h.Write(b)
		return h.Sum(nil)
	}
	m := hmac.New(sha256.New, t.enc.NamingKey)
	m.Write([]byte("storekeeper " + purpose + "\x00"))
	m.Write(b)
	return m.Sum(nil)
}

// LogTimelines lists the timelines of a store the target holds segments
// of.
func (t *Target) LogTimelines(ctx context.Context, storeName string) ([]string, error) {
	var out []string
	prefix := "stores/" + storeName + "/log/"
	it := t.bucket.List(&blob.ListOptions{Prefix: prefix, Delimiter: "/"})
	for {
		obj, err := it.Next(ctx)
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("target %s: list timelines: %w", t.Name, err)
		}
		if obj.IsDir {
			out = append(out, strings.TrimSuffix(strings.TrimPrefix(obj.Key, prefix), "/"))
		}
	}
	return out, nil
}
