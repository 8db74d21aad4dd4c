package outbox

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run when goroutines outlive the tests: every Outbox
// must stop its pull loops and deliveries on Stop and Close.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
