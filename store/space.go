package store

import (
	"fmt"
	"syscall"
)

// freeBytes returns the bytes available to this process on path's
// filesystem.
func freeBytes(path string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", path, err)
	}
	return st.Bavail * uint64(st.Bsize), nil
}

// preflight fails with a SpaceError when path's filesystem has less than
// need bytes free.
func (r *Registry) preflight(op, path string, need uint64) error {
	free, err := r.freeSpace(path)
	if err != nil {
		return err
	}
	if free < need {
		return &SpaceError{Op: op, Path: path, Need: need, Free: free}
	}
	return nil
}
