package engine

// The embedded server's store is checked at every start, because NATS
// recovers damaged files quietly: it skips a stream or consumer whose files
// it cannot read (and infergate would then create it anew, empty), and it
// cuts a message block back to its last readable record, often without a
// word, sometimes only when it first reads the block at run time, and then
// gives the lost sequence numbers out again. What NATS v2.15.3 does with
// each damage, found by damaging the files of a real store (the cases are
// in storecheck_test.go), and what the check makes of it:
//
//	file under streams/S/   damage                      NATS at start                                   the check
//	meta.inf, meta.sum      cut, zeroed, removed        warns, skips S (created again, S gets back its  after the start: S not loaded
//	                                                    messages, but keeps damaged meta files)
//	msgs/N.blk, the last    cut, zeroed, removed        "Stream state outdated" or "could not locate    before the start: unreadable records, or the
//	                                                    msg block", rebuilds, cuts, loses the tail      last record that index.db knew of is gone
//	msgs/N.blk, the last    a 4 KiB page zeroed         nothing; cuts it when first read, and gives     before the start: unreadable records
//	                                                    the lost sequence numbers out again
//	msgs/N.blk, another     cut mid-record, zeroed      nothing; cuts it when first read (Lost set)     before the start: unreadable records
//	msgs/N.blk, another     cut at a record boundary,   nothing, or Lost set: the same as a crash       before the start, when nothing was written
//	                        removed                     after removing a block that limits emptied      since index.db (a clean stop)
//	msgs/index.db           cut, zeroed, removed        "Stream state ... did not match", rebuilds      harmless: starts, all data intact
//	                                                    from the blocks, loses nothing
//	obs/C/meta.inf          cut, zeroed, removed        warns, skips C                                  after the start: C not loaded
//	obs/C/meta.sum          cut, zeroed                 nothing (not verified)                          harmless
//	obs/C/meta.sum          removed                     warns, skips C                                  after the start: C not loaded
//	obs/C/o.dat             cut, zeroed                 "corrupt state file", skips C (and refuses      after the start: C not loaded
//	                                                    to create it again)
//	obs/C/o.dat             emptied, removed            starts C over: it delivers everything again     before the start: o.dat empty or missing
//
// The server keeps no other files under jetstream/ when alone; nats.json is
// infergate's (ReadCredentials says what is wrong with it). The server
// never panicked on any of these. Its stream state's Lost field is no sign
// of damage: after an ordinary crash (kill -9) it counts as lost the
// messages of blocks that limits had emptied and removed.
//
// So the check has two halves. Before the server starts (and may cut a
// file), it reads the store: it walks every message block record by
// record (lengths and sequences, not checksums: those need a hash keyed
// per stream that this package does not import), and compares the blocks
// with what msgs/index.db, written every two minutes and at a clean stop,
// says they held. Damage found there stops the start before the server
// touches a file, so the next start says the same. After the server is
// ready, it checks that every stream and consumer on disk was loaded, and
// quotes what the server said about those that were not (their files stay
// as they were: the server skipped them).
//
// What stays unseen: damage that keeps records well-formed (flipped bits
// in a payload, which NATS sees when it reads the message), and a block
// other than the last cut at a record boundary or removed after messages
// were written since the last index.db, or the first block removed from a
// stream with a max age: all of these look like what NATS itself does to
// blocks as messages are deleted, expire or are purged.
//
// An operator who would rather keep what is left than restore a backup
// creates AcceptDamageFile in the store. The next start then repairs what
// the check found so that the server keeps each stream's last sequence
// (no number is given out twice, so no consumer skips a new message), moves
// every file it takes out to state_dir/jetstream-damaged instead of
// deleting it, starts, and removes AcceptDamageFile.
//
// The check reads every message block once: about 0.6 s per GiB from the
// page cache on a 2-core machine (BenchmarkCheckStore), as fast as the disk
// reads otherwise.

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats-server/v2/server/avl"
)

// AcceptDamageFile, created in the embedded engine's store
// (state_dir/jetstream), makes the next start keep what is left of a
// damaged store instead of refusing it. That start removes it.
const AcceptDamageFile = "accept-damage"

// ErrStoreDamaged is what errors.Is finds in the error of a start that
// found the embedded engine's store damaged.
var ErrStoreDamaged = errors.New("engine: the embedded engine's store is damaged")

