package modelstore

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/infergate/infergate/retrain/engine"
)

// Bucket is the engine's object store of model versions.
const Bucket = "infergate_models"

// ManifestFile is the name of a version's manifest, its last object; a
// fetched version folder holds it too.
const ManifestFile = "manifest.json"

// ModelFile is the one file every version has.
const ModelFile = "model.onnx"

// Files are the files a version may hold, ModelFile first.
var Files = []string{ModelFile, "reference.json", "metrics.json", "labels.txt"}

var (
	// ErrExists is returned (wrapped) by Publish for a version that is
	// published already, and by Fetch for a destination that exists.
	ErrExists = errors.New("modelstore: version exists")
	// ErrNotFound is returned (wrapped) for a version that is not published,
	// and by OpenExisting for an engine that has no model store.
	ErrNotFound = errors.New("modelstore: no such version")
	// ErrRetired is returned (wrapped) with ErrNotFound by Manifest, and
	// with ErrExists by Publish, for a version that was published and
	// deleted: its number is not published again.
	ErrRetired = errors.New("modelstore: version deleted, and its number is not reused")
	// ErrDamaged is returned (wrapped) by Fetch for a version whose files
	// do not match its manifest.
	ErrDamaged = errors.New("modelstore: version does not match its manifest")
)

// timeout bounds the calls that move no file (file transfers take the
// caller's context only).
const timeout = 10 * time.Second

// File is one file of a version as its manifest lists it.
type File struct {
	Name string `json:"name"`
	Size int64  `json:"size"`
	// SHA256 is the hex SHA-256 of the file.
	SHA256 string `json:"sha256"`
	// Object names the file's object in the store,
	// <model>/<version>/<publication>/<name>: each publication writes
	// under a prefix of its own, so that two publishers of one version
	// never write the same object. Empty in Describe's manifests and in
	// those written before publications had prefixes, whose objects are
	// <model>/<version>/<name>.
	Object string `json:"object,omitempty"`
}

// Manifest lists a version's files. A Manifest is plain data.
type Manifest struct {
	Model     string    `json:"model"`
	Version   int64     `json:"version"`
	Files     []File    `json:"files"`
	Published time.Time `json:"published"`
	// ID identifies this publication of the version: the manifest
	// object's NUID, new with every Publish.
	ID string `json:"-"`
}

// File returns the manifest's entry of name, or false.
func (m *Manifest) File(name string) (File, bool) {
	for _, f := range m.Files {
		if f.Name == name {
			return f, true
		}
	}
	return File{}, false
}

// SameFiles reports whether m and o list the same files with the same
// sizes and digests (wherever their objects are).
func (m *Manifest) SameFiles(o *Manifest) bool {
	return slices.EqualFunc(m.Files, o.Files, func(a, b File) bool {
		return a.Name == b.Name && a.Size == b.Size && a.SHA256 == b.SHA256
	})
}

// object returns the name of f's object: the one the manifest lists, or,
// in a manifest written before publications had prefixes, the one they
// had.
func (m *Manifest) object(f File) string {
	return cmp.Or(f.Object, objectName(m.Model, m.Version, f.Name))
}

// Digests returns "name sha256" of each file, for logs and errors.
func (m *Manifest) Digests() string {
	var b strings.Builder
	for i, f := range m.Files {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s %s", f.Name, f.SHA256)
	}
	return b.String()
}

// Entry is a version's manifest as List and Watch report it: published,
// or Deleted.
type Entry struct {
	Model   string
	Version int64
	Deleted bool
	// ID is the manifest's NUID (see Manifest.ID); a delete marker has
	// its own.
	ID string
}

// Store is the object store of model versions on one engine connection.
// It is safe for concurrent use.
type Store struct {
	js     jetstream.JetStream
	obs    jetstream.ObjectStore
	stream jetstream.Stream
}

