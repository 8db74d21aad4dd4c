package engine_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/infergate/infergate/retrain/engine"
	"github.com/infergate/infergate/retrain/engine/enginetest"
)

// TestIsWrongSequence: a write expecting a last sequence that is not the
// stream's, or the key's, is recognised; other failures and successes are
// not.
func TestIsWrongSequence(t *testing.T) {
	e := enginetest.Start(t)
	ctx := context.Background()
	if _, err := e.JS.CreateStream(ctx, jetstream.StreamConfig{Name: "seq", Subjects: []string{"seq.>"}}); err != nil {
		t.Fatal(err)
	}
	ack, err := e.JS.Publish(ctx, "seq.a", []byte("1"))
	if err != nil || engine.IsWrongSequence(err) {
		t.Fatalf("first publish: %v", err)
	}
	f := func(what string, err error, want bool) {
		t.Helper()
		if got := engine.IsWrongSequence(err); got != want {
			t.Errorf("%s: IsWrongSequence(%v) = %v, want %v", what, err, got, want)
		}
	}
	_, err = e.JS.Publish(ctx, "seq.a", []byte("2"), jetstream.WithExpectLastSequence(ack.Sequence+5))
	f("stream's last sequence", err, true)
	_, err = e.JS.PublishMsg(ctx, &nats.Msg{Subject: "seq.a", Data: []byte("2")}, jetstream.WithExpectLastSequencePerSubject(ack.Sequence+5))
	f("subject's last sequence", err, true)
	_, err = e.JS.Publish(ctx, "seq.a", []byte("2"), jetstream.WithExpectLastSequencePerSubject(ack.Sequence))
	f("the right sequence", err, false)
	_, err = e.JS.Publish(ctx, "seq.b", []byte("x"), jetstream.WithExpectStream("other"))
	f("another refusal", err, false)
	f("a wrapped refusal", fmt.Errorf("cannot write: %w", &jetstream.APIError{ErrorCode: jetstream.JSErrCodeStreamWrongLastSequence}), true)
	f("no error", nil, false)
	f("another error", errors.New("x"), false)

	kv, err := e.JS.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "seq_kv"})
	if err != nil {
		t.Fatal(err)
	}
	rev, err := kv.Put(ctx, "k", []byte("v"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = kv.Update(ctx, "k", []byte("w"), rev+3)
	f("a key's revision", err, true)
}
