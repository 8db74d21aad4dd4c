package main

import (
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fastjson"

	"github.com/infergate/infergate/retrain/trainer"
)

// The phases of the demo's traffic.
const (
	phaseBefore   = iota // the world the demo model was trained on
	phaseShifted         // shifted inputs and concept, before the promotion
	phasePromoted        // the same, after it
)

var phaseNames = [...]string{"before the shift", "shifted", "after promotion"}

// trafficWorkers bounds the requests in flight.
const trafficWorkers = 8

// traffic sends the demo's requests at a fixed rate, each one row with an
// id, and posts each row's true label a little later, as a real labeling
// process would; it keeps the accuracy of the answers it got per phase.
type traffic struct {
	addr  string
	o     demoOptions
	phase atomic.Int32

	jobs   chan job
	labels chan label
	stopCh chan struct{}
	wg     sync.WaitGroup

	mu sync.Mutex
	// total and correct count answers per phase; the window fields those
	// since the last status line. mu guards them and sent, dropped.
	total, correct             [3]int
	windowTotal, windowCorrect int
	windowVersions             map[string]int
	windowStart                time.Time
	failed                     int
}

type job struct {
	id    string
	row   []float32
	label int
}

type label struct {
	due   time.Time
	id    string
	class int
}

func startTraffic(addr string, o demoOptions) *traffic {
	t := &traffic{addr: addr, o: o, jobs: make(chan job, trafficWorkers*4), labels: make(chan label, 1<<16),
		stopCh: make(chan struct{}), windowVersions: map[string]int{}, windowStart: time.Now()}
	t.wg.Add(2 + trafficWorkers)
	go t.schedule()
	go t.label()
	for range trafficWorkers {
		go t.work()
	}
	return t
}

func (t *traffic) stop() {
	close(t.stopCh)
	t.wg.Wait()
}

func (t *traffic) setPhase(p int) { t.phase.Store(int32(p)) }

// schedule makes rate jobs a second from the phase's world; when every
// worker is busy the job is skipped rather than queued without bound.
func (t *traffic) schedule() {
	defer t.wg.Done()
	const tick = 10 * time.Millisecond
	ticker := time.NewTicker(tick)
	defer ticker.Stop()
	var rows trainer.Dataset
	var next, chunk int
	var due float64
	world := -1 // whether rows are of the shifted world
	for n := 0; ; {
		select {
		case <-t.stopCh:
			close(t.jobs)
			return
		case <-ticker.C:
		}
		for due += t.o.rate * tick.Seconds(); due >= 1; due-- {
			if shifted := min(int(t.phase.Load()), 1); next == len(rows.X) || shifted != world {
				// Fresh rows, never those the demo model was trained on.
				chunk, world = chunk+1, shifted
				if shifted == 0 {
					rows = trainer.Synthetic(uint64(1000+chunk), 1000)
				} else {
					rows = trainer.SyntheticShifted(uint64(2000+chunk), 1000)
				}
				next = 0
			}
			n++
			select {
			case t.jobs <- job{id: "demo-" + strconv.Itoa(n), row: rows.X[next], label: rows.Y[next]}:
			default:
			}
			next++
		}
	}
}

func (t *traffic) work() {
	defer t.wg.Done()
	client := &fasthttp.Client{}
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	var p fastjson.Parser
	for j := range t.jobs {
		phase := int(t.phase.Load())
		req.Reset()
		req.SetRequestURI("http://" + t.addr + "/v2/models/demo/infer")
		req.Header.SetMethod(fasthttp.MethodPost)
		req.SetBodyString(inferBody(j))
		err := client.DoTimeout(req, resp, 10*time.Second)
		predicted := -1
		if err == nil && resp.StatusCode() == fasthttp.StatusOK {
			if v, perr := p.ParseBytes(resp.Body()); perr == nil {
				if probs := v.GetArray("outputs", "0", "data"); len(probs) == 2 {
					predicted = 0
					if probs[1].GetFloat64() > probs[0].GetFloat64() {
						predicted = 1
					}
				}
			}
		}
		t.record(phase, string(resp.Header.Peek("infergate-model-version")), predicted, j.label)
		select {
		case t.labels <- label{due: time.Now().Add(t.o.labelDelay), id: j.id, class: j.label}:
		default:
		}
	}
}

func inferBody(j job) string {
	var b strings.Builder
	fmt.Fprintf(&b, `{"id":%q,"inputs":[{"name":"input","datatype":"FP32","shape":[1,8],"data":[`, j.id)
	for i, x := range j.row {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatFloat(float64(x), 'g', -1, 32))
	}
	b.WriteString("]}]}")
	return b.String()
}

func (t *traffic) record(phase int, version string, predicted, truth int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if predicted < 0 {
		t.failed++
		return
	}
	t.total[phase]++
	t.windowTotal++
	t.windowVersions[version]++
	if predicted == truth {
		t.correct[phase]++
		t.windowCorrect++
	}
}

// label posts the labels as they come due, those due together in one
// feedback request.
func (t *traffic) label() {
	defer t.wg.Done()
	client := &fasthttp.Client{}
	var batch []label
	flush := func() {
		if len(batch) == 0 {
			return
		}
		var b strings.Builder
		b.WriteByte('[')
		for i, l := range batch {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `{"id":%q,"label":%d}`, l.id, l.class)
		}
		b.WriteByte(']')
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		req.SetRequestURI("http://" + t.addr + "/v2/models/demo/feedback")
		req.Header.SetMethod(fasthttp.MethodPost)
		req.Header.Set(fasthttp.HeaderAuthorization, "Bearer "+os.Getenv(demoFeedbackEnv))
		req.SetBodyString(b.String())
		client.DoTimeout(req, resp, 10*time.Second)
		fasthttp.ReleaseRequest(req)
		fasthttp.ReleaseResponse(resp)
		batch = batch[:0]
	}
	for {
		select {
		case <-t.stopCh:
			return
		case l := <-t.labels:
			if wait := time.Until(l.due); wait > 0 {
				flush()
				select {
				case <-time.After(wait):
				case <-t.stopCh:
					return
				}
			}
			if batch = append(batch, l); len(batch) == 256 {
				flush()
			}
		case <-time.After(50 * time.Millisecond):
			flush()
		}
	}
}

// accuracy returns the share of right answers in phase.
func (t *traffic) accuracy(phase int) float64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.total[phase] == 0 {
		return 0
	}
	return float64(t.correct[phase]) / float64(t.total[phase])
}

// status describes the traffic since the last call and starts over.
func (t *traffic) status() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	elapsed := time.Since(t.windowStart).Seconds()
	var shares []string
	for _, v := range slices.Sorted(maps.Keys(t.windowVersions)) {
		shares = append(shares, fmt.Sprintf("v%s %.0f%%", v, 100*float64(t.windowVersions[v])/float64(max(t.windowTotal, 1))))
	}
	line := fmt.Sprintf("%-16s %4.0f req/s  accuracy %.3f  served by %s", phaseNames[t.phase.Load()],
		float64(t.windowTotal)/elapsed, float64(t.windowCorrect)/float64(max(t.windowTotal, 1)), strings.Join(shares, ", "))
	if t.failed > 0 {
		line += fmt.Sprintf("  (%d failed)", t.failed)
	}
	t.windowTotal, t.windowCorrect, t.failed, t.windowStart = 0, 0, 0, time.Now()
	clear(t.windowVersions)
	return line
}
