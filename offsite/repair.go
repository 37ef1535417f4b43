package offsite

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"slices"
	"sync"

	"storekeeper/store"
)

// Repaired is what Repair did to one backup's objects on a target.
type Repaired struct {
	Checked int      `json:"checked"`              // objects read and checked
	Resent  []string `json:"resent,omitempty"`     // files whose object was damaged or missing, sent again
	Missing []string `json:"unrepaired,omitempty"` // damaged ones src could not give whole
}

// Repair reads every object of backup m on the target (t.Parallel at a
// time), checks each against its size and SHA-256, and sends each one
// that does not check out (damaged, cut short, missing) again, over it, from src's copy of
// backup m, itself checked as it is sent: a local copy that is not whole
// is never uploaded. Objects are content-addressed, so replacing one
// with its right content changes no other backup that shares it; until
// then every backup that shares a damaged object is unrestorable from the
// target, and later uploads skip it (its name and size are there).
func (t *Target) Repair(ctx context.Context, src Source, m store.BackupManifest) (Repaired, error) {
	var rep Repaired
	var files []store.BackupFile
	seen := map[string]bool{}
	for _, f := range m.Files {
		if !seen[f.SHA256] {
			seen[f.SHA256] = true
			files = append(files, f)
		}
	}
	var mu sync.Mutex
	n, _, err := t.eachObject(ctx, files, nil, func(ctx context.Context, f store.BackupFile) error {
		ok, err := t.objectWhole(ctx, f)
		if err != nil || ok {
			return err
		}
		r, err := src.OpenBackupFile(m.ID, f.Name)
		if err == nil {
			err = t.send(ctx, f, &checkedReader{r: r, f: f, h: sha256.New()}, true)
			r.Close()
		}
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			rep.Missing = append(rep.Missing, f.Name)
		} else {
			rep.Resent = append(rep.Resent, f.Name)
		}
		return nil
	})
	rep.Checked = n
	slices.Sort(rep.Resent)
	slices.Sort(rep.Missing)
	return rep, err
}

// objectWhole reads f's object and reports whether it holds f exactly.
// An object that is missing or does not decrypt is not whole; an error is
// returned only when the target could not be read at all.
func (t *Target) objectWhole(ctx context.Context, f store.BackupFile) (bool, error) {
	r, err := t.OpenObject(ctx, f)
	if errors.Is(err, store.ErrBadBackup) {
		return false, nil // missing
	}
	if err != nil {
		return false, err
	}
	defer r.Close()
	h := sha256.New()
	n, err := io.Copy(h, io.LimitReader(r, f.Size+1))
	if err != nil {
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		return false, nil // cut short, or does not decrypt
	}
	return n == f.Size && hex.EncodeToString(h.Sum(nil)) == f.SHA256, nil
}
