package natscluster

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/infergate/infergate/retrain/engine"
)

// TokenEnv is the environment variable through which EngineConfig hands the
// cluster's token to engine.Connect, as a fleet's config would
// (cluster.token_env).
const TokenEnv = "INFERGATE_TEST_NATS_TOKEN"

// ClusterName is the cluster's name in every server's configuration.
const ClusterName = "infergate-test"

// defaultReadyTimeout bounds how long Start and Restart wait for servers to
// be ready: a new cluster is ready in well under a second and a restarted
// server in about 3 s here, but a loaded machine is slower, and a restart
// that finds no meta leader waits for a raft election (4 to 9 s in
// nats-server).
const defaultReadyTimeout = 30 * time.Second

// pollInterval is how often readiness is polled.
const pollInterval = 25 * time.Millisecond

// probeTimeout bounds one attempt of the placement probe: its stream is
// placed in milliseconds, and an answer lost while the cluster forms is
// never coming.
const probeTimeout = 3 * time.Second

// logTailLines is how much of each server's log a failed test shows.
const logTailLines = 40

// Option changes how Start configures and waits for a cluster.
type Option func(*options)

type options struct {
	extraConfig  string
	readyTimeout time.Duration
}

// ExtraConfig appends text, in nats-server's configuration syntax, to every
// server's configuration file; for example "max_payload: 8MB".
func ExtraConfig(text string) Option {
	return func(o *options) { o.extraConfig += "\n" + text + "\n" }
}

// ReadyTimeout bounds how long Start and Restart wait for servers to be
// ready (default 30 s).
func ReadyTimeout(d time.Duration) Option {
	return func(o *options) { o.readyTimeout = d }
}

// Cluster is a running cluster of nats-server processes of one test.
type Cluster struct {
	t     testing.TB
	bin   string
	token string
	opts  options
	// http polls the monitoring ports; without keep-alives, so that no
	// connection goroutine outlives a test.
	http *http.Client

	// mu guards the servers' processes and the expected flags.
	mu      sync.Mutex
	servers []*node
}

// node is one server of the cluster: its files and ports, fixed for the
// cluster's life so that a restart is the same server, and its process.
type node struct {
	name string
	// configPath, logPath and storeDir are in the server's own folder.
	configPath, logPath, storeDir string
	clientPort, clusterPort       int
	httpPort                      int
	// clusterUser and clusterPass are what routes authenticate with.
	clusterUser, clusterPass string
	// proc is the running or last process, nil before the first start.
	proc *process
	// expectExit is set by Kill and Term: the exit is the test's doing.
	expectExit bool
}

// process is a started nats-server; done is closed when it has exited,
// with err its exit status.
type process struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// Start starts n clustered servers and waits until every one is ready
// (in contact with a JetStream meta leader, current with it, and a place
// for streams); on a failure it fails t with the servers' log tails. The
// servers are killed when t ends, and a failed test shows their log tails.
// A server is named "n<i>" and tagged "natscluster:n<i>" for placement.
func Start(t testing.TB, n int, opts ...Option) *Cluster {
	t.Helper()
	if n < 1 {
		t.Fatalf("natscluster: cannot start %d servers", n)
	}
	c := &Cluster{
		t:     t,
		bin:   binary(t),
		token: randomHex(t, 24),
		opts:  options{readyTimeout: defaultReadyTimeout},
		http:  &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}},
	}
	for _, o := range opts {
		o(&c.opts)
	}
	root := t.TempDir()
	// t.TempDir's removal was registered first, so it runs after the
	// servers are gone.
	t.Cleanup(c.cleanup)
	routePass := randomHex(t, 16)
	// A port picked free may be taken before its server listens on it
	// (other tests run beside this one): then start over on new ports.
	for attempt := 1; ; attempt++ {
		ports := freePorts(t, 3*n)
		c.mu.Lock()
		c.servers = make([]*node, n)
		for i := range c.servers {
			name := "n" + strconv.Itoa(i)
			dir := filepath.Join(root, fmt.Sprintf("try%d", attempt), name)
			c.servers[i] = &node{
				name:       name,
				clientPort: ports[3*i], clusterPort: ports[3*i+1], httpPort: ports[3*i+2],
				configPath: filepath.Join(dir, "nats.conf"), logPath: filepath.Join(dir, "nats.log"),
				storeDir:    filepath.Join(dir, "store"),
				clusterUser: "route", clusterPass: routePass,
			}
		}
		c.mu.Unlock()
		for i := range n {
			c.writeConfig(i)
		}
		var err error
		for i := range n {
			if err = c.startProcess(i); err != nil {
				break
			}
		}
		if err == nil {
			err = c.waitHealthy(time.Now().Add(c.opts.readyTimeout), allOf(n))
		}
		if err == nil {
			return c
		}
		c.killAll()
		if !c.portTaken() || attempt == 3 {
			c.t.Fatalf("natscluster: cannot start %d servers: %v\n%s", n, err, c.logTails())
		}
	}
}

