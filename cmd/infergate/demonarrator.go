package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// narrator is the demo's slog handler: it tells what the gateway and the
// retrain service do as one plain line per step of the loop, and drops the
// rest of their logging below warnings.
type narrator struct {
	mu    *sync.Mutex
	out   io.Writer
	start time.Time
	attrs []slog.Attr
	// replica names the gateway replica whose log this copy tells; its
	// lines say so.
	replica string
}

func newNarrator(out io.Writer) *narrator {
	return &narrator{mu: new(sync.Mutex), out: out, start: time.Now()}
}

// from returns a narrator of the log of the named replica.
func (n *narrator) from(replica string) *narrator {
	c := *n
	c.replica = replica
	return &c
}

// say prints one line from who.
func (n *narrator) say(who, format string, args ...any) {
	if n.replica != "" {
		who = n.replica + " " + who
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	fmt.Fprintf(n.out, "%6.1fs  %-8s %s\n", time.Since(n.start).Seconds(), who, fmt.Sprintf(format, args...))
}

func (n *narrator) Enabled(_ context.Context, level slog.Level) bool { return level >= slog.LevelInfo }

func (n *narrator) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *n
	c.attrs = append(append([]slog.Attr(nil), n.attrs...), attrs...)
	return &c
}

func (n *narrator) WithGroup(string) slog.Handler { return n }

func (n *narrator) Handle(_ context.Context, r slog.Record) error {
	a := map[string]string{}
	for _, at := range n.attrs {
		a[at.Key] = at.Value.String()
	}
	r.Attrs(func(at slog.Attr) bool {
		a[at.Key] = at.Value.String()
		return true
	})
	switch msg := r.Message; {
	case msg == "drift decision":
		n.say("drift", "%s for %s v%s (%s): window %s of %s rows, drifted features %s", a["decision"], a["model"], a["version"],
			a["reason"], a["window"], a["rows"], a["drifted_features"])
	case msg == "event emitted":
		n.say("outbox", "%s about %s/%s stored, to be delivered (event %s)", a["type"], a["model"], a["version"], short(a["id"]))
	case msg == "webhook delivered" && a["target"] == "narrator":
		// the demo's own receiver, which narrates the event itself
	case msg == "webhook delivered":
		n.say("webhook", "event %s delivered to %s", short(a["event_id"]), a["target"])
	case msg == "retrain run queued":
		n.say("retrain", "signed webhook verified; run %s queued for %s (drifted version %s)", a["run"], a["model"], a["drifted_version"])
	case msg == "retrain run started":
		n.say("retrain", "run %s started", a["run"])
	case msg == "retrain step done":
		n.say("retrain", "step %s done in %s", a["step"], a["took"])
	case msg == "retrain step failed":
		n.say("retrain", "step %s FAILED: %s", a["step"], a["error"])
	case msg == "retrain run succeeded":
		n.say("retrain", "run %s succeeded: version %s published and in canary, in %s", a["run"], a["version"], a["took"])
	case msg == "retrain run failed":
		n.say("retrain", "run %s failed: %s", a["run"], a["reason"])
	case a["run"] != "" && a["step"] != "" && !strings.HasPrefix(msg, "| "):
		n.say("retrain", "  [%s] %s", a["step"], msg)
	case msg == "model version loaded":
		n.say("gateway", "version %s of %s loaded and warmed up", a["version"], a["model"])
	case msg == "reload applied":
		n.say("gateway", "reload applied")
	case msg == "routing changed by the admin API":
		n.say("gateway", "routing of %s set: split %s, canary %s", a["model"], a["split"], a["canary"])
	case msg == "canary step":
		n.say("canary", "%s v%s: %s, weight %s%% (%s)", a["model"], a["version"], a["step"], a["weight"], a["reason"])
	case strings.HasPrefix(msg, "CUDA execution provider unavailable"):
		n.say("runtime", "no usable CUDA here: sessions run on the CPU")
	case r.Level >= slog.LevelWarn:
		n.say(strings.ToLower(r.Level.String()), "%s %v", msg, a)
	}
	return nil
}

func short(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}
