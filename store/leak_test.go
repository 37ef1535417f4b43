package store

// pebbleDiskHealthTicker is the goroutine Pebble starts to watch for slow
// disk operations when Options.FS is nil: Open wraps vfs.Default in its
// disk-health checker, whose closer is private to the options
// (opts.private.fsCloser) and only DB.Close calls it. When Open fails (a
// corrupt or unavailable store, which these tests make on purpose) there
// is no DB to close, so nothing can stop the ticker: the leak checks
// ignore it, and only it.
const pebbleDiskHealthTicker = "github.com/cockroachdb/pebble/v2/vfs.(*diskHealthCheckingFS).startTickerLocked.func1"