// allOf returns the indexes of n servers.
func allOf(n int) []int {
	all := make([]int, n)
	for i := range all {
		all[i] = i
	}
	return all
}

// writeConfig writes server i's configuration file: loopback only, clients
// with the token, routes to every other server with the route password,
// JetStream with its store in its folder and every write synced.
func (c *Cluster) writeConfig(i int) {
	c.mu.Lock()
	s := c.servers[i]
	var routes []string
	for j, o := range c.servers {
		if j != i {
			routes = append(routes, strconv.Quote(fmt.Sprintf("nats-route://%s:%s@127.0.0.1:%d", o.clusterUser, o.clusterPass, o.clusterPort)))
		}
	}
	c.mu.Unlock()
	conf := fmt.Sprintf(`# natscluster: server %[1]s of a test cluster
server_name: %[1]q
server_tags: [%[6]q]
listen: "127.0.0.1:%[2]d"
http: "127.0.0.1:%[3]d"
logtime: true
authorization {
  token: %[4]q
}
jetstream {
  store_dir: %[5]q
  sync_interval: always
  max_memory_store: 256MB
  max_file_store: 2GB
}
`, s.name, s.clientPort, s.httpPort, c.token, s.storeDir, serverTag(s.name))
	// One server is no cluster: JetStream refuses a cluster block
	// without routes.
	if len(routes) > 0 {
		conf += fmt.Sprintf(`cluster {
  name: %q
  listen: "127.0.0.1:%d"
  authorization {
    user: %q
    password: %q
  }
  routes: [
    %s
  ]
}
`, ClusterName, s.clusterPort, s.clusterUser, s.clusterPass, strings.Join(routes, "\n    "))
	}
	conf += c.opts.extraConfig
	if err := os.MkdirAll(s.storeDir, 0o700); err != nil {
		c.t.Fatalf("natscluster: cannot create the folder of server %s: %v", s.name, err)
	}
	if err := os.WriteFile(s.configPath, []byte(conf), 0o600); err != nil {
		c.t.Fatalf("natscluster: cannot write the configuration of server %s: %v", s.name, err)
	}
}