// StoreDamageError is the error of a start that found the store of the
// embedded engine damaged: what is damaged, and how to recover.
type StoreDamageError struct {
	// StoreDir is the store, state_dir/jetstream.
	StoreDir string
	// Damage lists what is damaged, in the order found.
	Damage []StoreDamage
}

// StoreDamage is one damaged stream or consumer.
type StoreDamage struct {
	// Stream is the stream's name (bucket "b" is stream "KV_b").
	Stream string
	// Consumer is the consumer's name when the damage is a consumer's.
	Consumer string
	// Path is the stream's or consumer's directory.
	Path string
	// What says what is damaged and what is lost, in the server's words
	// when it said something.
	What string
}

// Error names every damaged stream and consumer and the ways to recover.
func (e *StoreDamageError) Error() string {
	var b strings.Builder
	b.WriteString("cannot start the embedded engine: ")
	for i, d := range e.Damage {
		if i > 0 {
			b.WriteString("; and ")
		}
		b.WriteString(d.subject())
		fmt.Fprintf(&b, " in %s is damaged (%s)", d.Path, d.What)
	}
	fmt.Fprintf(&b, "; move %s aside to start empty (losing every stream, bucket and consumer in it), restore it from a backup, "+
		"or create %s to start once with what is left (the files taken out go to %s)",
		e.StoreDir, filepath.Join(e.StoreDir, AcceptDamageFile), damagedDir(e.StoreDir))
	return b.String()
}

// Is makes errors.Is(err, ErrStoreDamaged) true.
func (e *StoreDamageError) Is(target error) bool { return target == ErrStoreDamaged }

// subject names the damaged stream, bucket or consumer.
func (d StoreDamage) subject() string {
	var s string
	if d.Consumer != "" {
		s = fmt.Sprintf("consumer %q of ", d.Consumer)
	}
	if bucket, ok := strings.CutPrefix(d.Stream, "KV_"); ok {
		return s + fmt.Sprintf("bucket %q (stream %q)", bucket, d.Stream)
	}
	return s + fmt.Sprintf("stream %q", d.Stream)
}

// damagedDir is where an accepting start moves what it takes out of the
// store storeDir.
func damagedDir(storeDir string) string { return storeDir + "-damaged" }

// storeCheck is the check of one start: what the store held before the
// server started, and what the server said while it started.
type storeCheck struct {
	storeDir string
	srv      *server.Server
	log      *slog.Logger
	// accept says AcceptDamageFile asks to keep what is left; aside is
	// where this start moves what it takes out.
	accept bool
	aside  string
	// streams maps each stream's name to its directory, as found on disk
	// before the start; consumers maps them to their consumers'.
	streams   map[string]string
	consumers map[string]map[string]string
	startLog  *startLog
}

// checkStoreBefore checks the store of srv, whose options name storeDir,
// before srv starts, and makes srv log through a startLog so that the
// check after the start can quote it. It returns a *StoreDamageError when
// the store is damaged, unless AcceptDamageFile asks to repair it.
func checkStoreBefore(srv *server.Server, storeDir string, log *slog.Logger) (*storeCheck, error) {
	c := &storeCheck{
		storeDir:  storeDir,
		srv:       srv,
		log:       log,
		aside:     filepath.Join(damagedDir(storeDir), time.Now().UTC().Format("20060102T150405Z")),
		streams:   make(map[string]string),
		consumers: make(map[string]map[string]string),
		startLog:  &startLog{serverLog: serverLog{log.With("component", "nats")}},
	}
	if _, err := os.Stat(filepath.Join(storeDir, AcceptDamageFile)); err == nil {
		c.accept = true
	}
	sdir := c.streamsDir()
	entries, err := os.ReadDir(sdir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("cannot check the embedded engine's store %s: %w", storeDir, err)
	}
	var damage []StoreDamage
	var repairs []func() error
	for _, ent := range entries {
		// A name starting with a dot is a stream the server was deleting.
		if !ent.IsDir() || strings.HasPrefix(ent.Name(), ".") {
			continue
		}
		name, dir := ent.Name(), filepath.Join(sdir, ent.Name())
		c.streams[name] = dir
		c.consumers[name] = make(map[string]string)
		d, repair, err := c.checkStream(name, dir, c.consumers[name])
		if err != nil {
			return nil, fmt.Errorf("cannot check the embedded engine's store %s: %w", storeDir, err)
		}
		damage = append(damage, d...)
		repairs = append(repairs, repair...)
	}
	if len(damage) > 0 {
		if !c.accept {
			return nil, &StoreDamageError{StoreDir: storeDir, Damage: damage}
		}
		for _, d := range damage {
			log.Warn("starting with what is left of a damaged "+d.subject()+", as "+AcceptDamageFile+" asks", "path", d.Path, "damage", d.What)
		}
		for _, repair := range repairs {
			if err := repair(); err != nil {
				return nil, fmt.Errorf("cannot repair the embedded engine's store %s: %w", storeDir, err)
			}
		}
	}
	srv.SetLoggerV2(c.startLog, false, false, false)
	return c, nil
}

