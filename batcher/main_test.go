package batcher

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the suite when a test leaves a goroutine running: every
// worker must stop with Close.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
