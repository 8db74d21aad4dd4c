package legacy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
)

// ErrDamaged is wrapped by the error for a file that is not a readable
// bbolt file: truncated, overwritten, or inconsistent.
var ErrDamaged = errors.New("legacy: damaged state file")

// File is a bbolt file read whole and checked: its top-level buckets with
// their keys and values. It is immutable and safe for concurrent use.
type File struct {
	path    string
	txid    uint64
	names   []string // ascending
	buckets map[string]*bucket
}

// bucket is a top-level bucket's content.
type bucket struct {
	sequence uint64
	keys     [][]byte // ascending
	values   [][]byte // nil where the key names a nested bucket
}

// Open reads the bbolt file at path whole, without a lock (the file must
// not be in use), and checks what it reads: both meta pages, of which it
// takes the valid one with the higher transaction id, then every page of
// every bucket's tree, nested buckets included. A damaged file is an error
// wrapping ErrDamaged that names the file, what is damaged and how to
// recover; a file that cannot be read is an error wrapping the system's
// (fs.ErrNotExist for a missing one).
func Open(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read legacy state file %q: %w", path, err)
	}
	return parse(path, data)
}

// Buckets returns the names of the file's top-level buckets, ascending.
func (f *File) Buckets() []string { return slices.Clone(f.names) }

// ForEach calls fn with each key and value of the top-level bucket named
// bucket, in ascending key order, and stops at fn's first error, which it
// returns. The value of a key that names a nested bucket is nil, an empty
// value is empty but not nil. A bucket the file does not hold has no keys.
// k and v are views of f's copy of the file: fn must not modify them, and
// whatever keeps them keeps that copy in memory.
func (f *File) ForEach(bucket string, fn func(k, v []byte) error) error {
	b := f.buckets[bucket]
	if b == nil {
		return nil
	}
	for i, k := range b.keys {
		if err := fn(k, b.values[i]); err != nil {
			return err
		}
	}
	return nil
}

// Get returns the value of key in the top-level bucket named bucket, or
// nil when the bucket does not hold it or it names a nested bucket. The
// value is a view of f's copy of the file and must not be modified.
func (f *File) Get(bucket string, key []byte) []byte {
	b := f.buckets[bucket]
	if b == nil {
		return nil
	}
	if i, ok := slices.BinarySearchFunc(b.keys, key, bytes.Compare); ok {
		return b.values[i]
	}
	return nil
}

// Sequence returns the sequence of the top-level bucket named bucket (the
// last number its NextSequence handed out), or 0 when the file has no such
// bucket.
func (f *File) Sequence(bucket string) uint64 {
	if b := f.buckets[bucket]; b != nil {
		return b.sequence
	}
	return 0
}

// TxID returns the id of the transaction that last wrote the file.
func (f *File) TxID() uint64 { return f.txid }

// reader walks a file's pages; it lives for one parse.
type reader struct {
	path     string
	data     []byte
	pageSize uint64
	pages    uint64 // the meta's page count, all within data
	reached  []bool // by page id: already part of a tree
	// elements is how many more branch and leaf elements the walk may
	// read: each takes 16 bytes of its own in a sound file, so more
	// than len(data)/16 in all means that values overlap, which could
	// otherwise make the walk of nested inline buckets take forever.
	elements uint64
}

// parse reads the bbolt file data, read from path.
func parse(path string, data []byte) (*File, error) {
	r := &reader{path: path, data: data}
	return r.read()
}

