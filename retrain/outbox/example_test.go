package outbox_test

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"time"

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
