package export

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the suite when a test leaves goroutines behind.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