// read reads r's file.
func (r *reader) read() (*File, error) {
	path, data := r.path, r.data
	if len(data) == 0 {
		return nil, damaged(path, "0 bytes long: truncated")
	}
	m, err := chooseMeta(path, data)
	if err != nil {
		return nil, err
	}
	r.pageSize = m.pageSize
	which := fmt.Sprintf("meta page %d (transaction %d)", m.page, m.txid)
	if m.pages > uint64(len(data))/m.pageSize {
		return nil, damaged(path, fmt.Sprintf("%d bytes long, but %s says its %d pages of %d bytes end at byte %s: truncated",
			len(data), which, m.pages, m.pageSize, mul(m.pages, m.pageSize)))
	}
	r.pages = m.pages
	if m.pages < 3 {
		return nil, damaged(path, fmt.Sprintf("%s says the file holds %d pages, fewer than its two meta pages and a root", which, m.pages))
	}
	if m.root < 2 || m.root >= m.pages {
		return nil, damaged(path, fmt.Sprintf("%s names page %d as the root, outside pages 2 to %d", which, m.root, m.pages-1))
	}
	if m.freelist != noFreelist && (m.freelist < 2 || m.freelist >= m.pages) {
		return nil, damaged(path, fmt.Sprintf("%s names page %d as the freelist, outside pages 2 to %d", which, m.freelist, m.pages-1))
	}
	r.reached = make([]bool, m.pages)
	r.elements = uint64(len(data)) / elementSize

	f := &File{path: path, txid: m.txid, buckets: map[string]*bucket{}}
	err = r.tree("the root bucket", m.root, func(flags uint32, k, v []byte) error {
		name := string(k)
		if flags&bucketFlag == 0 {
			return r.damaged("the root bucket holds %s, which is not a bucket", quoteKey(k))
		}
		b := &bucket{}
		sequence, err := r.bucket("bucket "+quoteKey(k), v, 1, func(flags uint32, k, v []byte) error {
			if flags&bucketFlag != 0 {
				v = nil
			}
			b.keys = append(b.keys, k)
			b.values = append(b.values, v)
			return nil
		})
		if err != nil {
			return err
		}
		b.sequence = sequence
		f.names = append(f.names, name)
		f.buckets[name] = b
		return nil
	})
	if err != nil {
		return nil, err
	}
	return f, nil
}

// chooseMeta returns the valid meta of data with the higher transaction
// id. The page size comes from meta page 0; when that is not valid, meta
// page 1 is looked for at every page size, as it lies one page in.
func chooseMeta(path string, data []byte) (meta, error) {
	m0, problem0 := readMeta(data, 0)
	var m1 meta
	var problem1 string
	if problem0 == "" {
		if m0.pageSize > uint64(len(data)) {
			m1, problem1 = meta{}, "past the end of the file"
		} else if m1, problem1 = readMeta(data[m0.pageSize:], 1); problem1 == "" && m1.pageSize != m0.pageSize {
			problem1 = fmt.Sprintf("page size %d, but meta page 0 says %d", m1.pageSize, m0.pageSize)
		}
	} else {
		problem1 = fmt.Sprintf("not found one page in, for any page size from %d to %d", minPageSize, maxPageSize)
		for size := uint64(minPageSize); size <= maxPageSize && size < uint64(len(data)); size *= 2 {
			if m, problem := readMeta(data[size:], 1); problem == "" && m.pageSize == size {
				m1, problem1 = m, ""
				break
			}
		}
	}
	switch {
	case problem0 != "" && problem1 != "":
		return meta{}, damaged(path, fmt.Sprintf("neither meta page is valid: meta page 0: %s; meta page 1: %s", problem0, problem1))
	case problem0 != "":
		return m1, nil
	case problem1 != "", m0.txid >= m1.txid:
		return m0, nil
	default:
		return m1, nil
	}
}

