//go:build unix

package redistest

import (
	"syscall"
	"testing"
)

// ProcessCPU is the CPU time, in µs, that this process has used so far
// (user and system both; 0 where getrusage is missing: cpu_other.go).
func ProcessCPU(tb testing.TB) float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e3
}