// streamsDir is where the server keeps the streams of the one account of
// an embedded server.
func (c *storeCheck) streamsDir() string {
	return filepath.Join(c.storeDir, server.JetStreamStoreDir, server.DEFAULT_GLOBAL_ACCOUNT, "streams")
}

// checkAfter checks, once the server is ready, that it loaded every stream
// and consumer found on disk before the start. It returns a
// *StoreDamageError naming those it did not load, with what the server
// said about them, unless AcceptDamageFile asks to keep what is left: then
// it moves out the files of each stream the server could not read, so that
// the stream's messages and consumers come back when infergate creates it
// again, and each consumer, so that infergate can create it anew.
func (c *storeCheck) checkAfter() error {
	lines := c.startLog.stop()
	jsz, err := c.srv.Jsz(&server.JSzOptions{Accounts: true, Streams: true, Consumer: true, DirectConsumer: true})
	if err != nil {
		return fmt.Errorf("cannot check the embedded engine's store %s: %w", c.storeDir, err)
	}
	loaded := make(map[string]map[string]bool)
	for _, acc := range jsz.AccountDetails {
		if acc.Name != server.DEFAULT_GLOBAL_ACCOUNT {
			continue
		}
		for _, s := range acc.Streams {
			cons := make(map[string]bool)
			for _, ci := range append(s.Consumer, s.DirectConsumer...) {
				cons[ci.Name] = true
			}
			loaded[s.Name] = cons
		}
	}
	var damage []StoreDamage
	var repairs []func() error
	for _, name := range sortedKeys(c.streams) {
		dir := c.streams[name]
		cons, ok := loaded[name]
		if !ok {
			damage = append(damage, StoreDamage{
				Stream: name, Path: dir,
				What: said(lines, "the server did not load it", dir+string(filepath.Separator), fmt.Sprintf("> %s'", name), fmt.Sprintf("%q", name)),
			})
			for _, f := range []string{server.JetStreamMetaFile, server.JetStreamMetaFileSum} {
				repairs = append(repairs, c.moveOut(filepath.Join(dir, f), false))
			}
			continue
		}
		for _, cname := range sortedKeys(c.consumers[name]) {
			cdir := c.consumers[name][cname]
			if cons[cname] {
				continue
			}
			// An ephemeral consumer may have gone since; the server then
			// removed its directory.
			if _, err := os.Stat(cdir); errors.Is(err, os.ErrNotExist) {
				continue
			}
			what := said(lines, "the server did not load it", cdir+string(filepath.Separator), fmt.Sprintf("> %s > %s'", name, cname))
			if strings.Contains(what, "corrupt state file") {
				what += " (its state is " + consumerState + ")"
			}
			damage = append(damage, StoreDamage{Stream: name, Consumer: cname, Path: cdir, What: what})
			repairs = append(repairs, c.moveOut(cdir, true))
		}
	}
	if len(damage) > 0 {
		if !c.accept {
			return &StoreDamageError{StoreDir: c.storeDir, Damage: damage}
		}
		for _, d := range damage {
			c.log.Warn("starting without the damaged "+d.subject()+", as "+AcceptDamageFile+" asks: infergate creates it again", "path", d.Path, "damage", d.What)
		}
		for _, repair := range repairs {
			if err := repair(); err != nil {
				return fmt.Errorf("cannot repair the embedded engine's store %s: %w", c.storeDir, err)
			}
		}
	}
	if c.accept {
		if err := os.Remove(filepath.Join(c.storeDir, AcceptDamageFile)); err != nil {
			return fmt.Errorf("cannot remove %s after a start that accepted the damage: %w", filepath.Join(c.storeDir, AcceptDamageFile), err)
		}
	}
	return nil
}