// bucket walks the bucket named where whose header (and inline page) is
// value, nested depth buckets deep, calling visit (when not nil) for each
// of its elements in key order, and returns its sequence. Its nested
// buckets are walked too, for their checks, but not visited.
func (r *reader) bucket(where string, value []byte, depth int, visit func(flags uint32, k, v []byte) error) (uint64, error) {
	if depth > maxDepth {
		return 0, r.damaged("%s is nested more than %d buckets deep", where, maxDepth)
	}
	if len(value) < bucketHeader {
		return 0, r.damaged("%s has a header of %d bytes, want %d", where, len(value), bucketHeader)
	}
	root := binary.LittleEndian.Uint64(value[0:])
	sequence := binary.LittleEndian.Uint64(value[8:])
	walk := func(flags uint32, k, v []byte) error {
		if flags&bucketFlag != 0 && root == 0 {
			// bbolt keeps a bucket inline only while it has none nested.
			return r.damaged("the inline page of %s holds bucket %s", where, quoteKey(k))
		}
		if flags&bucketFlag != 0 {
			if _, err := r.bucket(fmt.Sprintf("%s/%s", where, quoteKey(k)), v, depth+1, nil); err != nil {
				return err
			}
		}
		if visit != nil {
			return visit(flags, k, v)
		}
		return nil
	}
	if root != 0 {
		return sequence, r.tree(where, root, walk)
	}
	inline := value[bucketHeader:]
	if len(inline) < pageHeaderSize {
		return 0, r.damaged("the inline page of %s has %d bytes, fewer than a page header", where, len(inline))
	}
	if h := readHeader(inline); h.flags != leafPage {
		return 0, r.damaged("the inline page of %s is not a leaf page (flags %#x)", where, h.flags)
	}
	return sequence, r.node(where, 0, inline, nil, nil, 0, walk)
}

// tree walks the B+tree rooted at page root of the bucket named where,
// calling visit for each leaf element in key order.
func (r *reader) tree(where string, root uint64, visit func(flags uint32, k, v []byte) error) error {
	node, err := r.page(where, root)
	if err != nil {
		return err
	}
	return r.node(where, root, node, nil, nil, 0, visit)
}

// page returns page id, with its overflow pages, of the tree of the
// bucket named where, and marks them reached: a page reached twice is
// damage, a cycle or two parents.
func (r *reader) page(where string, id uint64) ([]byte, error) {
	if id < 2 || id >= r.pages {
		return nil, r.damaged("%s refers to page %d, outside pages 2 to %d", where, id, r.pages-1)
	}
	start := id * r.pageSize
	h := readHeader(r.data[start:])
	if h.id != id {
		return nil, r.damaged("page %d of %s says it is page %d (overwritten or zeroed)", id, where, h.id)
	}
	end := id + 1 + uint64(h.overflow)
	if end > r.pages {
		return nil, r.damaged("page %d of %s runs %d pages on, past the last page %d", id, where, h.overflow, r.pages-1)
	}
	for p := id; p < end; p++ {
		if r.reached[p] {
			return nil, r.damaged("page %d of %s is reached a second time (a cycle, or pages that share it)", p, where)
		}
		r.reached[p] = true
	}
	return r.data[start : end*r.pageSize], nil
}

