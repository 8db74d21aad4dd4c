package detection

import (
	"io"
	"time"

	"github.com/schollz/progressbar/v3"
)

// progressTick is how often the progress bar is redrawn.
const progressTick = 250 * time.Millisecond

// startProgress draws a bar of the windows judged out of total on w until
// stop is called; with a nil w it draws nothing. The bar is redrawn by a
// ticker of its own rather than by the workers, which only count.
func startProgress(w io.Writer, total int) *progress {
	p := &progress{stop: func() {}}
	if w == nil {
		return p
	}
	bar := progressbar.NewOptions(total,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription("drift detection: windows"),
		progressbar.OptionSetWidth(30),
		progressbar.OptionShowCount(),
		progressbar.OptionThrottle(progressTick),
		progressbar.OptionClearOnFinish(),
	)
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		ticker := time.NewTicker(progressTick)
		defer ticker.Stop()
		for {
			select {
			case <-quit:
				bar.Finish()
				return
			case <-ticker.C:
				bar.Set64(p.done.Load())
			}
		}
	}()
	p.stop = func() {
		close(quit)
		<-done
	}
	return p
}
