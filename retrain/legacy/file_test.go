package legacy

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// recovery is what every damage error tells the operator to do.
const recovery = "move it aside to start without its state, or restore it from a backup"

// fixture returns the content of testdata/name.
func fixture(t testing.TB, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// writeTemp writes data to a new file named name and returns its path.
func writeTemp(t *testing.T, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// pair is a key and its value as the golden files hold them: base64,
// the value null for a nested bucket.
type pair struct {
	Key   []byte `json:"key"`
	Value []byte `json:"value"`
}

// TestFixturesReadAsBboltReadThem reads the two files that commit
// 0255404 wrote and compares every bucket, key and value with what bbolt
// itself read from them (testdata/*.db.json), byte for byte and in order.
func TestFixturesReadAsBboltReadThem(t *testing.T) {
	f := func(name string, txid uint64) {
		t.Helper()
		var golden map[string][]pair
		if err := json.Unmarshal(fixture(t, name+".json"), &golden); err != nil {
			t.Fatal(err)
		}
		file, err := Open(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		if file.TxID() != txid {
			t.Errorf("%s: transaction %d, want %d", name, file.TxID(), txid)
		}
		names := slices.Sorted(maps.Keys(golden))
		if got := file.Buckets(); !slices.Equal(got, names) {
			t.Fatalf("%s: buckets %q, want %q", name, got, names)
		}
		for _, b := range names {
			var got []pair
			file.ForEach(b, func(k, v []byte) error {
				got = append(got, pair{Key: k, Value: v})
				return nil
			})
			if len(got) != len(golden[b]) {
				t.Fatalf("%s: bucket %q has %d keys, want %d", name, b, len(got), len(golden[b]))
			}
			for i, want := range golden[b] {
				if !bytes.Equal(got[i].Key, want.Key) || !bytes.Equal(got[i].Value, want.Value) || (got[i].Value == nil) != (want.Value == nil) {
					t.Fatalf("%s: bucket %q key %d: %q = %q, want %q = %q", name, b, i, got[i].Key, got[i].Value, want.Key, want.Value)
				}
				if v := file.Get(b, want.Key); !bytes.Equal(v, want.Value) {
					t.Fatalf("%s: Get(%q, %q) = %q, want %q", name, b, want.Key, v, want.Value)
				}
			}
		}
	}
	f("infergate.db", 10)
	f("retrain.db", 8)
}

// TestSmallFile reads the file of every page shape: inline buckets, a
// branch page, overflow pages, nested buckets, an empty bucket, 1 KiB
// pages and no freelist page.
func TestSmallFile(t *testing.T) {
	file, err := Open("testdata/small.db")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := file.Buckets(), []string{"alpha", "big", "empty", "huge", "outer"}; !slices.Equal(got, want) || file.TxID() != 3 {
		t.Fatalf("buckets %q at transaction %d, want %q at 3", got, file.TxID(), want)
	}
	all := func(bucket string) []string {
		var kv []string
		err := file.ForEach(bucket, func(k, v []byte) error {
			if v == nil {
				kv = append(kv, string(k)+" (bucket)")
			} else {
				kv = append(kv, string(k)+"="+string(v))
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return kv
	}
	f := func(bucket string, want ...string) {
		t.Helper()
		if got := all(bucket); !slices.Equal(got, want) {
			t.Errorf("bucket %q holds %q, want %q", bucket, got, want)
		}
	}
	f("alpha", "a=1", "b=", "c=three", "d=four")
	f("empty")
	f("huge", "blob="+strings.Repeat("0123456789abcdef", 190), "tail=after the blob")
	f("outer", "inner (bucket)", "inner2 (bucket)", "plain=not a bucket")
	f("no such bucket")
	var big []string
	for i := range 120 {
		big = append(big, fmt.Sprintf("key-%04d=value %04d %s", i, i, strings.Repeat("v", 20)))
	}
	f("big", big...)

	if v := file.Get("alpha", []byte("b")); v == nil || len(v) != 0 {
		t.Errorf("an empty value reads as %#v, want empty and not nil", v)
	}
	for _, c := range [][2]string{{"outer", "inner"}, {"alpha", "zz"}, {"alpha", ""}, {"nope", "a"}} {
		if v := file.Get(c[0], []byte(c[1])); v != nil {
			t.Errorf("Get(%q, %q) = %q, want nil", c[0], c[1], v)
		}
	}
	stop := errors.New("stop")
	n := 0
	if err := file.ForEach("big", func(k, v []byte) error { n++; return stop }); err != stop || n != 1 {
		t.Errorf("ForEach stopped with %v after %d keys, want fn's error after 1", err, n)
	}
}

// TestMissingFile is not damage: the error says so.
func TestMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "infergate.db")
	_, err := Open(path)
	if !errors.Is(err, fs.ErrNotExist) || errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), path) {
		t.Fatalf("got %v, want a not-exist error naming %s", err, path)
	}
}

// editMeta edits meta page n of data (page size ps) with edit and writes its
// checksum anew, as bbolt would have: a meta that is valid yet wrong.
func editMeta(data []byte, ps, n int, edit func(m []byte)) {
	m := data[n*ps+metaOffset : n*ps+metaOffset+metaSize]
	edit(m)
	h := fnv.New64a()
	h.Write(m[:checksumOffset])
	binary.LittleEndian.PutUint64(m[checksumOffset:], h.Sum64())
}

// TestMetaFallback damages the newer meta page, as a torn write would:
// the file reads as its previous transaction left it.
func TestMetaFallback(t *testing.T) {
	f := func(damage func(data []byte), wantTx uint64, wantAlpha ...string) {
		t.Helper()
		data := fixture(t, "small.db")
		damage(data)
		file, err := Open(writeTemp(t, "small.db", data))
		if err != nil {
			t.Fatal(err)
		}
		var alpha []string
		file.ForEach("alpha", func(k, v []byte) error { alpha = append(alpha, string(k)); return nil })
		if file.TxID() != wantTx || !slices.Equal(alpha, wantAlpha) {
			t.Fatalf("transaction %d with alpha %q, want %d with %q", file.TxID(), alpha, wantTx, wantAlpha)
		}
	}
	const ps = 1024
	// Meta page 1 holds transaction 3, meta page 0 transaction 2.
	f(func(data []byte) {}, 3, "a", "b", "c", "d")
	f(func(data []byte) { clear(data[ps : 2*ps]) }, 2, "a", "b", "c")
	f(func(data []byte) { data[ps+metaOffset+48]++ }, 2, "a", "b", "c")  // its txid, checksum unchanged
	f(func(data []byte) { data[ps+metaOffset+4] = 3 }, 2, "a", "b", "c") // its version
	// Meta page 0 lost: the page size is found from meta page 1.
	f(func(data []byte) { clear(data[:ps]) }, 3, "a", "b", "c", "d")
	f(func(data []byte) { editMeta(data, ps, 0, func(m []byte) { m[8] = 1 }) }, 3, "a", "b", "c", "d") // page size 1025
}

// TestDamageIsAnError damages the fixtures in the ways disks and crashes
// do, and by hand in each way the format can be wrong: every one is an
// error wrapping ErrDamaged that names the file, what is damaged and how
// to recover, never a panic and never a partial read.
func TestDamageIsAnError(t *testing.T) {
	const ps = 4096
	f := func(name, fixtureName string, damage func(data []byte) []byte, want string) {
		t.Helper()
		t.Run(name, func(t *testing.T) {
			data := damage(fixture(t, fixtureName))
			path := writeTemp(t, fixtureName, data)
			_, err := Open(path)
			switch fixtureName {
			case "infergate.db":
				_, err = ReadGateway(path)
			case "retrain.db":
				_, err = ReadRetrain(path)
			}
			if err == nil {
				t.Fatal("a damaged file was read")
			}
			if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), recovery) || !strings.Contains(err.Error(), want) {
				t.Fatalf("got %v,\nwant an error wrapping ErrDamaged that names %s, says %q and how to recover", err, path, want)
			}
		})
	}
	truncate := func(n int) func([]byte) []byte { return func(d []byte) []byte { return d[:n] } }
	f("empty", "infergate.db", truncate(0), "0 bytes long: truncated")
	f("a header only", "infergate.db", truncate(100), "100 bytes long, but meta page 0 (transaction 10) says its 8 pages of 4096 bytes end at byte 32768: truncated")
	f("half", "infergate.db", truncate(16384), "16384 bytes long")
	f("last byte", "retrain.db", truncate(12*ps-1), "49151 bytes long, but meta page 0 (transaction 8) says its 12 pages")
	f("a few bytes", "retrain.db", truncate(40), "neither meta page is valid: meta page 0: cut short; meta page 1: not found")
	f("not bbolt", "infergate.db", func([]byte) []byte { return bytes.Repeat([]byte("not a database\n"), 1000) }, "neither meta page is valid: meta page 0: no bbolt meta page")

	both := func(edit func(m []byte)) func([]byte) []byte {
		return func(d []byte) []byte {
			edit(d[metaOffset:])
			edit(d[ps+metaOffset:])
			return d
		}
	}
	f("both checksums", "infergate.db", both(func(m []byte) { m[16]++ }), "meta page 0: checksum")
	f("both metas zeroed", "infergate.db", both(func(m []byte) { clear(m[:metaSize]) }), "meta page 0: no bbolt meta page: magic 0x0, want 0xed0cdaed; meta page 1: not found one page in")
	f("both versions", "retrain.db", both(func(m []byte) { m[4] = 1 }), "meta page 0: format version 1, want 2")

	valid := func(edit func(m []byte)) func([]byte) []byte {
		return func(d []byte) []byte {
			editMeta(d, ps, 0, edit)
			editMeta(d, ps, 1, edit)
			return d
		}
	}
	put64 := func(off int, v uint64) func([]byte) {
		return func(m []byte) { binary.LittleEndian.PutUint64(m[off:], v) }
	}
	f("page size", "infergate.db", valid(func(m []byte) { binary.LittleEndian.PutUint32(m[8:], 4000) }), "page size 4000, not a power of two")
	f("root out of range", "infergate.db", valid(put64(16, 1000)), "meta page 0 (transaction 10) names page 1000 as the root, outside pages 2 to 7")
	f("root on a meta page", "infergate.db", valid(put64(16, 1)), "names page 1 as the root")
	f("root on the freelist", "infergate.db", valid(put64(16, 5)), "page 5 of the root bucket is neither a branch nor a leaf page (flags 0x10)")
	f("freelist out of range", "retrain.db", valid(put64(32, 12)), "names page 12 as the freelist")
	f("no pages", "retrain.db", valid(put64(40, 0)), "meta page 0 (transaction 8) says the file holds 0 pages, fewer than its two meta pages and a root")
	f("page count past the end", "retrain.db", valid(put64(40, 1<<61)), "says its 2305843009213693952 pages of 4096 bytes end at byte 2305843009213693952×4096: truncated")

	// Pages of the trees, by what commit 0255404 wrote: in infergate.db
	// the root bucket is page 4 and outbox.events page 2 (with one
	// overflow page); in retrain.db pipeline.seen is branch page 9 over
	// leaves 3, 6, 7 and 8.
	at := func(page, off int, edit func(b []byte)) func([]byte) []byte {
		return func(d []byte) []byte {
			edit(d[page*ps+off:])
			return d
		}
	}
	elem := func(i, field int) int { return pageHeaderSize + i*elementSize + field }
	u32 := func(v uint32) func([]byte) { return func(b []byte) { binary.LittleEndian.PutUint32(b, v) } }
	u64 := func(v uint64) func([]byte) { return func(b []byte) { binary.LittleEndian.PutUint64(b, v) } }
	u16 := func(v uint16) func([]byte) { return func(b []byte) { binary.LittleEndian.PutUint16(b, v) } }
	f("child out of range", "retrain.db", at(9, elem(1, 8), u64(4000)), `bucket "pipeline.seen" refers to page 4000, outside pages 2 to 11`)
	f("child is a meta page", "retrain.db", at(9, elem(1, 8), u64(0)), "refers to page 0")
	f("cycle", "retrain.db", at(9, elem(2, 8), u64(9)), `page 9 of bucket "pipeline.seen" is reached a second time`)
	f("shared child", "retrain.db", at(9, elem(2, 8), u64(3)), `page 3 of bucket "pipeline.seen" is reached a second time`)
	f("two buckets share a page", "retrain.db", func(d []byte) []byte {
		// pipeline.runs (root page 2) made to point at pipeline.seen's leaf 3.
		i := bytes.Index(d[4*ps:5*ps], []byte("pipeline.runs"))
		binary.LittleEndian.PutUint64(d[4*ps+i+len("pipeline.runs"):], 3)
		return d
	}, "is reached a second time")
	f("bucket root out of range", "infergate.db", func(d []byte) []byte {
		i := bytes.Index(d[4*ps:5*ps], []byte("outbox.events"))
		binary.LittleEndian.PutUint64(d[4*ps+i+len("outbox.events"):], 99)
		return d
	}, `bucket "outbox.events" refers to page 99`)
	f("bucket header cut", "infergate.db", at(4, elem(0, 12), u32(3)), `bucket "drift" has a header of 3 bytes, want 16`)
	f("inline page cut", "infergate.db", at(4, elem(0, 12), u32(20)), `the inline page of bucket "drift" has 4 bytes, fewer than a page header`)
	f("inline page elements", "infergate.db", func(d []byte) []byte {
		i := bytes.Index(d[4*ps:5*ps], []byte("drift"))
		binary.LittleEndian.PutUint16(d[4*ps+i+len("drift")+bucketHeader+10:], 500)
		return d
	}, `the inline page of bucket "drift" holds 500 elements, more than the`)
	f("inline bucket in an inline bucket", "infergate.db", func(d []byte) []byte {
		i := bytes.Index(d[4*ps:5*ps], []byte("drift"))
		binary.LittleEndian.PutUint32(d[4*ps+i+len("drift")+bucketHeader+pageHeaderSize:], bucketFlag)
		return d
	}, `the inline page of bucket "drift" holds bucket "demo/1"`)
	f("inline branch", "infergate.db", func(d []byte) []byte {
		i := bytes.Index(d[4*ps:5*ps], []byte("drift"))
		binary.LittleEndian.PutUint16(d[4*ps+i+len("drift")+bucketHeader+8:], branchPage)
		return d
	}, `the inline page of bucket "drift" is not a leaf page (flags 0x1)`)
	f("page id", "infergate.db", at(2, 0, u64(3)), `page 2 of bucket "outbox.events" says it is page 3`)
	f("overflow past the end", "infergate.db", at(2, 12, u32(6)), `page 2 of bucket "outbox.events" runs 6 pages on, past the last page 7`)
	f("overflow onto the root", "infergate.db", at(2, 12, u32(2)), `page 4 of bucket "outbox.events" is reached a second time`)
	f("overflow lost", "infergate.db", at(2, 12, u32(0)), `page 2 of bucket "outbox.events": the value of key "02bfb54a-ec85-4368-9030-8a878e415e91" runs past the page's end`)
	f("flags", "retrain.db", at(6, 8, u16(0x10)), `page 6 of bucket "pipeline.seen" is neither a branch nor a leaf page (flags 0x10)`)
	f("count", "retrain.db", at(6, 10, u16(300)), `page 6 of bucket "pipeline.seen" holds 300 elements, more than the 255 that fit`)
	f("empty branch", "retrain.db", at(9, 10, u16(0)), `page 9 of bucket "pipeline.seen" is a branch page without elements`)
	f("key past the end", "retrain.db", at(6, elem(3, 8), u32(1<<31)), `page 6 of bucket "pipeline.seen": element 3 runs past the page's end`)
	f("branch key past the end", "retrain.db", at(9, elem(3, 4), u32(5000)), `page 9 of bucket "pipeline.seen": element 3 runs past the page's end`)
	f("value past the end", "retrain.db", at(6, elem(3, 12), u32(1<<30)), `the value of key "seen-`)
	f("empty key", "retrain.db", at(6, elem(0, 8), u32(0)), `page 6 of bucket "pipeline.seen": element 0 has an empty key`)
	f("leaf flags", "retrain.db", at(6, elem(2, 0), u32(4)), `key "seen-`)
	f("keys out of order", "retrain.db", func(d []byte) []byte {
		i := bytes.Index(d[6*ps:7*ps], []byte("seen-0"))
		d[6*ps+i] = 'z'
		return d
	}, `page 6 of bucket "pipeline.seen": key "zeen-`)
	f("key outside its parent's range", "retrain.db", func(d []byte) []byte {
		// the first key of leaf 6 made smaller than its branch key
		i := bytes.Index(d[6*ps:7*ps], []byte("seen-0"))
		d[6*ps+i] = 'a'
		return d
	}, "lies outside the range its parent gives it")
	f("zeroed root page", "infergate.db", at(4, 0, func(b []byte) { clear(b[:ps]) }), "page 4 of the root bucket says it is page 0 (overwritten or zeroed)")
	f("zeroed branch page", "retrain.db", at(9, 0, func(b []byte) { clear(b[:ps]) }), `page 9 of bucket "pipeline.seen" says it is page 0`)

	// Damage to the records, which the pages cannot tell.
	replace := func(old, new string) func([]byte) []byte {
		return func(d []byte) []byte { return bytes.ReplaceAll(d, []byte(old), []byte(new)) }
	}
	f("drift key", "infergate.db", replace("demo/1", "demo_1"), `bucket "drift" holds "demo_1", not a <model>/<version> key`)
	f("delivery record", "infergate.db", replace(`{"seq":1,`, `{"seq":x,`), `the delivery record of "a7458571-d94b-4e7c-b185-7c878c2c681f\x00audit" cannot be decoded`)
	f("delivery key", "retrain.db", replace("e3b5d6f0-1a2b-4c3d-8e9f-0a1b2c3d4e5f\x00chat", "e3b5d6f0-1a2b-4c3d-8e9f-0a1b2c3d4e5f-chat"), `not an <event id>\x00<target> key`)
	f("event lost", "infergate.db", replace(`a7458571-d94b-4e7c-b185-7c878c2c681f{"specversion"`, `b7458571-d94b-4e7c-b185-7c878c2c681f{"specversion"`),
		`holds the delivery "a7458571-d94b-4e7c-b185-7c878c2c681f\x00audit", but bucket "outbox.events" lacks its event`)
	f("event overwritten", "infergate.db", at(3, 0, func(b []byte) { clear(b[:900]) }), `event "02bfb54a-ec85-4368-9030-8a878e415e91" is not JSON`)
	f("run key", "retrain.db", replace("\x00\x00\x00\x00\x00\x00\x00\x01{", "\x00\x00\x00\x00\x00\x00\x00\x00{"), `bucket "pipeline.runs" holds 0x0000000000000000, not a run id`)
}