// asideOf returns the place under c.aside of path, a file or a directory
// under the store's streams, and creates the directory it goes in.
func (c *storeCheck) asideOf(path string) (string, error) {
	rel, err := filepath.Rel(c.streamsDir(), path)
	if err != nil {
		return "", err
	}
	to := filepath.Join(c.aside, rel)
	if err := os.MkdirAll(filepath.Dir(to), 0o700); err != nil {
		return "", err
	}
	return to, nil
}

// moveOut returns a repair that moves path, a file or a directory under
// the store's streams, to the same place under c.aside; when mustExist is
// false, a path that is not there is no error.
func (c *storeCheck) moveOut(path string, mustExist bool) func() error {
	return func() error {
		to, err := c.asideOf(path)
		if err != nil {
			return err
		}
		err = os.Rename(path, to)
		if errors.Is(err, os.ErrNotExist) && !mustExist {
			return nil
		}
		if err == nil {
			c.log.Warn("moved a damaged file out of the embedded engine's store", "from", path, "to", to)
		}
		return err
	}
}

// cutOut returns a repair that copies the file at path to the same place
// under c.aside and cuts it to size bytes, as the server itself would, but
// before the server reads the stream's index: the server then finds the
// last block shorter than its index says, and rebuilds the stream keeping
// its last sequence.
func (c *storeCheck) cutOut(path string, size int64) func() error {
	return func() error {
		to, err := c.asideOf(path)
		if err != nil {
			return err
		}
		data, err := os.ReadFile(path)
		if err == nil {
			err = os.WriteFile(to, data, 0o600)
		}
		if err == nil {
			err = os.Truncate(path, size)
		}
		if err == nil {
			c.log.Warn("cut a damaged message block back to its last readable message", "path", path, "bytes", size, "copy", to)
		}
		return err
	}
}

// said returns the server's lines that contain one of marks, joined, or
// otherwise when there are none.
func said(lines []string, otherwise string, marks ...string) string {
	var quoted []string
	for _, l := range lines {
		for _, m := range marks {
			if strings.Contains(l, m) {
				quoted = append(quoted, strings.TrimSpace(l))
				break
			}
		}
	}
	if len(quoted) == 0 {
		return otherwise
	}
	return "the server said: " + strings.Join(quoted, "; ")
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// startLog passes the server's lines on like serverLog, and keeps its
// warnings and errors until the start is checked.
type startLog struct {
	serverLog
	mu sync.Mutex
	// lines holds the warnings and errors so far; stopped says the start
	// was checked and no more are kept. mu guards both.
	lines   []string
	stopped bool
}

// maxStartLines bounds what a start keeps of the server's lines.
const maxStartLines = 1000

func (l *startLog) keep(format string, v []any) {
	l.mu.Lock()
	if !l.stopped && len(l.lines) < maxStartLines {
		l.lines = append(l.lines, fmt.Sprintf(format, v...))
	}
	l.mu.Unlock()
}

// stop returns the lines kept and keeps no more.
func (l *startLog) stop() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stopped = true
	lines := l.lines
	l.lines = nil
	return lines
}

func (l *startLog) Warnf(format string, v ...any) {
	l.keep(format, v)
	l.serverLog.Warnf(format, v...)
}

func (l *startLog) Errorf(format string, v ...any) {
	l.keep(format, v)
	l.serverLog.Errorf(format, v...)
}

func (l *startLog) Fatalf(format string, v ...any) {
	l.keep(format, v)
	l.serverLog.Fatalf(format, v...)
}

// The file store's layout and record format, as NATS v2.15.3 writes them
// (server/filestore.go).
const (
	msgsDir        = "msgs"
	consumersDir   = "obs"
	blockSuffix    = ".blk"
	indexFile      = "index.db"
	consumerState  = "o.dat"
	recordHdrSize  = 22 // length (4), sequence (8), time (8), subject length (2)
	recordHashSize = 8
	recordMaxLen   = 32 << 20 // NATS's rlBadThresh
	headersBit     = 1 << 31  // in the length: the record has headers
	erasedBit      = 1 << 63  // in the sequence: the message was erased
	tombstoneBit   = 1 << 62  // in the sequence: a delete tombstone
	indexMagic     = 11
	indexMaxVer    = 4
)

