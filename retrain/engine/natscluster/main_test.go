package natscluster_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run when goroutines outlive the tests: a cluster's
// process waiters and the connections of its tests must all end.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