// TestEveryPageZeroed zeroes each page of the two fixtures in turn: a
// page in use is damage that names it; a page not in use (free, the
// freelist) changes nothing read; no page panics the reader.
func TestEveryPageZeroed(t *testing.T) {
	const ps = 4096
	for _, name := range []string{"infergate.db", "retrain.db"} {
		healthy := fixture(t, name)
		r := &reader{path: name, data: healthy}
		if _, err := r.read(); err != nil {
			t.Fatal(err)
		}
		read := func(path string) (any, error) {
			if name == "infergate.db" {
				return ReadGateway(path)
			}
			return ReadRetrain(path)
		}
		want, err := read(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		for page := range len(healthy) / ps {
			data := slices.Clone(healthy)
			clear(data[page*ps : (page+1)*ps])
			path := writeTemp(t, name, data)
			got, err := read(path)
			switch {
			case page < 2:
				// The other meta page holds the previous transaction.
				if err != nil {
					t.Errorf("%s: with meta page %d zeroed: %v", name, page, err)
				}
			case page < len(r.reached) && r.reached[page]:
				if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), recovery) {
					t.Errorf("%s: page %d in use zeroed: got %v, want damage naming the file", name, page, err)
				}
			default:
				gotJSON, _ := json.Marshal(got)
				wantJSON, _ := json.Marshal(want)
				if err != nil || !bytes.Equal(gotJSON, wantJSON) {
					t.Errorf("%s: page %d not in use zeroed: %v, or a different state", name, page, err)
				}
			}
		}
	}
}

