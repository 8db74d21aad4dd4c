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
// With several gateway replicas it spreads requests and labels over them
// in turn, as a load balancer would, and sends a request that a replica
// failed to the next one.
type traffic struct {
	addrs []string
	turn  atomic.Uint64
	o     demoOptions
	phase atomic.Int32

	jobs     chan job
	labels   chan label
	stopCh   chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup

	mu sync.Mutex
	// total and correct count answers per phase; the window fields those
	// since the last status line. mu guards them and sent, dropped.
	total, correct             [3]int
	windowTotal, windowCorrect int
	windowVersions             map[string]int
	windowStart                time.Time
	failed                     int
	// failovers counts requests and label posts that a replica failed and
	// another answered, since the last status line.
	failovers int
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

func startTraffic(addrs []string, o demoOptions) *traffic {
	t := &traffic{addrs: addrs, o: o, jobs: make(chan job, trafficWorkers*4), labels: make(chan label, 1<<16),
		stopCh: make(chan struct{}), windowVersions: map[string]int{}, windowStart: time.Now()}
	t.wg.Add(2 + trafficWorkers)
	go t.schedule()
	go t.label()
	for range trafficWorkers {
		go t.work()
	}
	return t
}

// stop stops the traffic and waits for its goroutines; it is idempotent.
func (t *traffic) stop() {
	t.stopOnce.Do(func() { close(t.stopCh) })
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
		err := t.do(client, "/v2/models/demo/infer", nil, inferBody(j), req, resp)
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

// do posts body to path on the replicas in turn, from the next one on,
// until one answers other than with a failure of its own (no connection,
// 502, 503, 504); header sets one header, when given as name and value.
func (t *traffic) do(client *fasthttp.Client, path string, header []string, body string, req *fasthttp.Request, resp *fasthttp.Response) error {
	first := t.turn.Add(1)
	var err error
	for i := range uint64(len(t.addrs)) {
		req.Reset()
		req.SetRequestURI("http://" + t.addrs[(first+i)%uint64(len(t.addrs))] + path)
		req.Header.SetMethod(fasthttp.MethodPost)
		if len(header) == 2 {
			req.Header.Set(header[0], header[1])
		}
		req.SetBodyString(body)
		err = client.DoTimeout(req, resp, 10*time.Second)
		if code := resp.StatusCode(); err == nil && code != fasthttp.StatusBadGateway && code != fasthttp.StatusServiceUnavailable && code != fasthttp.StatusGatewayTimeout {
			if i > 0 {
				t.mu.Lock()
				t.failovers++
				t.mu.Unlock()
			}
			return nil
		}
	}
	if err == nil {
		err = fmt.Errorf("every replica answered %d", resp.StatusCode())
	}
	return err
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
		err := t.do(client, "/v2/models/demo/feedback", []string{fasthttp.HeaderAuthorization, "Bearer " + os.Getenv(demoFeedbackEnv)}, b.String(), req, resp)
		if err == nil && resp.StatusCode() == fasthttp.StatusOK && t.o.labeled != nil {
			ids := make([]string, len(batch))
			for i, l := range batch {
				ids[i] = l.id
			}
			t.o.labeled(ids)
		}
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
	if t.failovers > 0 {
		line += fmt.Sprintf("  (%d sent to another replica)", t.failovers)
	}
	t.windowTotal, t.windowCorrect, t.failed, t.failovers, t.windowStart = 0, 0, 0, 0, time.Now()
	clear(t.windowVersions)
	return line
}