// startProcess starts server i, its output appended to its log file.
func (c *Cluster) startProcess(i int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.servers[i]
	if s.proc != nil && !s.proc.exited() {
		panic("BUG: natscluster: server " + s.name + " started twice")
	}
	logFile, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("cannot open the log of server %s: %w", s.name, err)
	}
	defer logFile.Close()
	fmt.Fprintf(logFile, "--- natscluster: starting %s at %s\n", s.name, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(c.bin, "-c", s.configPath)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("cannot start server %s (%s): %w", s.name, c.bin, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	s.proc, s.expectExit = p, false
	return nil
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitHealthy waits until each of the servers idx is ready for a test:
// it answers 200 on /healthz (JetStream meta leader known and this server
// current with it, and its streams and consumers current), and the meta
// leader can place a stream on it, which it cannot until the server's
// statistics have reached it, a moment after /healthz says ok. It fails
// early when a server has exited.
func (c *Cluster) waitHealthy(deadline time.Time, idx []int) error {
	for _, i := range idx {
		for {
			if p := c.proc(i); p == nil || p.exited() {
				return fmt.Errorf("server %s exited while starting: %v", c.name(i), p.exitErr())
			}
			err := c.healthz(i)
			if err == nil {
				err = c.probePlacement(i, deadline)
				if errors.Is(err, context.DeadlineExceeded) && time.Now().Before(deadline) {
					c.t.Logf("natscluster: server %s: %v; trying again", c.name(i), err)
				}
			}
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("server %s not ready within %s: %w", c.name(i), c.opts.readyTimeout, err)
			}
			time.Sleep(pollInterval)
		}
	}
	return nil
}

// probePlacement creates a one-replica stream in memory placed on server i
// by its tag, through a connection to it, and deletes it.
func (c *Cluster) probePlacement(i int, deadline time.Time) error {
	nc, err := nats.Connect(c.URL(i), nats.Token(c.token), nats.NoReconnect(), nats.Timeout(time.Second))
	if err != nil {
		return fmt.Errorf("cannot connect: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	// One attempt is bounded by probeTimeout, not by the whole deadline:
	// a forming cluster may drop a create's answer (the request reaches
	// no meta leader, and no error comes back), and the next attempt,
	// idempotent, is answered.
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	ctx, cancelAttempt := context.WithTimeout(ctx, probeTimeout)
	defer cancelAttempt()
	name := "natscluster_ready_" + c.name(i)
	_, err = js.CreateStream(ctx, jetstream.StreamConfig{
		Name: name, Subjects: []string{"natscluster.ready." + c.name(i)}, Storage: jetstream.MemoryStorage,
		Placement: &jetstream.Placement{Cluster: c.clusterName(), Tags: []string{serverTag(c.name(i))}},
	})
	if err != nil {
		return fmt.Errorf("cannot place a stream on it: %w", err)
	}
	if err := js.DeleteStream(ctx, name); err != nil {
		return fmt.Errorf("cannot delete the stream placed on it: %w", err)
	}
	return nil
}

// clusterName returns the name placement asks for: ClusterName, or none
// for a single server, which is no cluster.
func (c *Cluster) clusterName() string {
	if c.N() == 1 {
		return ""
	}
	return ClusterName
}

// serverTag is the tag of the server named name, which placement can
// select it by.
func serverTag(name string) string { return "natscluster:" + name }

func (p *process) exitErr() error {
	if p == nil {
		return errors.New("never started")
	}
	<-p.done
	return p.err
}

// healthz asks server i's /healthz.
func (c *Cluster) healthz(i int) error {
	resp, err := c.http.Get(c.MonitorURL(i) + "/healthz")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("/healthz: %s: %s", resp.Status, bytes.TrimSpace(body))
	}
	return nil
}

// portTaken reports whether a server's log says a port was taken.
func (c *Cluster) portTaken() bool {
	for i := range c.N() {
		if strings.Contains(c.Log(i), "address already in use") {
			return true
		}
	}
	return false
}

// N returns the number of servers.
func (c *Cluster) N() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.servers)
}

func (c *Cluster) node(i int) *node {
	c.mu.Lock()
	defer c.mu.Unlock()
	if i < 0 || i >= len(c.servers) {
		c.t.Fatalf("natscluster: no server %d in a cluster of %d", i, len(c.servers))
	}
	return c.servers[i]
}

func (c *Cluster) proc(i int) *process {
	s := c.node(i)
	c.mu.Lock()
	defer c.mu.Unlock()
	return s.proc
}

func (c *Cluster) name(i int) string { return c.node(i).name }

// Name returns server i's server_name ("n0", "n1", ...), which JetStream's
// cluster information uses (leader, replicas).
func (c *Cluster) Name(i int) string { return c.name(i) }