// TestOverlappingValues builds a file whose 200 top-level buckets share
// one inline bucket of 35 keys, every key a suffix of the next so that
// they ascend while their values all begin at the same byte: a sound file
// cannot hold that many elements in its 16 KiB, and the reader says so
// rather than walk the same bytes over and over.
func TestOverlappingValues(t *testing.T) {
	const ps, buckets, inner = 4096, 200, 35
	data := make([]byte, 4*ps)
	editMeta(data, ps, 0, func(m []byte) {
		binary.LittleEndian.PutUint32(m[0:], magic)
		binary.LittleEndian.PutUint32(m[4:], version)
		binary.LittleEndian.PutUint32(m[8:], ps)
		binary.LittleEndian.PutUint64(m[16:], 2) // root
		binary.LittleEndian.PutUint64(m[32:], noFreelist)
		binary.LittleEndian.PutUint64(m[40:], 4) // pages
		binary.LittleEndian.PutUint64(m[48:], 1) // txid
	})
	// suffixes writes n elements at elems whose keys are the suffixes of
	// the n bytes before end (n, ..., 2, 1), shortest first, each with a
	// value of vsize bytes from end.
	suffixes := func(page []byte, elems, n, end int, flags, vsize uint32) {
		for i := range n {
			page[end-1-i] = byte(i + 1)
			e := page[elems+i*elementSize:]
			binary.LittleEndian.PutUint32(e[0:], flags)
			binary.LittleEndian.PutUint32(e[4:], uint32(end-(i+1)-(elems+i*elementSize)))
			binary.LittleEndian.PutUint32(e[8:], uint32(i+1))
			binary.LittleEndian.PutUint32(e[12:], vsize)
		}
	}
	root := data[2*ps : 3*ps]
	binary.LittleEndian.PutUint64(root[0:], 2)
	binary.LittleEndian.PutUint16(root[8:], leafPage)
	binary.LittleEndian.PutUint16(root[10:], buckets)
	valueAt := pageHeaderSize + buckets*elementSize + buckets
	value := root[valueAt:] // bucket header (root 0: inline), then its page
	inline := value[bucketHeader:]
	binary.LittleEndian.PutUint16(inline[8:], leafPage)
	binary.LittleEndian.PutUint16(inline[10:], inner)
	inlineLen := pageHeaderSize + inner*elementSize + inner
	suffixes(inline, pageHeaderSize, inner, inlineLen, 0, 0)
	suffixes(root, pageHeaderSize, buckets, valueAt, bucketFlag, uint32(bucketHeader+inlineLen))

	path := writeTemp(t, "overlap.db", data)
	_, err := Open(path)
	if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "holds elements that others hold too") {
		t.Fatalf("got %v, want damage: elements that overlap", err)
	}
	// The same file with one bucket is sound.
	binary.LittleEndian.PutUint16(root[10:], 1)
	file, err := Open(writeTemp(t, "one.db", data))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	file.ForEach("\x01", func(k, v []byte) error { n++; return nil })
	if got := file.Buckets(); len(got) != 1 || n != inner {
		t.Fatalf("buckets %q with %d keys, want one with %d", got, n, inner)
	}
}
