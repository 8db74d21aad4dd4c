package modelstore

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run when goroutines outlive the tests: a watch must
// end with its context.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
