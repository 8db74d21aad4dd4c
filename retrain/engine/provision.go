package engine

import (
	"context"
	"errors"

	"github.com/nats-io/nats.go/jetstream"
)

// The streams and buckets of every process are created first and updated
// only when one exists with another config. nats.go's CreateOrUpdate*
// sends the update first, and nats-server (2.15.3) answers neither an
// update that reaches a replicated stream another process is still
// creating nor that create: both wait out their timeout, which stalled
// processes starting together on a cluster for 30 s and more (see
// retrain/engine/natscluster/concurrent_test.go).

// KeyValue creates the bucket cfg, or updates it to cfg when it exists
// with another config.
func KeyValue(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	kv, err := js.CreateKeyValue(ctx, cfg)
	if errors.Is(err, jetstream.ErrBucketExists) {
		return js.CreateOrUpdateKeyValue(ctx, cfg)
	}
	return kv, err
}

// Stream creates the stream cfg, or updates it to cfg when it exists with
// another config.
func Stream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	st, err := js.CreateStream(ctx, cfg)
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return js.UpdateStream(ctx, cfg)
	}
	return st, err
}

// ObjectStore creates the object store cfg, or updates it to cfg when it
// exists with another config.
func ObjectStore(ctx context.Context, js jetstream.JetStream, cfg jetstream.ObjectStoreConfig) (jetstream.ObjectStore, error) {
	obs, err := js.CreateObjectStore(ctx, cfg)
	if errors.Is(err, jetstream.ErrBucketExists) {
		return js.CreateOrUpdateObjectStore(ctx, cfg)
	}
	return obs, err
}
