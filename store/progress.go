package store

import "context"

// ProgressFunc receives a long operation's progress: the phase it is in
// and, where known, how far (done of total, in bytes or files; 0 and 0
// when not counted). It is called on the operation's goroutine, so it must
// be quick; the worker throttles what it publishes.
type ProgressFunc func(phase string, done, total int64)

type progressKey struct{}

// WithProgress returns a context that makes Compact, Verify, Backup and
// Restore report their progress to fn.
func WithProgress(ctx context.Context, fn ProgressFunc) context.Context {
	return context.WithValue(ctx, progressKey{}, fn)
}

// progress reports to the context's ProgressFunc, if any.
func progress(ctx context.Context, phase string, done, total int64) {
	if fn, ok := ctx.Value(progressKey{}).(ProgressFunc); ok && fn != nil {
		fn(phase, done, total)
	}
}

// ReportProgress reports to the ProgressFunc of ctx, if any, as the
// store's own operations do: for work an embedding application runs under
// a job's context.
func ReportProgress(ctx context.Context, phase string, done, total int64) {
	progress(ctx, phase, done, total)
}
