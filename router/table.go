package router

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/bits"
	"slices"
	"strconv"
)

// Buckets is the number of buckets a split is laid over. A request lands
// in one bucket, by its sticky key or by chance, and each version owns a
// contiguous range of them, so one bucket is 0.01% of the traffic.
const Buckets = 10000

// maxTableWeight bounds a table's total weight so that placing the bucket
// ranges cannot overflow. Canary.Apply turns valid config weights (at most
// maxSplitWeight each) into ones that sum to 100 times theirs, well below.
const maxTableWeight = 1 << 40

// ErrNoTraffic is returned by NewTable for a split whose weights sum to 0.
var ErrNoTraffic = errors.New("router: split has no version with a positive weight")

// Table routes the requests of one model: it picks a version by the split
// and samples the shadow copies. It is immutable once built and safe for
// concurrent use; a routing change builds a new Table.
//
// Versions are indexed in a stable order, numeric names by value and the
// rest after them by name, and own their bucket ranges in that order. A
// new version, usually the highest, therefore takes its buckets from the
// end of the range, and when the weights change only the keys in the
// buckets that changed hands move, all of them towards the grown version.
type Table struct {
	versions []string // the split's and the shadows' versions, sorted by compareVersions
	weights  []int    // weights[i] is the split weight of versions[i]
	ends     []uint32 // versions[i] owns the buckets [ends[i-1], ends[i])
	shadows  []shadow
}

// shadow is one shadow version of a Table.
type shadow struct {
	index int
	// below is the mirrored share scaled to 2^53: a request is copied
	// when 53 random bits fall below it, so 100% always copies.
	below uint64
}

// NewTable builds the table for cfg's split and shadows; for a model with a
// canary, cfg is Canary.Apply of the model's config. cfg should have passed
// Validate; NewTable itself only refuses what it cannot route.
func NewTable(cfg Config) (*Table, error) {
	names := slices.Collect(maps.Keys(cfg.Split))
	for _, s := range cfg.Shadow {
		if !slices.Contains(names, s.Version) {
			names = append(names, s.Version)
		}
	}
	slices.SortFunc(names, compareVersions)

	t := &Table{versions: names, weights: make([]int, len(names)), ends: make([]uint32, len(names))}
	total := 0
	for i, v := range names {
		w := cfg.Split[v]
		if w < 0 || w > maxTableWeight {
			return nil, fmt.Errorf("cannot build routing table: version %q has weight %d, outside 0..%d", v, w, maxTableWeight)
		}
		t.weights[i] = w
		total += w
	}
	switch {
	case total == 0:
		return nil, ErrNoTraffic
	case total > maxTableWeight:
		return nil, fmt.Errorf("cannot build routing table: weights sum to %d, more than %d", total, maxTableWeight)
	}
	sum := 0
	for i, w := range t.weights {
		sum += w
		t.ends[i] = uint32(sum * Buckets / total)
	}
	for _, s := range cfg.Shadow {
		below := uint64(math.Round(min(s.Percent, 100) / 100 * (1 << 53)))
		t.shadows = append(t.shadows, shadow{index: t.Index(s.Version), below: below})
	}
	return t, nil
}

// Pick returns the index of the version that serves a request. A
// non-empty key (the sticky header's value) always lands in the same
// bucket, in this process and any other; without one, rnd (a uniformly
// random number from the caller) chooses. Pick does not allocate.
func (t *Table) Pick(key []byte, rnd uint64) int {
	h := rnd
	if len(key) > 0 {
		h = hashKey(key)
	}
	bucket := bucketOf(h)
	for i, end := range t.ends {
		if bucket < end {
			return i
		}
	}
	panic("BUG: the last version's bucket range must end at Buckets")
}

// Shadows appends to dst the indices of the shadow versions a request
// served by version picked is copied to, each with its percent, and
// returns the extended slice. A request is never copied to the version
// that served it. rnd may be the same number given to Pick: Shadows mixes
// it so that its draws are independent of Pick's and of each other.
// Shadows does not allocate when dst has room.
func (t *Table) Shadows(picked int, rnd uint64, dst []int) []int {
	for i, s := range t.shadows {
		if s.index != picked && mix64(rnd+uint64(i+1)*golden)>>11 < s.below {
			dst = append(dst, s.index)
		}
	}
	return dst
}

// Len returns the number of versions the table knows: the split's and the
// shadows'.
func (t *Table) Len() int { return len(t.versions) }

// Version returns the name of the version at index i.
func (t *Table) Version(i int) string { return t.versions[i] }

// Weight returns the split weight of the version at index i; a version
// that is only a shadow has weight 0.
func (t *Table) Weight(i int) int { return t.weights[i] }

// Index returns the index of version v, or -1 when the table does not
// know it.
func (t *Table) Index(v string) int { return slices.Index(t.versions, v) }

// bucketOf maps a uniform 64-bit number onto [0, Buckets) by
// multiply-shift, which keeps it uniform without a modulo's bias.
func bucketOf(h uint64) uint32 {
	hi, _ := bits.Mul64(h, Buckets)
	return uint32(hi)
}

const golden = 0x9e3779b97f4a7c15 // 2^64 divided by the golden ratio

// hashKey is FNV-1a over key, finished with mix64 so that short, similar
// keys such as numbered user ids still spread evenly over the buckets. It
// is part of the routing contract: changing it moves every sticky caller.
func hashKey(key []byte) uint64 {
	h := uint64(14695981039346656037)
	for _, b := range key {
		h ^= uint64(b)
		h *= 1099511628211
	}
	return mix64(h)
}

// mix64 is MurmurHash3's 64-bit finalizer, a bijection whose every output
// bit depends on every input bit.
func mix64(h uint64) uint64 {
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}

// compareVersions orders numeric version names by value, before any other
// names, which sort as strings; so "2" comes before "10".
func compareVersions(a, b string) int {
	na, errA := strconv.ParseUint(a, 10, 64)
	nb, errB := strconv.ParseUint(b, 10, 64)
	switch {
	case errA == nil && errB == nil:
		return cmp.Or(cmp.Compare(na, nb), cmp.Compare(a, b))
	case errA == nil:
		return -1
	case errB == nil:
		return 1
	}
	return cmp.Compare(a, b)
}
