package offsite

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"gocloud.dev/blob"
)

// Retention and collection. A store's copies on a target are pruned by
// the store's own retention (Prune): a new index generation without the
// backups dropped, then their manifests deleted. Their objects may be
// shared with other backups and other stores, and an upload may be about
// to reference one it found there (it checked with a HEAD and skipped
// it), so objects are collected apart (Collect), in two passes at least
// Grace apart: an object no manifest in any index references is first
// recorded as a candidate (gc/pending.json, with when it was first seen
// unreferenced), and deleted only by a later pass that finds it still
// unreferenced after Grace. An upload that takes less than Grace from its
// HEADs to its index write is never left with a deleted object.

// pendingKey records the collection candidates and when each was first
// seen unreferenced.
const pendingKey = "gc/pending.json"

// DefaultGrace is how long an unreferenced object is kept.
const DefaultGrace = 24 * time.Hour

// Prune drops from the store's index the backups keep does not keep, then
// deletes their manifests; it returns the ids dropped. keep sees every
// backup the index lists, with its time.
func (t *Target) Prune(ctx context.Context, storeName string, keep func(map[string]time.Time) map[string]bool) ([]string, error) {
	var dropped []string
	err := t.updateIndex(ctx, storeName, func(backups []Entry) ([]Entry, bool) {
		created := map[string]time.Time{}
		for _, e := range backups {
			created[e.ID] = e.CreatedAt
		}
		kept := keep(created)
		var next []Entry
		dropped = nil // a retry starts again from the newest generation
		for _, e := range backups {
			if kept[e.ID] {
				next = append(next, e)
			} else {
				dropped = append(dropped, e.ID)
			}
		}
		return next, len(dropped) > 0
	})
	if err != nil {
		return nil, err
	}
	for _, id := range dropped {
		if err := t.bucket.Delete(ctx, manifestKey(storeName, id)); err != nil && !notFound(err) {
			return dropped, fmt.Errorf("target %s: delete manifest %s: %w", t.Name, id, err)
		}
	}
	return dropped, nil
}

// Collected is what one collection pass did.
type Collected struct {
	Objects    int `json:"objects"`    // on the target
	Referenced int `json:"referenced"` // by a manifest some index lists
	Candidates int `json:"candidates"` // unreferenced, kept until Grace has passed
	Deleted    int `json:"deleted"`
}

// Collect runs one collection pass at now (see the package comment above
// Prune): it lists the stores and the objects (a listing is fine here, not
// on a restore), reads every index and the manifests they list, deletes
// the objects unreferenced since before now-grace, and records the other
// unreferenced ones.
func (t *Target) Collect(ctx context.Context, now time.Time, grace time.Duration) (Collected, error) {
	var c Collected
	referenced := map[string]bool{}
	stores, err := t.list(ctx, "stores/", "/")
	if err != nil {
		return c, err
	}
	for _, dir := range stores {
		name := strings.TrimSuffix(strings.TrimPrefix(dir, "stores/"), "/")
		ix, err := t.latest(ctx, name)
		if err != nil {
			return c, err
		}
		for _, e := range ix.Backups {
			m, err := t.Manifest(ctx, name, e.ID)
			if err != nil {
				// A manifest that cannot be read keeps nothing from being
				// collected wrongly only if the pass stops here.
				return c, fmt.Errorf("target %s: collect: %w", t.Name, err)
			}
			for _, f := range m.Files {
				referenced[t.objectName(f.SHA256)] = true
			}
		}
	}
	objects, err := t.list(ctx, "objects/", "")
	if err != nil {
		return c, err
	}
	pending := map[string]time.Time{}
	if b, err := t.bucket.ReadAll(ctx, pendingKey); err == nil {
		_ = json.Unmarshal(b, &pending)
	} else if !notFound(err) {
		return c, fmt.Errorf("target %s: %w", t.Name, err)
	}
	next := map[string]time.Time{}
	c.Objects = len(objects)
	for _, key := range objects {
		if referenced[key] {
			c.Referenced++
			continue
		}
		first, ok := pending[key]
		if !ok || first.After(now) {
			first = now
		}
		if now.Sub(first) < grace {
			next[key] = first
			c.Candidates++
			continue
		}
		if err := t.bucket.Delete(ctx, key); err != nil && !notFound(err) {
			return c, fmt.Errorf("target %s: delete %s: %w", t.Name, key, err)
		}
		c.Deleted++
	}
	b, _ := json.Marshal(next)
	if err := t.bucket.WriteAll(ctx, pendingKey, b, nil); err != nil {
		return c, fmt.Errorf("target %s: %w", t.Name, err)
	}
	return c, nil
}

// list returns the keys (or, with a delimiter, the "directories") under
// prefix, sorted.
func (t *Target) list(ctx context.Context, prefix, delim string) ([]string, error) {
	var out []string
	it := t.bucket.List(&blob.ListOptions{Prefix: prefix, Delimiter: delim})
	for {
		o, err := it.Next(ctx)
		if err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return nil, fmt.Errorf("target %s: list %s: %w", t.Name, prefix, err)
		}
		if delim != "" && !o.IsDir {
			continue
		}
		if delim == "" && o.IsDir {
			continue
		}
		out = append(out, o.Key)
	}
	slices.Sort(out)
	return out, nil
}
