package bench

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the suite when a test leaves a goroutine running.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m, fasthttpBackground...) }

// fasthttpBackground are the goroutines fasthttp keeps on its own: idle
// clients' and worker pools' cleaners, which end a few seconds after their
// last use, and its process-wide date and DNS caches.
var fasthttpBackground = []goleak.Option{
	goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"),
	goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*HostClient).connsCleaner"),
	goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*Client).mCleaner"),
	goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"),
	goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*TCPDialer).tcpAddrsClean"),
}