// Index returns the index of the server named name, or -1.
func (c *Cluster) Index(name string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, s := range c.servers {
		if s.name == name {
			return i
		}
	}
	return -1
}

// URL returns server i's client URL, without credentials.
func (c *Cluster) URL(i int) string {
	return fmt.Sprintf("nats://127.0.0.1:%d", c.node(i).clientPort)
}

// URLs returns every server's client URL, comma-separated, as
// cluster.nats_url takes them.
func (c *Cluster) URLs() string {
	urls := make([]string, c.N())
	for i := range urls {
		urls[i] = c.URL(i)
	}
	return strings.Join(urls, ",")
}

// MonitorURL returns the base URL of server i's monitoring endpoints
// (/healthz, /jsz, /varz, ...).
func (c *Cluster) MonitorURL(i int) string {
	return fmt.Sprintf("http://127.0.0.1:%d", c.node(i).httpPort)
}

// Token returns the token that clients authenticate with.
func (c *Cluster) Token() string { return c.token }

// EngineConfig sets TokenEnv to the cluster's token for the rest of t (so t
// must not be parallel) and returns the engine configuration of a replica
// of a fleet on this cluster: every URL, the token from TokenEnv, streams
// replicated on every server up to 3.
func (c *Cluster) EngineConfig(t testing.TB) engine.Config {
	t.Setenv(TokenEnv, c.token)
	return engine.Config{NATSURL: c.URLs(), TokenEnv: TokenEnv, StreamReplicas: min(c.N(), 3)}
}

// JetStream returns server i's view of JetStream from its /jsz: the meta
// cluster and, for every account, its streams with their state as this
// server holds it (a follower's copy, too).
func (c *Cluster) JetStream(i int) (*server.JSInfo, error) {
	resp, err := c.http.Get(c.MonitorURL(i) + "/jsz?accounts=true&streams=true")
	if err != nil {
		return nil, fmt.Errorf("cannot read /jsz of server %s: %w", c.name(i), err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("cannot read /jsz of server %s: %s", c.name(i), resp.Status)
	}
	var info server.JSInfo
	if err := json.NewDecoder(resp.Body).Decode(&info); err != nil {
		return nil, fmt.Errorf("cannot decode /jsz of server %s: %w", c.name(i), err)
	}
	return &info, nil
}

// StreamState returns the state of stream as server i holds it, from its
// /jsz; ok is false when the server holds no copy of it.
func (c *Cluster) StreamState(i int, stream string) (state server.StreamState, ok bool, err error) {
	info, err := c.JetStream(i)
	if err != nil {
		return state, false, err
	}
	for _, acc := range info.AccountDetails {
		for _, sd := range acc.Streams {
			if sd.Name == stream {
				return sd.State, true, nil
			}
		}
	}
	return state, false, nil
}

// Kill sends server i SIGKILL and waits until it has exited: no shutdown,
// no leader handed over, what its store had not synced lost (with
// sync_interval always, nothing acknowledged).
func (c *Cluster) Kill(i int) {
	c.t.Helper()
	if p := c.signalExit(i, os.Kill, "kill"); p != nil {
		<-p.done
	}
}

// Term sends server i SIGTERM and waits until it has exited: a graceful
// shutdown, as a rolling upgrade does it, in which the server hands over
// what it leads first.
func (c *Cluster) Term(i int) {
	c.t.Helper()
	p := c.signalExit(i, syscall.SIGTERM, "stop")
	if p == nil {
		return
	}
	select {
	case <-p.done:
	case <-time.After(c.opts.readyTimeout):
		c.Kill(i)
		c.t.Fatalf("natscluster: server %s did not exit within %s of SIGTERM; killed\n%s", c.name(i), c.opts.readyTimeout, c.logTails())
	}
}

// signalExit marks server i's exit as expected and sends sig to its
// process, if it runs; it returns the process it signalled, nil when none
// ran. what names what sig does, for the failure.
func (c *Cluster) signalExit(i int, sig os.Signal, what string) *process {
	c.t.Helper()
	s := c.node(i)
	c.mu.Lock()
	p := s.proc
	s.expectExit = true
	c.mu.Unlock()
	if p == nil || p.exited() {
		return nil
	}
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		c.t.Fatalf("natscluster: cannot %s server %s: %v", what, s.name, err)
	}
	return p
}

