package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/infergate/infergate/drift"
	"github.com/infergate/infergate/gateway"
	"github.com/infergate/infergate/retrain/outbox"
)

// demoOverlay is what the demo changes in the gateway's config: its own
// repository and state, capture of every request, the admin API, a webhook
// to the retrain service, and room for two versions during the canary. The
// verbs are the listen address, repository, state_dir, the retrain
// service's address and a replica's own lines (demoReplicaLines).
const demoOverlay = `
listen: %q
repository: %q
state_dir: %q
watch: true
admin: {token_env: ` + demoTokenEnv + `}
auth: {keys: {labeler: {env: ` + demoFeedbackEnv + `}}}
webhooks:
  - {name: retrain, url: "http://%s/webhook", events: [drift.detected], secret_env: ` + demoSecretEnv + `, backoff_base: 200ms}
%s
models:
  demo:
    version_policy: {latest: 2}
    capture: {sample: 1}
    cache: {entries: 0}   # the demo's rows never repeat
    # Labels decide what retraining learns: only the traffic generator,
    # which holds the key, may post them.
    auth: {feedback: [labeler]}
    # After a detection whose retrain was rejected (the error-rate
    # detector may raise a false alarm on the first labels, before the
    # shift), the version may ask again 15s later, not after the default 10m.
    drift: {cooldown: 15s}
`

// demoReplicaLines send every event of a replica to the demo, which
// narrates the fleet's decisions from them, and name the replica.
const demoReplicaLines = `  - {name: narrator, url: "http://%s/events", secret_env: ` + demoSecretEnv + `, backoff_base: 200ms}
cluster: {replica: %s}`

// demoGatewayYAML is the config at o.gatewayConfig (configs/demo.yaml)
// with the demo's overlay: for replica "" the single in-process gateway,
// else the named replica, whose events also go to hookAddr.
func demoGatewayYAML(o demoOptions, listen, replica, retrainAddr, hookAddr string) ([]byte, error) {
	data, err := os.ReadFile(o.gatewayConfig)
	if err != nil {
		return nil, fmt.Errorf("cannot read the demo's gateway config: %w", err)
	}
	var cfg, over map[string]any
	if err := yaml.Unmarshal(data, &cfg); err != nil {
		return nil, fmt.Errorf("cannot read the demo's gateway config %s: %w", o.gatewayConfig, err)
	}
	repo, own := filepath.Join(o.work, "models"), ""
	if replica != "" {
		repo, own = filepath.Join(o.work, replica, "models"), fmt.Sprintf(demoReplicaLines, hookAddr, replica)
	}
	overlay := fmt.Sprintf(demoOverlay, listen, repo, filepath.Join(o.work, "state"), retrainAddr, own)
	if err := yaml.Unmarshal([]byte(overlay), &over); err != nil {
		return nil, fmt.Errorf("cannot build the demo's gateway config: %w", err)
	}
	merge(cfg, over)
	models, _ := cfg["models"].(map[string]any)
	cfg["models"] = map[string]any{"demo": models["demo"]}
	return yaml.Marshal(cfg)
}

// merge sets over's keys in dst, merging maps key by key.
func merge(dst, over map[string]any) {
	for k, v := range over {
		if sub, ok := v.(map[string]any); ok {
			if d, ok := dst[k].(map[string]any); ok {
				merge(d, sub)
				continue
			}
		}
		dst[k] = v
	}
}

// demoFleet is the gateway replicas of `demo --replicas N`: `infergate
// serve` processes on the demo's embedded engine, whose JSON logs the
// narrator tells, prefixed with the replica's name.
type demoFleet struct {
	exe      string
	n        *narrator
	replicas []*demoReplica
	logs     sync.WaitGroup // the log readers
	hook     *http.Server   // receives the replicas' events; closed by stop

	stopping chan struct{}
	jobs     sync.WaitGroup // the leader's killing and the restart
}

// demoReplica is one replica of a demoFleet.
type demoReplica struct {
	name, addr, config string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited
}

