package gateway

import (
	"testing"

	"github.com/infergate/infergate/runtime"
)

func TestRequestValueLimit(t *testing.T) {
	f := func(shapes [][]int64, maxRows, want int) {
		t.Helper()
		var inputs []runtime.TensorInfo
		for _, shape := range shapes {
			inputs = append(inputs, runtime.TensorInfo{Shape: shape})
		}
		if got := requestValueLimit(inputs, maxRows, 1<<20); got != want {
			t.Fatalf("requestValueLimit(%v, %d) = %d, want %d", shapes, maxRows, got, want)
		}
	}
	d := runtime.Dynamic
	f([][]int64{{d, 8}}, 64, requestSlackValues+64*8+2+16)
	f([][]int64{{d, 8}, {d, 2, 3}}, 4, requestSlackValues+4*8+2+16+4*6+3+16)
	f([][]int64{{1, 8}}, 0, requestSlackValues+8+2+16)
	f([][]int64{{d, 8}}, 0, 1<<20)        // rows unbounded: only the body bounds it
	f([][]int64{{d, d}}, 64, 1<<20)       // another free dimension
	f([][]int64{{d, 1 << 30}}, 64, 1<<20) // more than the body can hold
}

func TestConnectionLimits(t *testing.T) {
	f := func(maxConns, perIP, descriptors, wantTotal, wantPerIP int) {
		t.Helper()
		c := Config{MaxConnections: maxConns, MaxConnectionsPerIP: perIP}
		if total, per := c.connectionLimits(descriptors); total != wantTotal || per != wantPerIP {
			t.Fatalf("connectionLimits(%d, %d; %d descriptors) = %d, %d; want %d, %d", maxConns, perIP, descriptors, total, per, wantTotal, wantPerIP)
		}
	}
	f(0, 0, 1024, 896, 448)
	f(0, 0, 256, 192, 96)
	f(0, 0, 1<<20, 1<<20-1<<17, (1<<20-1<<17)/2)
	f(0, 0, 40, 16, 8) // never below 16
	f(500, 0, 1024, 500, 250)
	f(500, 500, 1024, 500, 500)
}

func TestMemoryBudget(t *testing.T) {
	b := memoryBudget{limit: 1600, drained: make(chan struct{}, 1)}
	if !b.reserve(1000) || b.reserve(601) || !b.reserve(600) {
		t.Fatal("reserve: want 1000 and 600 of 1600 to fit, 601 after the 1000 not")
	}
	if used := b.used.Load(); used != 1600 {
		t.Fatalf("used %d after the reservations, want 1600", used)
	}
	held := int64(1600)
	b.releaseHeld(&held)
	if held != 0 || b.used.Load() != 0 {
		t.Fatalf("after releaseHeld: held %d, used %d; want 0, 0", held, b.used.Load())
	}
	select {
	case <-b.drained:
	default:
		t.Fatal("a burst over a quarter of the budget that drained did not signal it")
	}
	b.reserve(100) // under a quarter: no burst
	b.release(100)
	select {
	case <-b.drained:
		t.Fatal("use under a quarter of the budget signalled a drained burst")
	default:
	}
}