// checkStream checks the files of stream name in dir and records its
// consumers' directories in consumers. With what is damaged it returns
// the repairs that keep what is left: those that make the server rebuild
// the stream from its blocks, cutting each at its first unreadable record,
// while it keeps the stream's last sequence.
func (c *storeCheck) checkStream(name, dir string, consumers map[string]string) ([]StoreDamage, []func() error, error) {
	var damage []StoreDamage
	var repairs []func() error
	add := func(consumer, path, what string) {
		damage = append(damage, StoreDamage{Stream: name, Consumer: consumer, Path: path, What: what})
	}
	odir := filepath.Join(dir, consumersDir)
	cents, err := os.ReadDir(odir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, nil, err
	}
	for _, ent := range cents {
		if !ent.IsDir() {
			continue
		}
		cdir := filepath.Join(odir, ent.Name())
		consumers[ent.Name()] = cdir
		// Without its meta.inf the server skips the consumer, which the
		// check after the start reports in the server's words.
		if _, err := os.Stat(filepath.Join(cdir, server.JetStreamMetaFile)); err != nil {
			continue
		}
		// The server writes o.dat when it creates the consumer, and
		// replaces it by a rename: an empty or missing one is damage, and
		// the server would start the consumer over without a word. To
		// accept it is to take the consumer out, for infergate to create
		// anew.
		switch info, err := os.Stat(filepath.Join(cdir, consumerState)); {
		case errors.Is(err, os.ErrNotExist):
			add(ent.Name(), cdir, "its state "+consumerState+" is missing: it would deliver everything again")
			repairs = append(repairs, c.moveOut(cdir, true))
		case err != nil:
			return nil, nil, err
		case info.Size() == 0:
			add(ent.Name(), cdir, "its state "+consumerState+" is empty: it would deliver everything again")
			repairs = append(repairs, c.moveOut(cdir, true))
		}
	}

	// An encrypted store is not infergate's; its blocks cannot be read here.
	if _, err := os.Stat(filepath.Join(dir, server.JetStreamMetaFileKey)); err == nil {
		return damage, repairs, nil
	}
	mdir := filepath.Join(dir, msgsDir)
	ments, err := os.ReadDir(mdir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, nil, err
	}
	var blocks []uint32
	for _, ent := range ments {
		n, ok := strings.CutSuffix(ent.Name(), blockSuffix)
		if !ok {
			continue
		}
		if i, err := strconv.ParseUint(n, 10, 32); err == nil {
			blocks = append(blocks, uint32(i))
		}
	}
	slices.Sort(blocks)
	idxPath := filepath.Join(mdir, indexFile)
	var idx *streamIndex
	if buf, err := os.ReadFile(idxPath); err == nil {
		idx = parseStreamIndex(buf)
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, nil, err
	}

	// The repairs of blocks: the server keeps a stream's last sequence when
	// it rebuilds the stream because its last block does not end as
	// index.db says; when the last block is intact, the stream's last
	// sequence is in it, and taking index.db out makes the server rebuild
	// from the blocks.
	lastDamaged, othersDamaged := false, false
	scans := make(map[uint32]*blockScan, len(blocks))
	var buf []byte
	for i, b := range blocks {
		last := i == len(blocks)-1
		var want *[recordHashSize]byte
		if last && idx != nil && idx.lastBlock == b && idx.lastHash != ([recordHashSize]byte{}) {
			want = &idx.lastHash
		}
		path := filepath.Join(mdir, blockName(b))
		s, nbuf, err := scanBlock(path, want, buf)
		if err != nil {
			return nil, nil, err
		}
		buf = nbuf
		scans[b] = s
		rel := filepath.Join(msgsDir, blockName(b))
		span, known := idx.block(b)
		before := len(damage)
		switch {
		case s.undecodable != nil:
			add("", dir, fmt.Sprintf("%s cannot be decompressed (%v): its messages are lost", rel, s.undecodable))
			repairs = append(repairs, c.moveOut(path, true))
		case s.brk >= 0 && !(last && s.tornTail):
			what := fmt.Sprintf("%s is zeroed or overwritten from byte %d of %d", rel, s.brk, s.size)
			if known && span.last > s.lastSeq {
				what += fmt.Sprintf(": messages %s in it are lost", seqRange(max(s.lastSeq+1, span.first), span.last))
			}
			add("", dir, what)
			if last {
				repairs = append(repairs, c.cutOut(path, s.brk))
			}
		case s.size == 0 && !last:
			what := rel + " is empty"
			if known && span.last >= span.first {
				what += fmt.Sprintf(": messages %s are lost", seqRange(span.first, span.last))
			}
			add("", dir, what)
		case want != nil && !s.foundHash:
			// The last record index.db knew of is gone from the last block,
			// which NATS only ever appends to.
			what := fmt.Sprintf("%s lost its last messages: %s knew it up to message %d, it now ends", rel, indexFile, span.last)
			if s.lastSeq > 0 {
				what += fmt.Sprintf(" at message %d", s.lastSeq)
			} else {
				what += " with none"
			}
			if s.brk >= 0 {
				what += fmt.Sprintf(", unreadable from byte %d of %d", s.brk, s.size)
			}
			add("", dir, what)
		}
		if len(damage) > before {
			lastDamaged = lastDamaged || last
			othersDamaged = othersDamaged || !last
		}
	}
	done := func() ([]StoreDamage, []func() error, error) {
		if othersDamaged && !lastDamaged {
			repairs = append(repairs, c.moveOut(idxPath, false))
		}
		return damage, repairs, nil
	}
	if idx == nil {
		return done()
	}
	// The last block index.db knew of may only be gone if a later one was
	// made: NATS makes a new block before it removes an emptied last one.
	if _, ok := scans[idx.lastBlock]; !ok && (len(blocks) == 0 || blocks[len(blocks)-1] < idx.lastBlock) {
		if span, _ := idx.block(idx.lastBlock); span.live > 0 {
			add("", dir, fmt.Sprintf("%s is missing: %s lists it with messages %s", filepath.Join(msgsDir, blockName(idx.lastBlock)), indexFile, seqRange(span.first, span.last)))
			lastDamaged = true
		}
	}
	// When nothing was written to the stream since index.db (a clean stop),
	// its blocks are as index.db lists them, but for what compaction dropped
	// of the messages it lists as deleted, and for what expired since: a
	// stream whose messages carry their own TTL may lose any of them, one
	// with a max age its oldest.
	if len(blocks) == 0 || blocks[len(blocks)-1] != idx.lastBlock || !scans[idx.lastBlock].cleanTail(idx.lastHash) {
		return done()
	}
	cfg, ok := readStreamConfig(dir)
	if !ok || cfg.AllowMsgTTL {
		return done()
	}
	for _, span := range idx.blocks {
		if span.index == idx.lastBlock || span.live == 0 {
			continue
		}
		rel := filepath.Join(msgsDir, blockName(span.index))
		s, ok := scans[span.index]
		if !ok {
			if cfg.MaxAge == 0 || blocks[0] < span.index {
				add("", dir, fmt.Sprintf("%s is missing: %s lists it with messages %s", rel, indexFile, seqRange(span.first, span.last)))
				othersDamaged = true
			}
			continue
		}
		if s.brk >= 0 || s.undecodable != nil || s.size == 0 {
			continue // reported above
		}
		if lost := span.liveAfter(s.lastSeq); lost > 0 {
			add("", dir, fmt.Sprintf("%s was cut short: %s lists messages up to %d in it, it now ends at message %d (%d messages lost)", rel, indexFile, span.last, s.lastSeq, lost))
			othersDamaged = true
		}
	}
	return done()
}