// node walks node, page id (0: the inline page) of the bucket named
// where, whose keys must lie in [lo, hi) (nil: unbounded), depth levels
// below its tree's root, calling visit for each leaf element in key order.
func (r *reader) node(where string, id uint64, node []byte, lo, hi []byte, depth int, visit func(flags uint32, k, v []byte) error) error {
	name := fmt.Sprintf("page %d of %s", id, where)
	if id == 0 {
		name = "the inline page of " + where
	}
	if depth > maxDepth {
		return r.damaged("%s lies more than %d levels deep in its tree", name, maxDepth)
	}
	h := readHeader(node)
	if room := (uint64(len(node)) - pageHeaderSize) / elementSize; uint64(h.count) > room {
		return r.damaged("%s holds %d elements, more than the %d that fit", name, h.count, room)
	}
	if uint64(h.count) > r.elements {
		return r.damaged("%s holds elements that others hold too: the file's pages hold more elements than fit in it", name)
	}
	r.elements -= uint64(h.count)
	// check checks key k of element i, in the page when ok, which must
	// follow prev.
	check := func(i int, k []byte, ok bool, prev []byte) error {
		switch {
		case !ok:
			return r.damaged("%s: element %d runs past the page's end", name, i)
		case len(k) == 0:
			return r.damaged("%s: element %d has an empty key", name, i)
		case lo != nil && bytes.Compare(k, lo) < 0, hi != nil && bytes.Compare(k, hi) >= 0:
			return r.damaged("%s: key %s lies outside the range its parent gives it", name, quoteKey(k))
		case prev != nil && bytes.Compare(prev, k) >= 0:
			return r.damaged("%s: key %s does not follow key %s", name, quoteKey(k), quoteKey(prev))
		}
		return nil
	}
	switch h.flags {
	case branchPage:
		if id == 0 {
			return r.damaged("%s is a branch page", name)
		}
		if h.count == 0 {
			return r.damaged("%s is a branch page without elements", name)
		}
		keys := make([][]byte, h.count)
		children := make([]uint64, h.count)
		for i := range keys {
			base := uint64(pageHeaderSize + i*elementSize)
			e := node[base : base+elementSize]
			k, ok := span(node, base, binary.LittleEndian.Uint32(e[0:]), binary.LittleEndian.Uint32(e[4:]))
			var prev []byte
			if i > 0 {
				prev = keys[i-1]
			}
			if err := check(i, k, ok, prev); err != nil {
				return err
			}
			keys[i], children[i] = k, binary.LittleEndian.Uint64(e[8:])
		}
		for i, child := range children {
			limit := hi
			if i+1 < len(keys) {
				limit = keys[i+1]
			}
			page, err := r.page(where, child)
			if err != nil {
				return err
			}
			if err := r.node(where, child, page, keys[i], limit, depth+1, visit); err != nil {
				return err
			}
		}
		return nil
	case leafPage:
		var prev []byte
		for i := range int(h.count) {
			base := uint64(pageHeaderSize + i*elementSize)
			e := node[base : base+elementSize]
			flags := binary.LittleEndian.Uint32(e[0:])
			pos, ksize, vsize := binary.LittleEndian.Uint32(e[4:]), binary.LittleEndian.Uint32(e[8:]), binary.LittleEndian.Uint32(e[12:])
			k, ok := span(node, base, pos, ksize)
			if err := check(i, k, ok, prev); err != nil {
				return err
			}
			if flags&^bucketFlag != 0 {
				return r.damaged("%s: key %s has unknown flags %#x", name, quoteKey(k), flags)
			}
			v, ok := span(node, base+uint64(ksize), pos, vsize)
			if !ok {
				return r.damaged("%s: the value of key %s runs past the page's end", name, quoteKey(k))
			}
			if err := visit(flags, k, v); err != nil {
				return err
			}
			prev = k
		}
		return nil
	default:
		return r.damaged("%s is neither a branch nor a leaf page (flags %#x)", name, h.flags)
	}
}

// damaged returns the damage error of r's file.
func (r *reader) damaged(format string, args ...any) error {
	return damaged(r.path, fmt.Sprintf(format, args...))
}

// damaged says that the file at path is damaged, what is, and what to do.
func damaged(path, what string) error {
	return fmt.Errorf("cannot read legacy state file %q: it is damaged (%s); move it aside to start without its state, or restore it from a backup: %w",
		path, what, ErrDamaged)
}

// quoteKey quotes a key for an error: as a string when it is printable
// text, else in hexadecimal.
func quoteKey(k []byte) string {
	const most = 64
	if len(k) > most {
		return quoteKey(k[:most]) + "…"
	}
	s := strconv.Quote(string(k))
	if len(s) <= 2*len(k)+2 {
		return s
	}
	return fmt.Sprintf("0x%x", k)
}

// mul returns a*b in decimal, without wrapping.
func mul(a, b uint64) string {
	if a != 0 && a*b/a != b {
		return fmt.Sprintf("%d×%d", a, b)
	}
	return strconv.FormatUint(a*b, 10)
}
