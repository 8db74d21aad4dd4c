package engine

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run when goroutines outlive the tests: an embedded
// server and a connection must stop all of theirs.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