// streamConfig is what the check needs of a stream's configuration.
type streamConfig struct {
	MaxAge      int64 `json:"max_age"`
	AllowMsgTTL bool  `json:"allow_msg_ttl"`
}

// readStreamConfig reads the configuration of the stream in dir from its
// meta.inf; false when it cannot (the server then skips the stream, and the
// check after the start says so).
func readStreamConfig(dir string) (streamConfig, bool) {
	var cfg streamConfig
	buf, err := os.ReadFile(filepath.Join(dir, server.JetStreamMetaFile))
	if err != nil || json.Unmarshal(buf, &cfg) != nil {
		return cfg, false
	}
	return cfg, true
}

func blockName(index uint32) string { return strconv.FormatUint(uint64(index), 10) + blockSuffix }

func seqRange(first, last uint64) string {
	if first == last {
		return strconv.FormatUint(first, 10)
	}
	return fmt.Sprintf("%d-%d", first, last)
}

// blockScan is what scanBlock found in a message block.
type blockScan struct {
	size int64
	// lastSeq is the highest message sequence of a readable record, 0 when
	// none; lastHash is the checksum that ends the last readable record.
	lastSeq  uint64
	lastHash [recordHashSize]byte
	records  int
	// brk is where the first unreadable record starts, -1 when every record
	// is readable; tornTail says the unreadable rest may be the unfinished
	// last write of a crash: zeros to the end, or one record cut short.
	brk      int64
	tornTail bool
	// foundHash says a readable record ends with the checksum asked for.
	foundHash bool
	// compressed says the block is compressed: brk is then an offset into
	// the decompressed records.
	compressed bool
	// undecodable is why a compressed block could not be decompressed.
	undecodable error
}

