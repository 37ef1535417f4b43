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

// CommandStat is one command's line of INFO commandstats.
type CommandStat struct {
	Calls       float64
	Usec        float64 // time inside the command, all calls
	UsecPerCall float64
}

// CommandStats is INFO commandstats since the last CONFIG RESETSTAT, by
// command name as Redis spells it ("evalsha", "xadd", "config|resetstat").
func CommandStats(tb testing.TB, rdb *redis.Client) map[string]CommandStat {
	tb.Helper()
	info, err := rdb.Info(tb.Context(), "commandstats").Result()
	if err != nil {
		tb.Fatal(err)
	}
	return ParseCommandStats(info)
}

// ParseCommandStats reads the reply to INFO commandstats.
func ParseCommandStats(info string) map[string]CommandStat {
	out := map[string]CommandStat{}
	for _, l := range strings.Split(info, "\n") {
		name, stats, ok := strings.Cut(strings.TrimSpace(l), ":")
		name, isCmd := strings.CutPrefix(name, "cmdstat_")
		if !ok || !isCmd {
			continue
		}
		var st CommandStat
		for _, kv := range strings.Split(stats, ",") {
			k, v, _ := strings.Cut(kv, "=")
			f, _ := strconv.ParseFloat(v, 64)
			switch k {
			case "calls":
				st.Calls = f
			case "usec":
				st.Usec = f
			case "usec_per_call":
				st.UsecPerCall = f
			}
		}
		out[name] = st
	}
	return out
}
