package redistest

import (
	"strconv"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
)

// CPU is the CPU time, in µs, that this process and the Redis server
// behind rdb have used so far (user and system both): benchmarks take it
// before and after their timed part to report what each side spends per
// operation (ReportCPU).
func CPU(tb testing.TB, rdb *redis.Client) (processUS, redisUS float64) {
	tb.Helper()
	processUS = ProcessCPU(tb)
	info, err := rdb.Info(tb.Context(), "cpu").Result()
	if err != nil {
		tb.Fatal(err)
	}
	for _, l := range strings.Split(info, "\r\n") {
		k, v, _ := strings.Cut(l, ":")
		if k == "used_cpu_sys" || k == "used_cpu_user" {
			f, _ := strconv.ParseFloat(v, 64)
			redisUS += f * 1e6
		}
	}
	return processUS, redisUS
}

// ReportCPU reports the CPU per operation each side used since CPU
// returned process0 and redis0, as go-cpu-us/<op> and redis-cpu-us/<op>.
func ReportCPU(b *testing.B, rdb *redis.Client, process0, redis0 float64, op string) {
	b.Helper()
	process1, redis1 := CPU(b, rdb)
	b.ReportMetric((process1-process0)/float64(b.N), "go-cpu-us/"+op)
	b.ReportMetric((redis1-redis0)/float64(b.N), "redis-cpu-us/"+op)
}