// cleanTail says the block ends, readably, with the record whose checksum
// is hash: nothing was written to it since that record.
func (s *blockScan) cleanTail(hash [recordHashSize]byte) bool {
	return s.brk < 0 && s.undecodable == nil && s.records > 0 && s.lastHash == hash
}

// scanBlock walks the records of the block at path, checking lengths and
// sequences, and looks for the record that ends with checksum want when
// want is not nil. buf is a buffer to reuse; scanBlock returns it, grown.
func scanBlock(path string, want *[recordHashSize]byte, buf []byte) (*blockScan, []byte, error) {
	data, err := readInto(path, buf)
	if err != nil {
		return nil, buf, err
	}
	buf = data
	// Capped, so that no record reads past the file into the buffer's rest.
	data = data[:len(data):len(data)]
	s := &blockScan{size: int64(len(data)), brk: -1}
	var meta server.CompressionInfo
	if n, err := meta.UnmarshalMetadata(data); err != nil {
		s.undecodable = err
		return s, buf, nil
	} else if n > 0 {
		s.compressed = true
		if data, err = meta.Algorithm.Decompress(data[n:]); err != nil {
			s.undecodable = err
			return s, buf, nil
		}
	}
	le := binary.LittleEndian
	for off := 0; off < len(data); {
		rest := data[off:]
		if len(rest) < recordHdrSize {
			s.brk, s.tornTail = int64(off), true
			break
		}
		rl := le.Uint32(rest[0:4])
		hasHeaders := rl&headersBit != 0
		rl &^= headersBit
		slen := int(le.Uint16(rest[20:22]))
		if hasHeaders {
			slen += 4
		}
		dlen := int(rl) - recordHdrSize
		if dlen < 0 || slen > dlen-recordHashSize || rl > recordMaxLen {
			s.brk, s.tornTail = int64(off), allZero(rest)
			break
		}
		if int(rl) > len(rest) {
			// A sane header whose record runs past the end: the last write
			// was cut short.
			s.brk, s.tornTail = int64(off), true
			break
		}
		seq := le.Uint64(rest[4:12])
		var hash [recordHashSize]byte
		copy(hash[:], rest[rl-recordHashSize:rl])
		if want != nil && hash == *want {
			s.foundHash = true
		}
		if seq&tombstoneBit == 0 {
			if seq &^= erasedBit; seq > s.lastSeq {
				s.lastSeq = seq
			}
		}
		s.lastHash = hash
		s.records++
		off += int(rl)
	}
	return s, buf, nil
}

// readInto reads the file at path into buf, grown as needed.
func readInto(path string, buf []byte) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return buf, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return buf, err
	}
	size := int(info.Size())
	if cap(buf) < size {
		buf = make([]byte, size)
	}
	buf = buf[:size]
	if _, err := io.ReadFull(f, buf); err != nil {
		return buf, fmt.Errorf("cannot read %s: %w", path, err)
	}
	return buf, nil
}

func allZero(b []byte) bool {
	return len(bytes.TrimLeft(b, "\x00")) == 0
}

// streamIndex is what a stream's msgs/index.db says of its blocks.
type streamIndex struct {
	blocks    []blockSpan
	lastBlock uint32
	// lastHash is the checksum of the last record of lastBlock when the
	// index was written; zero when it had none.
	lastHash [recordHashSize]byte
}

