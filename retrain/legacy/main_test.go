package legacy

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run when goroutines outlive the tests; the package
// starts none.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
