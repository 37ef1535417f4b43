package ctl

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// table is a tabwriter with a header.
type table struct{ tw *tabwriter.Writer }

func newTable(w io.Writer, header ...string) table {
	t := table{tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)}
	fmt.Fprintln(t.tw, strings.Join(header, "\t"))
	return t
}

func (t table) row(cells ...any) {
	s := make([]string, len(cells))
	for i, c := range cells {
		s[i] = fmt.Sprint(c)
	}
	fmt.Fprintln(t.tw, strings.Join(s, "\t"))
}

func (t table) flush() error { return t.tw.Flush() }

// timeOr formats t in local time, or says none when it is nil or zero.
func timeOr(t *time.Time, none string) string {
	if t == nil || t.IsZero() {
		return none
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

func orText(s, none string) string {
	if s == "" {
		return none
	}
	return s
}

func orDash(s string) string { return orText(s, "-") }

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// mib is a size in MiB, one decimal.
func mib(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
