package gateway

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/infergate/infergate/retrain/outbox"
	"github.com/infergate/infergate/router"
)

const webhookSecretEnv = "INFERGATE_TEST_WEBHOOK_SECRET"

// TestCanaryEventsReachWebhooks runs a canary to promotion and checks that
// its events arrive at a webhook receiver on loopback, signed.
func TestCanaryEventsReachWebhooks(t *testing.T) {
	t.Setenv(webhookSecretEnv, "s3cret")
	var mu sync.Mutex
	var got []outbox.Event
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := outbox.Verify(r.Header.Get(outbox.SignatureHeader), []byte("s3cret"), body, time.Now(), time.Minute); err != nil {
			t.Errorf("delivery with a bad signature: %v", err)
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		var e outbox.Event
		if err := json.Unmarshal(body, &e); err != nil {
			t.Errorf("delivery is not a CloudEvent: %v", err)
		}
		mu.Lock()
		got = append(got, e)
		mu.Unlock()
	}))
	defer receiver.Close()

	cfg := abConfig(t, router.Config{Split: map[string]int{"1": 1}, Canary: canaryConfig("3")})
	cfg.Webhooks = []outbox.Target{{Name: "ci", URL: receiver.URL, SecretEnv: webhookSecretEnv, BackoffBase: time.Millisecond}}
	_, url := startServer(t, cfg)
	stop := load(t, url)
	defer stop()
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		types := map[string]string{}
		for _, e := range got {
			types[e.Type] = e.Subject
		}
		mu.Unlock()
		if types[outbox.TypeCanaryStarted] == "ab/3" && types[outbox.TypeCanaryPromoted] == "ab/3" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("webhook got %v, want canary.started and canary.promoted for ab/3", types)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
