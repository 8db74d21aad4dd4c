package gateway

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"slices"

	"github.com/VictoriaMetrics/metrics"
	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/infergate/infergate/runtime"
)

// responseCache keeps one model version's recent results by a 64-bit hash
// of the exact input bytes. It belongs to the version and goes with it, so
// it never answers for a version that was unloaded. Safe for concurrent use.
type responseCache struct {
	entries      *lru.Cache[uint64, *cachedResult]
	seed         maphash.Seed
	hits, misses *metrics.Counter
}

// cachedResult is a computed answer with the inputs it was computed from,
// compared in full on a hit so that a hash collision cannot serve a wrong
// answer. Both are private copies, read-only once stored.
type cachedResult struct {
	inputs, results []runtime.Tensor
}

func newResponseCache(entries int, set *metrics.Set, labels string) (*responseCache, error) {
	c, err := lru.New[uint64, *cachedResult](entries)
	if err != nil {
		return nil, fmt.Errorf("cannot create response cache of %d entries: %w", entries, err)
	}
	return &responseCache{
		entries: c,
		seed:    maphash.MakeSeed(),
		hits:    set.NewCounter(`infergate_cache_hits_total{` + labels + `}`),
		misses:  set.NewCounter(`infergate_cache_misses_total{` + labels + `}`),
	}, nil
}

// key hashes the inputs' types, shapes and bytes.
func (c *responseCache) key(inputs []runtime.Tensor) uint64 {
	var h maphash.Hash
	h.SetSeed(c.seed)
	var scratch [8]byte
	for _, in := range inputs {
		h.WriteByte(byte(in.DataType))
		h.WriteByte(byte(len(in.Shape)))
		for _, d := range in.Shape {
			h.Write(binary.LittleEndian.AppendUint64(scratch[:0], uint64(d)))
		}
		h.Write(in.Data)
	}
	return h.Sum64()
}

// get returns the results cached for exactly these inputs.
func (c *responseCache) get(key uint64, inputs []runtime.Tensor) ([]runtime.Tensor, bool) {
	r, ok := c.entries.Get(key)
	if ok && sameTensors(r.inputs, inputs) {
		c.hits.Inc()
		return r.results, true
	}
	c.misses.Inc()
	return nil, false
}

// put stores copies of inputs and results under key.
func (c *responseCache) put(key uint64, inputs, results []runtime.Tensor) {
	c.entries.Add(key, &cachedResult{inputs: cloneTensors(inputs), results: cloneTensors(results)})
}

func sameTensors(a, b []runtime.Tensor) bool {
	return slices.EqualFunc(a, b, func(x, y runtime.Tensor) bool {
		return x.DataType == y.DataType && slices.Equal(x.Shape, y.Shape) && bytes.Equal(x.Data, y.Data)
	})
}

func cloneTensors(ts []runtime.Tensor) []runtime.Tensor {
	out := make([]runtime.Tensor, len(ts))
	for i, t := range ts {
		out[i] = runtime.Tensor{DataType: t.DataType, Shape: slices.Clone(t.Shape), Data: bytes.Clone(t.Data)}
	}
	return out
}