// blockSpan is what index.db says one block holds.
type blockSpan struct {
	index       uint32
	first, last uint64
	live        uint64
	deleted     *avl.SequenceSet
}

// block returns what i says of block b; i may be nil.
func (i *streamIndex) block(b uint32) (blockSpan, bool) {
	if i == nil {
		return blockSpan{}, false
	}
	for _, s := range i.blocks {
		if s.index == b {
			return s, true
		}
	}
	return blockSpan{}, false
}

// liveAfter counts the messages after seq that the span lists as live.
func (s blockSpan) liveAfter(seq uint64) uint64 {
	var n uint64
	for q := max(seq+1, s.first); q <= s.last; q++ {
		if s.deleted == nil || !s.deleted.Exists(q) {
			n++
		}
	}
	return n
}

// parseStreamIndex reads a stream's index.db as NATS's recoverFullState
// does, but for the checksum, whose hash needs a key this package does not
// import the hash for. It returns nil for an index it cannot read in
// whole, exactly up to the checksum: the server then rebuilds the stream's
// state from its blocks, which loses nothing, and so the check may not
// trust it either.
func parseStreamIndex(buf []byte) (idx *streamIndex) {
	defer func() {
		// The deleted sets' decoder checks its bounds; this is for what it
		// may have missed in a damaged file.
		if recover() != nil {
			idx = nil
		}
	}()
	const minLen = 32
	if len(buf) < minLen {
		return nil
	}
	buf = buf[:len(buf)-8] // the checksum
	if buf[0] != indexMagic || buf[1] < 1 || buf[1] > indexMaxVer {
		return nil
	}
	version := buf[1]
	r := uvarintReader{buf: buf, off: 2}
	r.u()             // messages
	r.u()             // bytes
	r.u()             // first sequence
	r.i()             // first time
	r.u()             // last sequence
	r.i()             // last time
	subjects := r.u() // per-subject state
	if r.bad || subjects > uint64(len(buf)-r.off) {
		return nil
	}
	for range subjects {
		n := r.u()
		if r.bad || n > uint64(len(buf)-r.off) {
			return nil
		}
		if n > 0 {
			r.off += int(n)
			total := r.u()
			r.u() // first block
			if total > 1 || version >= 4 {
				r.u() // last block
			}
		}
	}
	nblocks := r.u()
	if r.bad || nblocks > uint64(len(buf)-r.off) {
		return nil
	}
	idx = &streamIndex{}
	for range nblocks {
		var s blockSpan
		index := r.u()
		r.u() // bytes
		s.first = r.u()
		r.i() // first time
		s.last = r.u()
		r.i() // last time
		ndeleted := r.u()
		if version >= 2 {
			r.u() // messages with a TTL
		}
		if version >= 3 {
			r.u() // scheduled messages
		}
		if r.bad || index > 1<<32-1 || s.first > s.last+1 {
			return nil
		}
		s.index = uint32(index)
		if n := len(idx.blocks); n > 0 && idx.blocks[n-1].index >= s.index {
			return nil
		}
		s.live = s.last - s.first + 1
		if ndeleted > 0 {
			set, n, err := avl.Decode(buf[r.off:])
			if err != nil {
				return nil
			}
			r.off += n
			s.deleted = set
			s.live -= min(s.live, ndeleted)
		}
		idx.blocks = append(idx.blocks, s)
	}
	last := r.u()
	if r.bad || last > 1<<32-1 || r.off+recordHashSize != len(buf) {
		return nil
	}
	idx.lastBlock = uint32(last)
	copy(idx.lastHash[:], buf[r.off:])
	if n := len(idx.blocks); n > 0 && idx.blocks[n-1].index != idx.lastBlock {
		return nil
	}
	return idx
}

// uvarintReader reads varints from buf; bad says one could not be read.
type uvarintReader struct {
	buf []byte
	off int
	bad bool
}

func (r *uvarintReader) u() uint64 {
	if r.bad || r.off >= len(r.buf) {
		r.bad = true
		return 0
	}
	v, n := binary.Uvarint(r.buf[r.off:])
	if n <= 0 {
		r.bad = true
		return 0
	}
	r.off += n
	return v
}

func (r *uvarintReader) i() int64 {
	u := r.u()
	return int64(u>>1) ^ -int64(u&1)
}
