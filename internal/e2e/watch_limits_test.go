package e2e

import (
	"fmt"
	"net/url"
	"syscall"
	"testing"
	"time"
)

// processCPU is the CPU time this process has used, user and system.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// watchFilters is a /ws query with n filter values that let the events
// of store and job through: store=store, then job=job among n-2 other
// job ids as long.
func watchFilters(n int, store, job string) string {
	q := url.Values{"store": {store}}
	for i := range n - 2 {
		q.Add("job", fmt.Sprintf("other-job-%0*d", max(len(job)-10, 4), i))
	}
	q.Add("job", job)
	return q.Encode()
}