// Restart kills server i if it runs, starts it again with the same
// configuration, ports and store, and waits until it is healthy: back in
// the cluster and current with every stream it holds a copy of.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	c.Kill(i)
	if err := c.startProcess(i); err != nil {
		c.t.Fatalf("natscluster: %v", err)
	}
	if err := c.waitHealthy(time.Now().Add(c.opts.readyTimeout), []int{i}); err != nil {
		c.t.Fatalf("natscluster: cannot restart: %v\n%s", err, c.logTails())
	}
}

// WaitHealthy waits until server i is ready, as Restart does; for a
// server that was stopped (Stop) and continued.
func (c *Cluster) WaitHealthy(i int) {
	c.t.Helper()
	if err := c.waitHealthy(time.Now().Add(c.opts.readyTimeout), []int{i}); err != nil {
		c.t.Fatalf("natscluster: %v\n%s", err, c.logTails())
	}
}

// Stop sends server i SIGSTOP: it holds its connections open and answers
// nothing, as a machine that hangs does, until Cont.
func (c *Cluster) Stop(i int) { c.signal(i, syscall.SIGSTOP) }

// Cont sends server i SIGCONT, ending a Stop.
func (c *Cluster) Cont(i int) { c.signal(i, syscall.SIGCONT) }

func (c *Cluster) signal(i int, sig syscall.Signal) {
	c.t.Helper()
	p := c.proc(i)
	if p == nil || p.exited() {
		c.t.Fatalf("natscluster: cannot send %v to server %s: it is not running", sig, c.name(i))
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		c.t.Fatalf("natscluster: cannot send %v to server %s: %v", sig, c.name(i), err)
	}
}

// Log returns server i's log, every start of it.
func (c *Cluster) Log(i int) string {
	data, err := os.ReadFile(c.node(i).logPath)
	if err != nil {
		return fmt.Sprintf("(cannot read the log: %v)", err)
	}
	return string(data)
}

// logTails returns the last lines of every server's log.
func (c *Cluster) logTails() string {
	var b strings.Builder
	for i := range c.N() {
		lines := strings.Split(strings.TrimRight(c.Log(i), "\n"), "\n")
		lines = lines[max(0, len(lines)-logTailLines):]
		fmt.Fprintf(&b, "--- log of server %s (last %d lines):\n%s\n", c.name(i), len(lines), strings.Join(lines, "\n"))
	}
	return b.String()
}

// killAll kills every server and waits until each has exited.
func (c *Cluster) killAll() {
	for i := range c.N() {
		c.Kill(i)
	}
}

// cleanup fails t for a server that exited without Kill (a crash), shows
// the log tails when t failed, and kills every server.
func (c *Cluster) cleanup() {
	for i := range c.N() {
		s := c.node(i)
		c.mu.Lock()
		p, expected := s.proc, s.expectExit
		c.mu.Unlock()
		if p != nil && !expected && p.exited() {
			c.t.Errorf("natscluster: server %s exited by itself: %v", s.name, p.err)
		}
	}
	if c.t.Failed() {
		c.t.Log(c.logTails())
	}
	c.killAll()
}

// freePorts returns n distinct loopback ports that were free a moment ago.
func freePorts(t testing.TB, n int) []int {
	ports := make([]int, n)
	listeners := make([]net.Listener, n)
	for i := range listeners {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("natscluster: cannot find a free port: %v", err)
		}
		listeners[i] = ln
		ports[i] = ln.Addr().(*net.TCPAddr).Port
	}
	for _, ln := range listeners {
		ln.Close()
	}
	return ports
}

func randomHex(t testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("natscluster: cannot generate a secret: %v", err)
	}
	return hex.EncodeToString(b)
}
