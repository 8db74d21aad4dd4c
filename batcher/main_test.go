package batcher

import (
	"fmt"
	"os"
	goruntime "runtime"
	"strings"
	"testing"
	"time"
)

// TestMain fails the suite when a test leaves a goroutine running in this
// package's code: every worker must stop with Close.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if leaked := leakedGoroutines(); leaked != "" {
			fmt.Fprintf(os.Stderr, "leaked goroutines:\n%s\n", leaked)
			code = 1
		}
	}
	os.Exit(code)
}

// leakedGoroutines returns the stacks of goroutines still running this
// package's code other than TestMain, after giving finishing ones a moment.
// A worker that has yet to run shows only the sync.WaitGroup.Go frame that
// started it, so that counts too.
func leakedGoroutines() string {
	var leaked []string
	for range 50 {
		leaked = leaked[:0]
		buf := make([]byte, 1<<20)
		buf = buf[:goruntime.Stack(buf, true)]
		for g := range strings.SplitSeq(string(buf), "\n\n") {
			ours := strings.Contains(g, "infergate/batcher.") || strings.Contains(g, "sync.(*WaitGroup).Go")
			if ours && !strings.Contains(g, "batcher.TestMain") {
				leaked = append(leaked, g)
			}
		}
		if len(leaked) == 0 {
			return ""
		}
		time.Sleep(20 * time.Millisecond)
	}
	return strings.Join(leaked, "\n\n")
}
