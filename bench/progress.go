package bench

import (
	"fmt"
	"io"
	"time"

	"github.com/schollz/progressbar/v3"
)

// progressTick is how often the progress bar is redrawn.
const progressTick = 250 * time.Millisecond

// startProgress draws a progress bar of the run's time on w, with the phase
// and the current answer rate, until the returned stop is called. With a nil
// w it draws nothing.
func startProgress(w io.Writer, name string, ph phases, rec *recorder) (stop func()) {
	if w == nil {
		return func() {}
	}
	total := ph.end.Sub(ph.start)
	bar := progressbar.NewOptions64(total.Milliseconds(),
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription(name),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(progressTick),
		progressbar.OptionSetPredictTime(false),
		progressbar.OptionSetElapsedTime(false),
		progressbar.OptionClearOnFinish(),
	)
	quit := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		ticker := time.NewTicker(progressTick)
		defer ticker.Stop()
		last, lastAt := int64(0), time.Now()
		for {
			select {
			case <-quit:
				bar.Finish()
				return
			case now := <-ticker.C:
				n := rec.done.Load()
				rate := float64(n-last) / now.Sub(lastAt).Seconds()
				last, lastAt = n, now
				phase := "measuring"
				if now.Before(ph.measure) {
					phase = "warming up"
				}
				bar.Describe(fmt.Sprintf("%-24s %-10s %9.0f req/s", name, phase, rate))
				bar.Set64(min(now.Sub(ph.start), total).Milliseconds())
			}
		}
	}()
	return func() {
		close(quit)
		<-done
	}
}
