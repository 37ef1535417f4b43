package e2e

import (
	"fmt"
	"net/url"
)

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