// Open creates (or opens, updating its replicas) the bucket on conn: file
// storage, conn.Replicas copies. It is for those who publish; a reader
// calls OpenExisting.
func Open(ctx context.Context, conn *engine.Conn) (*Store, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	obs, err := engine.ObjectStore(ctx, conn.JS, jetstream.ObjectStoreConfig{
		Bucket:      Bucket,
		Description: "infergate model versions: <model>/<version>/<publication>/<file>, each version's <model>/<version>/manifest.json last",
		Storage:     jetstream.FileStorage,
		Replicas:    conn.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("cannot open the model store %s at %s: %w", Bucket, conn.URL, err)
	}
	return open(ctx, conn, obs)
}

// OpenExisting opens the bucket on conn as it is, creating or changing
// nothing; ErrNotFound (wrapped) when the engine has none (no gateway
// with model_store.sync and no publisher ever used it).
func OpenExisting(ctx context.Context, conn *engine.Conn) (*Store, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	obs, err := conn.JS.ObjectStore(ctx, Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("the engine at %s has no model store %s: %w", conn.URL, Bucket, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("cannot open the model store %s at %s: %w", Bucket, conn.URL, err)
	}
	return open(ctx, conn, obs)
}

// open returns the Store of obs, with its stream.
func open(ctx context.Context, conn *engine.Conn, obs jetstream.ObjectStore) (*Store, error) {
	stream, err := conn.JS.Stream(ctx, "OBJ_"+Bucket)
	if err != nil {
		return nil, fmt.Errorf("cannot open the model store's stream OBJ_%s at %s: %w", Bucket, conn.URL, err)
	}
	return &Store{js: conn.JS, obs: obs, stream: stream}, nil
}

// ValidModel reports why model cannot name a model of the store, or nil:
// it must be one plain path element.
func ValidModel(model string) error {
	if model == "" || model[0] == '.' || strings.ContainsAny(model, "/\\\x00") {
		return fmt.Errorf("model name %q is not one plain path element", model)
	}
	return nil
}

func objectName(model string, version int64, file string) string {
	return model + "/" + strconv.FormatInt(version, 10) + "/" + file
}

// metaSubject is the subject of the object store's record of name.
func metaSubject(name string) string {
	return "$O." + Bucket + ".M." + base64.URLEncoding.EncodeToString([]byte(name))
}

func check(model string, version int64) error {
	if err := ValidModel(model); err != nil {
		return err
	}
	if version <= 0 {
		return fmt.Errorf("version %d of model %q is not a positive number", version, model)
	}
	return nil
}

// Publish publishes the files of dir (ModelFile, required, and those of
// Files it holds; anything else in dir is ignored) as version of model,
// then its manifest, and returns the manifest. A version published
// already, or by another publisher meanwhile, is not written: the error
// wraps ErrExists and the manifest returned is the one published. A
// version deleted is not published again: the error wraps ErrExists and
// ErrRetired, and no manifest is returned.
//
// The files go under a prefix of this publication's own
// (<model>/<version>/<publication>/), which the manifest names, so that
// of two publishers of one version the loser's objects never replace the
// winner's; the loser deletes its own.
func (s *Store) Publish(ctx context.Context, model string, version int64, dir string) (*Manifest, error) {
	if err := check(model, version); err != nil {
		return nil, fmt.Errorf("cannot publish: %w", err)
	}
	switch m, err := s.Manifest(ctx, model, version); {
	case err == nil:
		return m, fmt.Errorf("cannot publish version %d of model %q: %w", version, model, ErrExists)
	case errors.Is(err, ErrRetired):
		return nil, fmt.Errorf("cannot publish version %d of model %q: %w: %w", version, model, ErrExists, ErrRetired)
	case !errors.Is(err, ErrNotFound):
		return nil, err
	}
	prefix := objectName(model, version, rand.Text()) + "/"
	m := &Manifest{Model: model, Version: version}
	for _, name := range Files {
		path := filepath.Join(dir, name)
		f, err := os.Open(path)
		if errors.Is(err, fs.ErrNotExist) && name != ModelFile {
			continue
		}
		if err != nil {
			s.removeObjects(ctx, m)
			return nil, fmt.Errorf("cannot publish version %d of model %q: %w", version, model, err)
		}
		file, err := s.putFile(ctx, prefix+name, f)
		f.Close()
		file.Name, file.Object = name, prefix+name
		if err != nil {
			// The object may be there in part; no manifest names it.
			m.Files = append(m.Files, file)
			s.removeObjects(ctx, m)
			return nil, fmt.Errorf("cannot publish %s of version %d of model %q: %w", name, version, model, err)
		}
		m.Files = append(m.Files, file)
	}
	m.Published = time.Now().UTC()
	if err := s.putManifest(ctx, m); err != nil {
		// Only a refusal says for sure that the manifest was not written:
		// after any other failure it may have been, and its files stay.
		if !errors.Is(err, ErrExists) {
			return nil, err
		}
		s.removeObjects(ctx, m)
		if errors.Is(err, ErrRetired) {
			return nil, err
		}
		won, rerr := s.Manifest(ctx, model, version)
		if rerr != nil {
			return nil, fmt.Errorf("%w (and cannot read the manifest that won: %v)", err, rerr)
		}
		return won, err
	}
	return m, nil
}

// removeObjects deletes the objects of m's files, which no manifest
// names: those of a publication that failed or lost. Errors are ignored:
// what is left takes room, nothing reads it, and Delete of the version
// removes it.
func (s *Store) removeObjects(ctx context.Context, m *Manifest) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	for _, f := range m.Files {
		s.obs.Delete(ctx, m.object(f))
	}
}

// putFile puts r as object name and returns its size and digest.
func (s *Store) putFile(ctx context.Context, name string, r io.Reader) (File, error) {
	h := sha256.New()
	cr := &countingReader{r: io.TeeReader(r, h)}
	info, err := s.obs.Put(ctx, jetstream.ObjectMeta{Name: name}, cr)
	if err != nil {
		return File{}, err
	}
	f := File{Size: cr.n, SHA256: hex.EncodeToString(h.Sum(nil))}
	if int64(info.Size) != f.Size || info.Digest != objectDigest(h) {
		return File{}, fmt.Errorf("the store holds %d bytes of digest %s, %d were sent", info.Size, info.Digest, f.Size)
	}
	return f, nil
}

// objectDigest is the object store's form of a digest.
func objectDigest(h hash.Hash) string {
	return "SHA-256=" + base64.URLEncoding.EncodeToString(h.Sum(nil))
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// putManifest writes m's manifest object unless one was ever written: its
// record is published expecting its subject to have none, so of two
// writers one wins; the other gets ErrExists. A delete marker counts: a
// deleted version's number is not reused (ErrExists and ErrRetired). The
// object is in the object store's own format, so that its reads (Get,
// List, Watch) see it as any other.
func (s *Store) putManifest(ctx context.Context, m *Manifest) error {
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("cannot encode the manifest: %w", err)
	}
	data = append(data, '\n')
	name := objectName(m.Model, m.Version, ManifestFile)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	switch msg, err := s.stream.GetLastMsgForSubject(ctx, metaSubject(name)); {
	case errors.Is(err, jetstream.ErrMsgNotFound):
	case err != nil:
		return fmt.Errorf("cannot read the manifest of version %d of model %q: %w", m.Version, m.Model, err)
	default:
		var info jetstream.ObjectInfo
		if err := json.Unmarshal(msg.Data, &info); err == nil && info.Deleted {
			return fmt.Errorf("cannot publish version %d of model %q: %w: %w", m.Version, m.Model, ErrExists, ErrRetired)
		}
		return fmt.Errorf("cannot publish version %d of model %q: %w", m.Version, m.Model, ErrExists)
	}
	id := rand.Text()
	chunks := "$O." + Bucket + ".C." + id
	if _, err := s.js.Publish(ctx, chunks, data); err != nil {
		return fmt.Errorf("cannot write the manifest of version %d of model %q: %w", m.Version, m.Model, err)
	}
	h := sha256.New()
	h.Write(data)
	info, _ := json.Marshal(jetstream.ObjectInfo{
		ObjectMeta: jetstream.ObjectMeta{Name: name, Opts: &jetstream.ObjectMetaOptions{ChunkSize: uint32(max(len(data), 1))}},
		Bucket:     Bucket, NUID: id, Size: uint64(len(data)), Chunks: 1, Digest: objectDigest(h),
	})
	meta := nats.NewMsg(metaSubject(name))
	meta.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
	meta.Data = info
	if _, err := s.js.PublishMsg(ctx, meta, jetstream.WithExpectLastSequencePerSubject(0)); err != nil {
		s.stream.Purge(ctx, jetstream.WithPurgeSubject(chunks))
		if engine.IsWrongSequence(err) {
			return fmt.Errorf("cannot publish version %d of model %q: another publisher did meanwhile: %w", m.Version, m.Model, ErrExists)
		}
		return fmt.Errorf("cannot write the manifest of version %d of model %q: %w", m.Version, m.Model, err)
	}
	m.ID = id
	return nil
}

// Manifest returns the manifest of version of model; ErrNotFound (wrapped)
// when it is not published, and with ErrRetired when it was deleted.
func (s *Store) Manifest(ctx context.Context, model string, version int64) (*Manifest, error) {
	if err := check(model, version); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	name := objectName(model, version, ManifestFile)
	res, err := s.obs.Get(ctx, name)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		if info, ierr := s.obs.GetInfo(ctx, name, jetstream.GetObjectInfoShowDeleted()); ierr == nil && info.Deleted {
			return nil, fmt.Errorf("version %d of model %q: %w: %w", version, model, ErrNotFound, ErrRetired)
		}
		return nil, fmt.Errorf("version %d of model %q: %w", version, model, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("cannot read the manifest of version %d of model %q: %w", version, model, err)
	}
	defer res.Close()
	data, err := io.ReadAll(io.LimitReader(res, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("cannot read the manifest of version %d of model %q: %w", version, model, err)
	}
	m, err := decodeManifest(data, model, version)
	if err != nil {
		return nil, err
	}
	if info, err := res.Info(); err == nil {
		m.ID = info.NUID
	}
	return m, nil
}

func decodeManifest(data []byte, model string, version int64) (*Manifest, error) {
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: cannot decode the manifest of version %d of model %q: %v", ErrDamaged, version, model, err)
	}
	if m.Model != model || m.Version != version {
		return nil, fmt.Errorf("%w: the manifest of version %d of model %q names version %d of %q", ErrDamaged, version, model, m.Version, m.Model)
	}
	if _, ok := m.File(ModelFile); !ok {
		return nil, fmt.Errorf("%w: the manifest of version %d of model %q lists no %s", ErrDamaged, version, model, ModelFile)
	}
	for _, f := range m.Files {
		if !slices.Contains(Files, f.Name) || f.Size < 0 || len(f.SHA256) != 64 {
			return nil, fmt.Errorf("%w: the manifest of version %d of model %q lists %q (%d bytes, sha256 %q)", ErrDamaged, version, model, f.Name, f.Size, f.SHA256)
		}
		// An object of this version's own, or Delete would remove
		// another's.
		if f.Object == "" {
			continue
		}
		rest, ok := strings.CutPrefix(f.Object, objectName(model, version, ""))
		publication, name, _ := strings.Cut(rest, "/")
		if !ok || publication == "" || name != f.Name {
			return nil, fmt.Errorf("%w: the manifest of version %d of model %q names the object %q for %s", ErrDamaged, version, model, f.Object, f.Name)
		}
	}
	return &m, nil
}

// ReadManifest reads the manifest file that Fetch leaves in a version
// folder dir; ErrNotFound (wrapped) when there is none.
func ReadManifest(dir, model string, version int64) (*Manifest, error) {
	data, err := os.ReadFile(filepath.Join(dir, ManifestFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", dir, ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	return decodeManifest(data, model, version)
}

// Describe returns the manifest that the files of dir would have as
// version of model (as Publish would write it, less its time): the sizes
// and digests of ModelFile and those of Files it holds.
func Describe(dir, model string, version int64) (*Manifest, error) {
	m := &Manifest{Model: model, Version: version}
	for _, name := range Files {
		f, err := os.Open(filepath.Join(dir, name))
		if errors.Is(err, fs.ErrNotExist) && name != ModelFile {
			continue
		}
		if err != nil {
			return nil, err
		}
		h := sha256.New()
		n, err := io.Copy(h, f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("cannot read %s: %w", filepath.Join(dir, name), err)
		}
		m.Files = append(m.Files, File{Name: name, Size: n, SHA256: hex.EncodeToString(h.Sum(nil))})
	}
	return m, nil
}

// List returns every version's manifest entry, published or deleted,
// sorted by model and version.
func (s *Store) List(ctx context.Context) ([]Entry, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	infos, err := s.obs.List(ctx, jetstream.ListObjectsShowDeleted())
	if errors.Is(err, jetstream.ErrNoObjectsFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cannot list the model store %s: %w", Bucket, err)
	}
	var out []Entry
	for _, info := range infos {
		if e, ok := entryOf(info); ok {
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b Entry) int {
		return cmp.Or(strings.Compare(a.Model, b.Model), cmp.Compare(a.Version, b.Version))
	})
	return out, nil
}

// entryOf returns the entry of a manifest's record; ok is false for any
// other object.
func entryOf(info *jetstream.ObjectInfo) (Entry, bool) {
	rest, ok := strings.CutSuffix(info.Name, "/"+ManifestFile)
	if !ok {
		return Entry{}, false
	}
	model, v, ok := strings.Cut(rest, "/")
	version, err := strconv.ParseInt(v, 10, 64)
	if !ok || err != nil || version <= 0 || ValidModel(model) != nil {
		return Entry{}, false
	}
	return Entry{Model: model, Version: version, Deleted: info.Deleted, ID: info.NUID}, true
}

// Versions returns the published versions of model, ascending.
func (s *Store) Versions(ctx context.Context, model string) ([]int64, error) {
	entries, err := s.List(ctx)
	if err != nil {
		return nil, err
	}
	var out []int64
	for _, e := range entries {
		if e.Model == model && !e.Deleted {
			out = append(out, e.Version)
		}
	}
	return out, nil
}

// NextVersion returns the number the next version of model takes: one
// above the highest ever published, deleted ones too, so that a number
// never names two different versions.
func (s *Store) NextVersion(ctx context.Context, model string) (int64, error) {
	entries, err := s.List(ctx)
	if err != nil {
		return 0, err
	}
	var highest int64
	for _, e := range entries {
		if e.Model == model {
			highest = max(highest, e.Version)
		}
	}
	return highest + 1, nil
}

// Fetch downloads version of model into the folder dir, which must not
// exist: into a temporary folder beside it (its name begins with a dot,
// which repository scans skip), checking each file's size and digest
// against the manifest, syncing each, then renamed to dir. The folder
// holds the manifest too (ManifestFile). It returns the manifest.
func (s *Store) Fetch(ctx context.Context, model string, version int64, dir string) (*Manifest, error) {
	m, err := s.Manifest(ctx, model, version)
	if err != nil {
		return nil, err
	}
	if _, err := os.Lstat(dir); err == nil {
		return nil, fmt.Errorf("cannot fetch version %d of model %q into %s: %w", version, model, dir, ErrExists)
	}
	parent := filepath.Dir(dir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return nil, fmt.Errorf("cannot fetch version %d of model %q: %w", version, model, err)
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(dir)+".fetch-")
	if err != nil {
		return nil, fmt.Errorf("cannot fetch version %d of model %q: %w", version, model, err)
	}
	if err := s.fetchInto(ctx, m, tmp); err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("cannot fetch version %d of model %q: %w", version, model, err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		os.RemoveAll(tmp)
		if _, serr := os.Lstat(dir); serr == nil {
			return nil, fmt.Errorf("cannot fetch version %d of model %q into %s: %w", version, model, dir, ErrExists)
		}
		return nil, fmt.Errorf("cannot fetch version %d of model %q: %w", version, model, err)
	}
	syncDir(parent)
	return m, nil
}

// fetchInto writes m's files and m into the folder tmp, each synced.
func (s *Store) fetchInto(ctx context.Context, m *Manifest, tmp string) error {
	for _, f := range m.Files {
		if err := s.fetchFile(ctx, m, f, filepath.Join(tmp, f.Name)); err != nil {
			return err
		}
	}
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	if err := writeSynced(filepath.Join(tmp, ManifestFile), append(data, '\n')); err != nil {
		return err
	}
	syncDir(tmp)
	return nil
}

// fetchFile writes f of m into the new file path, synced.
func (s *Store) fetchFile(ctx context.Context, m *Manifest, f File, path string) error {
	out, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("cannot fetch %s of version %d of model %q: %w", f.Name, m.Version, m.Model, err)
	}
	err = s.copyFile(ctx, m, f, out)
	if serr := errors.Join(out.Sync(), out.Close()); err == nil && serr != nil {
		err = fmt.Errorf("cannot fetch %s of version %d of model %q: %w", f.Name, m.Version, m.Model, serr)
	}
	return err
}

// copyFile writes the object of f of m to w, checking its size and digest
// against the manifest (ErrDamaged when they differ, or it is missing).
func (s *Store) copyFile(ctx context.Context, m *Manifest, f File, w io.Writer) error {
	what := fmt.Sprintf("%s of version %d of model %q", f.Name, m.Version, m.Model)
	res, err := s.obs.Get(ctx, m.object(f))
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return fmt.Errorf("%w: %s is missing", ErrDamaged, what)
	}
	if err != nil {
		return fmt.Errorf("cannot fetch %s: %w", what, err)
	}
	defer res.Close()
	h := sha256.New()
	// One byte more than the manifest says tells a longer object.
	n, err := io.Copy(io.MultiWriter(w, h), io.LimitReader(res, f.Size+1))
	if errors.Is(err, jetstream.ErrDigestMismatch) {
		return fmt.Errorf("%w: %s does not match the object store's digest", ErrDamaged, what)
	}
	if err != nil {
		return fmt.Errorf("cannot fetch %s: %w", what, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); n != f.Size || got != f.SHA256 {
		return fmt.Errorf("%w: %s has %d bytes of sha256 %s, the manifest says %d bytes of %s", ErrDamaged, what, n, got, f.Size, f.SHA256)
	}
	return nil
}

// ReadFile returns the file name of version of model, read whole and
// checked against the manifest's size and digest: for the small files
// (reference.json, metrics.json, labels.txt) of a reader that needs one
// alone; Fetch takes a whole version. ErrNotFound (wrapped) when the
// version is not published, fs.ErrNotExist (wrapped) when it has no such
// file, ErrDamaged (wrapped) when the object does not match.
func (s *Store) ReadFile(ctx context.Context, model string, version int64, name string) ([]byte, error) {
	m, err := s.Manifest(ctx, model, version)
	if err != nil {
		return nil, err
	}
	f, ok := m.File(name)
	if !ok {
		return nil, fmt.Errorf("version %d of model %q has no %s: %w", version, model, name, fs.ErrNotExist)
	}
	var buf bytes.Buffer
	if err := s.copyFile(ctx, m, f, &buf); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// ErrLeftovers is wrapped by Delete's error when the version is deleted
// but some of its objects could not be removed: they take room, nothing
// reads them.
var ErrLeftovers = errors.New("modelstore: the version is deleted, some of its objects are left")

// Delete deletes version of model: its manifest first, so that it is
// gone for every reader at once, then the objects it names, and any other
// under the version's name (of publishers that died or lost before they
// removed theirs). ErrNotFound (wrapped) when it is not published. Its
// number is not published again (ErrRetired).
func (s *Store) Delete(ctx context.Context, model string, version int64) error {
	m, err := s.Manifest(ctx, model, version)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	manifest := objectName(model, version, ManifestFile)
	if err := s.obs.Delete(ctx, manifest); err != nil {
		return fmt.Errorf("cannot delete version %d of model %q: %w", version, model, err)
	}
	var names []string
	for _, f := range m.Files {
		names = append(names, m.object(f))
	}
	infos, err := s.obs.List(ctx)
	if err != nil && !errors.Is(err, jetstream.ErrNoObjectsFound) {
		return fmt.Errorf("%w: version %d of model %q: cannot list its files: %w", ErrLeftovers, version, model, err)
	}
	for _, info := range infos {
		if strings.HasPrefix(info.Name, objectName(model, version, "")) && info.Name != manifest && !slices.Contains(names, info.Name) {
			names = append(names, info.Name)
		}
	}
	var errs []error
	for _, name := range names {
		if err := s.obs.Delete(ctx, name); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: version %d of model %q: %w", ErrLeftovers, version, model, err)
	}
	return nil
}

// Watch reports the manifests published and deleted from now on, until
// ctx ends; then the channel is closed. It is closed too when the watch
// breaks (the connection closed): watch again, and List what was missed.
func (s *Store) Watch(ctx context.Context) (<-chan Entry, error) {
	w, err := s.obs.Watch(ctx, jetstream.UpdatesOnly())
	if err != nil {
		return nil, fmt.Errorf("cannot watch the model store %s: %w", Bucket, err)
	}
	out := make(chan Entry)
	go func() {
		defer close(out)
		defer func() {
			w.Stop()
			// The subscription's handler may wait to hand over one more
			// update; it closes Updates once it ended.
			for range w.Updates() {
			}
		}()
		for {
			select {
			case <-ctx.Done():
				return
			case info, ok := <-w.Updates():
				if !ok {
					return
				}
				if info == nil {
					continue
				}
				e, ok := entryOf(info)
				if !ok {
					continue
				}
				select {
				case out <- e:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out, nil
}

func writeSynced(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err = errors.Join(err, f.Sync(), f.Close()); err != nil {
		return fmt.Errorf("cannot write %s: %w", path, err)
	}
	return nil
}

// syncDir fsyncs a folder, so that names created or renamed in it survive
// a crash; errors are ignored, as some file systems refuse.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}