// startDemoFleet writes the replicas' configs and starts them, on
// consecutive ports from o.listen's, and waits until every one is ready.
func startDemoFleet(o demoOptions, n *narrator, count int, retrainAddr, hookAddr string) (*demoFleet, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("cannot find the infergate binary to start replicas: %w", err)
	}
	host, port, err := net.SplitHostPort(o.listen)
	if err != nil {
		return nil, fmt.Errorf("invalid --listen %q: %w", o.listen, err)
	}
	first, err := strconv.Atoi(port)
	if err != nil {
		return nil, fmt.Errorf("invalid --listen %q: want a numeric port for the replicas to count up from", o.listen)
	}
	f := &demoFleet{exe: exe, n: n, stopping: make(chan struct{})}
	for i := range count {
		r := &demoReplica{name: fmt.Sprintf("gateway-%d", i+1), addr: net.JoinHostPort(host, strconv.Itoa(first+i))}
		if first == 0 { // any free port each
			if r.addr, err = freePort(host); err != nil {
				return nil, err
			}
		}
		dir := filepath.Join(o.work, r.name)
		if err := copyDemoModel(o.model, filepath.Join(dir, "models")); err != nil {
			return nil, err
		}
		cfg, err := demoGatewayYAML(o, r.addr, r.name, retrainAddr, hookAddr)
		if err != nil {
			return nil, err
		}
		r.config = filepath.Join(dir, "infergate.yaml")
		if err := os.WriteFile(r.config, cfg, 0o644); err != nil {
			return nil, fmt.Errorf("cannot write the config of %s: %w", r.name, err)
		}
		f.replicas = append(f.replicas, r)
	}
	for _, r := range f.replicas {
		if err := f.start(r); err != nil {
			f.stop()
			return nil, err
		}
	}
	for _, r := range f.replicas {
		if err := r.waitReady(60 * time.Second); err != nil {
			f.stop()
			return nil, err
		}
	}
	return f, nil
}

// freePort returns an address on host with a port free now.
func freePort(host string) (string, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return "", fmt.Errorf("cannot find a free port for a replica: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// addrs are the replicas' addresses.
func (f *demoFleet) addrs() []string {
	var out []string
	for _, r := range f.replicas {
		out = append(out, r.addr)
	}
	return out
}

// start starts r's process, its logs going to the narrator.
func (f *demoFleet) start(r *demoReplica) error {
	cmd := exec.Command(f.exe, "serve", "--config", r.config, "--log-json")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("cannot start replica %s: %w", r.name, err)
	}
	done := make(chan struct{})
	r.mu.Lock()
	r.cmd, r.done = cmd, done
	r.mu.Unlock()
	log := slog.New(f.n.from(r.name))
	f.logs.Go(func() {
		tell(stderr, log)
		cmd.Wait()
		close(done)
	})
	return nil
}

// tell replays a replica's JSON log lines to log.
func tell(r io.Reader, log *slog.Logger) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var line map[string]any
		if json.Unmarshal(sc.Bytes(), &line) != nil {
			continue
		}
		var level slog.Level
		level.UnmarshalText(fmt.Append(nil, line["level"]))
		msg, _ := line["msg"].(string)
		var attrs []any
		for k, v := range line {
			if k != "time" && k != "level" && k != "msg" {
				attrs = append(attrs, slog.Any(k, v))
			}
		}
		log.Log(context.Background(), level, msg, attrs...)
	}
	io.Copy(io.Discard, r) // a line too long for the scanner: keep the pipe flowing
}

// waitReady polls r's readiness until it answers 200.
func (r *demoReplica) waitReady(timeout time.Duration) error {
	client := &http.Client{Timeout: time.Second}
	for deadline := time.Now().Add(timeout); ; time.Sleep(100 * time.Millisecond) {
		if resp, err := client.Get("http://" + r.addr + "/v2/health/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-r.exited():
			return fmt.Errorf("replica %s exited before it was ready (its log is above)", r.name)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("replica %s was not ready after %s", r.name, timeout)
		}
	}
}

func (r *demoReplica) exited() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.done
}

// leader asks the replicas in turn which one leads; "" when none answers
// or none leads.
func (f *demoFleet) leader() string {
	for _, r := range f.replicas {
		if leader := leaderSeenBy(r.addr); leader != "" {
			return leader
		}
	}
	return ""
}

