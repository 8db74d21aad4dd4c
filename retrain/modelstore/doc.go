// Package modelstore keeps model versions in the engine's JetStream object
// store, the bucket infergate_models, from which every gateway replica
// syncs its local repository; `infergate retrain` and the admin API's
// uploads publish into it. It has no server in it.
//
// A version's files (model.onnx, and where the version has them
// reference.json, metrics.json and labels.txt: Files) are objects named
// <model>/<version>/<publication>/<file>, under a prefix new with every
// Publish. Publish puts them, then, last, the version's manifest,
// <model>/<version>/manifest.json, which lists each file with its size,
// SHA-256 and object name: a version exists once its manifest does, so a
// reader never sees half a version. The manifest is written only if none
// was ever written (by the expected last sequence of its subject), so of
// two publishers of one version exactly one succeeds; the other gets
// ErrExists and the manifest that won, whose digests say whether it was
// the same version, and deletes its own objects, which no manifest names
// and no reader reads. A publisher that dies midway leaves objects that no
// manifest names either: they take room and nothing reads them; a Delete
// of that version, once published, removes them with it. (A manifest
// written before publications had prefixes names no objects: its files
// are read at <model>/<version>/<file>.)
//
// Fetch downloads a version into a temporary folder beside its
// destination, checks every file's size and digest against the manifest,
// syncs the files and renames the folder into place, so that a repository
// watcher never sees half a model; ReadFile reads one file, checked the
// same way. Delete removes the manifest first, then the files: a deleted
// version leaves a delete marker, which Watch and List report, so that
// replicas remove their copies. The marker also retires the version's
// number: Publish refuses it (ErrExists, ErrRetired), and NextVersion
// never hands it out, so that a number never names two different sets of
// files.
//
// Open creates the bucket (for those who publish); OpenExisting opens it
// as it is, for those who only read. A Store is safe for concurrent use.
package modelstore
