package keyspace

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if a goroutine outlives them: every
// goroutine our code starts has an owner that ends it.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
