package outbox_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/infergate/infergate/retrain/engine"
	"github.com/infergate/infergate/retrain/outbox"
)

// A webhook receiver checks the signature over the raw body before it
// decodes anything, and deduplicates by event id, since delivery is at
// least once.
func ExampleVerify() {
	secret := []byte(os.Getenv("INFERGATE_WEBHOOK_SECRET"))
	http.HandleFunc("POST /hook", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			http.Error(w, "cannot read body", http.StatusBadRequest)
			return
		}
		if err := outbox.Verify(r.Header.Get(outbox.SignatureHeader), secret, body, time.Now(), 5*time.Minute); err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		var e outbox.Event
		if err := json.Unmarshal(body, &e); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		// ... skip e.ID if already seen, else queue the work ...
		w.WriteHeader(http.StatusAccepted)
	})
}

// A producer opens its outbox on the engine, emits from any replica, and
// delivers only from the one that holds the leadership lease: Start when it
// wins the lease, Stop when it loses it, and MayDeliver as the last check
// before each POST.
func ExampleOpen() {
	log := slog.Default()
	conn, err := engine.Connect(engine.Config{}, "/var/lib/infergate", "gateway", log)
	if err != nil {
		log.Error("cannot connect", "error", err)
		return
	}
	defer conn.Close()
	var leader atomic.Bool // kept by the leadership lease
	ob, err := outbox.Open(outbox.Options{
		Conn:       conn,
		Name:       "gateway",
		Replica:    "gateway-0",
		Targets:    []outbox.Target{{Name: "ci", URL: "https://ci.example/hooks/infergate", SecretEnv: "INFERGATE_WEBHOOK_SECRET"}},
		MayDeliver: leader.Load,
		Log:        log,
	})
	if err != nil {
		log.Error("cannot open the outbox", "error", err)
		return
	}
	defer ob.Close()
	leader.Store(true)
	ob.Start() // on winning the lease; ob.Stop() on losing it

	e, err := outbox.NewEvent("/infergate/gateway", outbox.TypeCanaryPromoted, "iris/3", map[string]any{"weight": 100})
	if err == nil {
		err = ob.Emit(context.Background(), e) // returns once the engine has it on disk
	}
	if err != nil {
		log.Error("cannot emit", "error", err)
	}
}
