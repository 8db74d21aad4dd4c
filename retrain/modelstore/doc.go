// Package modelstore keeps model versions in the engine's JetStream object
// store, the bucket infergate_models, from which every gateway replica
// syncs its local repository; `infergate retrain` and the admin API's
// uploads publish into it. It has no server in it.
//
// A version's files are objects named <model>/<version>/<file>: model.onnx,
// and where the version has them reference.json, metrics.json and
// labels.txt (Files). Publish puts them, then, last, the version's
// manifest, <model>/<version>/manifest.json, which lists each file with its
// size and SHA-256: a version exists once its manifest does, so a reader
// never sees half a version, and a publisher that dies midway leaves only
// objects that no manifest names (the next Publish of that version
// replaces them). The manifest is written only if none exists (by the
// expected last sequence of its subject), so of two publishers of one
// version exactly one succeeds; the other gets ErrExists and the manifest
// that won, whose digests say whether it was the same version. Two
// publishers of different files for one version at the same moment may
// leave the loser's bytes under the winner's manifest: Fetch refuses them
// (ErrDamaged) rather than serve them, and the version must be deleted and
// published again.
//
// Fetch downloads a version into a temporary folder beside its
// destination, checks every file's size and digest against the manifest,
// syncs the files and renames the folder into place, so that a repository
// watcher never sees half a model. Delete removes the manifest first, then
// the files: a deleted version leaves a delete marker, which Watch and
// List report, so that replicas remove their copies; the marker also keeps
// NextVersion from handing out a deleted version's number again.
//
// A Store is safe for concurrent use.
package modelstore
