package legacy

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
)

// The on-disk format of a bbolt file, version 2, as this package reads it.
// All integers are little-endian.
//
// The file is a sequence of pages of one size, numbered from 0. Pages 0
// and 1 are meta pages, written alternately by successive transactions; a
// reader takes the one with a valid checksum and the higher transaction
// id. Every page begins with a 16-byte header:
//
//	id u64 | flags u16 | count u16 | overflow u32
//
// where overflow is how many pages follow the first one, for a node too
// large for one page. A meta page's header is followed by the meta:
//
//	magic u32 | version u32 | page size u32 | flags u32 |
//	root bucket (root page u64, sequence u64) | freelist page u64 |
//	page count u64 | transaction id u64 | checksum u64
//
// the checksum being FNV-64a of the 56 bytes before it. The root bucket
// is a B+tree whose leaves map the top-level bucket names to bucket
// headers; every bucket is such a tree. A branch page's header is followed
// by count elements of 16 bytes
//
//	pos u32 | key size u32 | child page u64
//
// and a leaf page's by count elements of 16 bytes
//
//	flags u32 | pos u32 | key size u32 | value size u32
//
// where pos is the offset of the element's key from the element itself,
// its value following the key. A leaf element with flag 0x01 is a nested
// bucket, its value a bucket header
//
//	root page u64 | sequence u64
//
// followed, when the root page is 0, by the bucket's single leaf page
// itself (an inline bucket). Keys are never empty, and each tree's keys
// ascend strictly, a branch element's key bounding its child's from below
// and the next element's from above.
const (
	pageHeaderSize = 16
	elementSize    = 16 // a branch or a leaf element
	bucketHeader   = 16 // root page and sequence
	metaOffset     = pageHeaderSize
	metaSize       = 64
	checksumOffset = 56 // the meta bytes the checksum covers

	magic   = 0xED0CDAED
	version = 2

	branchPage = 0x01
	leafPage   = 0x02

	bucketFlag = 0x01

	// noFreelist is a meta's freelist page when the freelist is not kept
	// in the file.
	noFreelist = ^uint64(0)

	// The page sizes accepted, and searched for meta page 1 when meta
	// page 0 cannot say: from 512 bytes to 16 MiB, a power of two.
	minPageSize = 512
	maxPageSize = 16 << 20

	// maxDepth bounds a tree's depth and the nesting of buckets; a tree
	// of 2^64 keys with two per page is 64 deep.
	maxDepth = 64
)

// meta is a meta page's content.
type meta struct {
	page     int // 0 or 1: where it was read from
	pageSize uint64
	root     uint64 // the root bucket's root page
	freelist uint64
	pages    uint64 // the page count: every page in use is below it
	txid     uint64
}

// readMeta reads the meta of the meta page at the start of b; problem says
// why it is not valid, empty when it is.
func readMeta(b []byte, page int) (m meta, problem string) {
	if len(b) < metaOffset+metaSize {
		return meta{}, "cut short"
	}
	raw := b[metaOffset : metaOffset+metaSize]
	if got := binary.LittleEndian.Uint32(raw[0:]); got != magic {
		return meta{}, fmt.Sprintf("no bbolt meta page: magic %#x, want %#x", got, magic)
	}
	if got := binary.LittleEndian.Uint32(raw[4:]); got != version {
		return meta{}, fmt.Sprintf("format version %d, want %d", got, version)
	}
	h := fnv.New64a()
	h.Write(raw[:checksumOffset])
	if sum, want := binary.LittleEndian.Uint64(raw[checksumOffset:]), h.Sum64(); sum != want {
		return meta{}, fmt.Sprintf("checksum %#016x, but its content sums to %#016x", sum, want)
	}
	m = meta{
		page:     page,
		pageSize: uint64(binary.LittleEndian.Uint32(raw[8:])),
		root:     binary.LittleEndian.Uint64(raw[16:]),
		freelist: binary.LittleEndian.Uint64(raw[32:]),
		pages:    binary.LittleEndian.Uint64(raw[40:]),
		txid:     binary.LittleEndian.Uint64(raw[48:]),
	}
	if !validPageSize(m.pageSize) {
		return meta{}, fmt.Sprintf("page size %d, not a power of two from %d to %d", m.pageSize, minPageSize, maxPageSize)
	}
	return m, ""
}

// validPageSize reports whether n is a page size this package reads.
func validPageSize(n uint64) bool {
	return n >= minPageSize && n <= maxPageSize && n&(n-1) == 0
}

// header is a page's header.
type header struct {
	id       uint64
	flags    uint16
	count    uint16
	overflow uint32
}

// readHeader reads the page header at the start of b, which holds one.
func readHeader(b []byte) header {
	return header{
		id:       binary.LittleEndian.Uint64(b[0:]),
		flags:    binary.LittleEndian.Uint16(b[8:]),
		count:    binary.LittleEndian.Uint16(b[10:]),
		overflow: binary.LittleEndian.Uint32(b[12:]),
	}
}

// span returns size bytes of node from offset base+pos, or false when
// they do not lie within it. The arithmetic is on 64 bits, on values of
// 32, so it cannot wrap.
func span(node []byte, base uint64, pos, size uint32) ([]byte, bool) {
	start := base + uint64(pos)
	end := start + uint64(size)
	if end > uint64(len(node)) {
		return nil, false
	}
	return node[start:end:end], true
}