// leaderSeenBy returns the leader that the replica at addr sees, "" when
// it does not answer or sees none.
func leaderSeenBy(addr string) string {
	client := &http.Client{Timeout: time.Second}
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/admin/cluster", nil)
	req.Header.Set("Authorization", "Bearer "+os.Getenv(demoTokenEnv))
	resp, err := client.Do(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var rep struct {
		Leader string `json:"leader"`
	}
	if json.NewDecoder(resp.Body).Decode(&rep) != nil {
		return ""
	}
	return rep.Leader
}

// killLeaderLater kills the leading replica with SIGKILL after wait, tells
// how long the fleet took to elect another, and restarts the killed one.
func (f *demoFleet) killLeaderLater(wait time.Duration) {
	f.jobs.Go(func() {
		select {
		case <-time.After(wait):
		case <-f.stopping:
			return
		}
		name := f.leader()
		var victim *demoReplica
		for _, r := range f.replicas {
			if r.name == name {
				victim = r
			}
		}
		if victim == nil {
			f.n.say("demo", "no replica leads now: nothing to kill")
			return
		}
		f.n.say("demo", "SIGKILL to %s, the leader, in the middle of the canary", name)
		killed := time.Now()
		victim.kill()
		for {
			if next := f.leader(); next != "" && next != name {
				f.n.say("demo", "%s leads now, %.1fs after the kill; the canary goes on from the shared state", next, time.Since(killed).Seconds())
				break
			}
			select {
			case <-time.After(100 * time.Millisecond):
			case <-f.stopping:
				return
			}
		}
		if err := f.start(victim); err != nil {
			f.n.say("demo", "cannot restart %s: %v", name, err)
			return
		}
		if err := victim.waitReady(60 * time.Second); err != nil {
			f.n.say("demo", "%v", err)
			return
		}
		f.n.say("demo", "%s restarted and ready; it follows %s", name, f.leader())
	})
}

// kill kills r's process with SIGKILL and waits for it to exit.
func (r *demoReplica) kill() {
	r.mu.Lock()
	cmd, done := r.cmd, r.done
	r.mu.Unlock()
	cmd.Process.Kill()
	<-done
}

// stop stops every replica (SIGTERM, then SIGKILL after 20s) and waits for
// their logs, then stops receiving their events.
func (f *demoFleet) stop() {
	close(f.stopping)
	f.jobs.Wait()
	defer func() {
		if f.hook != nil {
			f.hook.Close()
		}
	}()
	for _, r := range f.replicas {
		r.mu.Lock()
		cmd, done := r.cmd, r.done
		r.mu.Unlock()
		if cmd == nil {
			continue
		}
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}
	f.logs.Wait()
}

// demoHook receives the fleet's events, signed by the leader, and hands
// them to the demo's loop as the in-process gateway's would be.
type demoHook struct {
	events    chan<- gateway.Event
	decisions chan<- drift.Decision

	mu   sync.Mutex
	seen map[string]bool // event ids: a new leader may send one again
}

func (h *demoHook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	e, code, err := outbox.Receive(r, []byte(os.Getenv(demoSecretEnv)), time.Now(), 5*time.Minute, 1<<20)
	if err != nil {
		http.Error(w, err.Error(), code)
		return
	}
	// One delivery at a time, so that an event is handed over once even
	// when a new leader sends it again meanwhile.
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.seen[e.ID] {
		return
	}
	model, version, _ := strings.Cut(e.Subject, "/")
	typ := strings.TrimPrefix(e.Type, "dev.infergate.")
	var handed bool
	if typ == "drift.detected" {
		select {
		case h.decisions <- drift.Decision{Type: drift.DriftDetected, Model: model, Version: version, Time: e.Time}:
			handed = true
		case <-r.Context().Done():
		}
	} else {
		select {
		case h.events <- gateway.Event{Type: typ, Model: model, Version: version, Time: e.Time}:
			handed = true
		case <-r.Context().Done():
		}
	}
	if !handed {
		http.Error(w, "the demo is busy", http.StatusServiceUnavailable)
		return
	}
	h.seen[e.ID] = true
}
