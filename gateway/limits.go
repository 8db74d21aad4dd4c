package gateway

import (
	goruntime "runtime"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/infergate/infergate/runtime"
)

// jsonValueCost is what a parsed JSON value costs in memory: the parser's
// node (80 bytes), its slot in its parent, and at most 8 bytes of tensor.
const jsonValueCost = 96

// requestSlackValues leaves room, beyond the tensors' elements, for a
// request's id, names, datatypes, shapes, parameters and outputs.
const requestSlackValues = 1024

// requestValueLimit returns the most JSON values a request can need to
// carry inputs of this model at up to maxRows rows (0: no bound on rows):
// every input's elements, plus room for the rest of the request. Where a
// dimension is free and unbounded only maxBody bounds it: a value takes at
// least a byte.
func requestValueLimit(inputs []runtime.TensorInfo, maxRows, maxBody int) int {
	total := requestSlackValues
	for _, in := range inputs {
		elements := int64(1)
		for j, d := range in.Shape {
			switch {
			case d == runtime.Dynamic && j == 0 && maxRows > 0:
				d = int64(maxRows)
			case d == runtime.Dynamic:
				return maxBody
			}
			elements *= d
			if elements > int64(maxBody) {
				return maxBody
			}
		}
		total += int(elements) + len(in.Shape) + 16
	}
	return min(total, maxBody)
}

// memoryBudget bounds the bytes that requests in flight hold in bodies,
// parse trees and tensors, so that many large requests at once are refused
// with 503 rather than run the process out of memory. It is safe for
// concurrent use.
type memoryBudget struct {
	limit int64
	used  atomic.Int64
	// high is set once a quarter of the budget was in use; the release
	// that brings the use back under a sixteenth clears it and signals
	// drained, so that the memory goes back to the system (returnMemory).
	high    atomic.Bool
	drained chan struct{}
}

// reserve takes n bytes of the budget, or reports false, taking nothing,
// when they do not fit.
func (b *memoryBudget) reserve(n int64) bool {
	for {
		used := b.used.Load()
		if used+n > b.limit {
			memoryRefused.Inc()
			return false
		}
		if b.used.CompareAndSwap(used, used+n) {
			if used+n > b.limit/4 && !b.high.Load() {
				b.high.Store(true)
			}
			return true
		}
	}
}

// releaseHeld gives back what *held took and zeroes it.
func (b *memoryBudget) releaseHeld(held *int64) {
	b.release(*held)
	*held = 0
}

// release gives back n bytes that reserve took.
func (b *memoryBudget) release(n int64) {
	if b.used.Add(-n) < b.limit/16 && b.high.Load() && b.high.CompareAndSwap(true, false) {
		select {
		case b.drained <- struct{}{}:
		default:
		}
	}
}

// returnMemoryAfter is how long returnMemory lets a burst settle, and
// returnMemoryEvery how often at most it returns memory, so that load
// going up and down around the thresholds does not collect every second.
const (
	returnMemoryAfter = time.Second
	returnMemoryEvery = 5 * time.Second
)

// returnMemory hands the heap that a burst of large requests grew back to
// the system once the burst has passed, until stop is closed. Without it
// the memory stays with the process until the next collection, which an
// idle gateway may not run for minutes.
func (b *memoryBudget) returnMemory(stop <-chan struct{}) {
	var last time.Time
	for {
		select {
		case <-stop:
			return
		case <-b.drained:
		}
		// Wait for the burst to settle and its last requests to end.
		wait := max(returnMemoryAfter, returnMemoryEvery-time.Since(last))
		for {
			select {
			case <-stop:
				return
			case <-time.After(wait):
			}
			if b.used.Load() < b.limit/16 {
				break
			}
			wait = returnMemoryAfter
		}
		last = time.Now()
		// Two collections: the first leaves pooled buffers (body chunks,
		// parsers) in sync.Pool's victim cache, the second, FreeOSMemory's,
		// frees them and returns the pages.
		goruntime.GC()
		debug.FreeOSMemory()
	}
}

var memoryRefused = metrics.NewCounter(`infergate_memory_budget_refused_total`)
