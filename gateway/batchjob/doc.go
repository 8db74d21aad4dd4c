// Package batchjob scores a table file with a model version: the offline
// half of serving, behind `infergate score`.
//
// A job checks the file's columns against the model's input before any
// work (missing, extra and mistyped columns are errors naming them), judges
// the file against the version's drift reference in windows of the
// configured size with the statistics and decision rule of online drift,
// plus whole-file effect sizes (data validation before the batch is
// trusted), then streams the file through the version's ONNX Runtime
// sessions, one worker per instance, in batches of the size asked for,
// without HTTP. Reading, computing and writing overlap: a reader, the
// workers and a writer pass a few chunks of rows between them, so memory
// is bounded by those chunks whatever the file's size.
//
// The output of each row group of the input is a part file in a
// checkpoint folder beside the output, renamed into place once complete;
// a job started again with the same arguments skips the row groups whose
// parts exist, and the parts are joined into the output at the end. Batches
// restart at each row group, so a resumed job computes every batch as an
// uninterrupted one would.
//
// A Job is run once, by one goroutine; Run owns the goroutines it starts
// and stops them before it returns.
package batchjob
