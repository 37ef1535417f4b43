package main

import (
	"testing"

	"storekeeper/jobs"
	"storekeeper/store"
)

// jobs may not import store, so it carries its own copy of the store name
// rule; they must not drift apart.
func TestStoreNamePatternsAgree(t *testing.T) {
	if jobs.StoreNamePattern != store.NamePattern {
		t.Fatalf("jobs.StoreNamePattern %q != store.NamePattern %q", jobs.StoreNamePattern, store.NamePattern)
	}
}
