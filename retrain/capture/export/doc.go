// Package export writes rows of captured traffic (capture.Example) as one
// file a data scientist opens without custom code: Parquet, or JSON lines.
// It reads no engine and parses no flags; `infergate capture export` feeds
// it.
//
// A file has one row per captured row and one column per value, in this
// order: id (string), time (UTC, microseconds), version and replica
// (strings), one column per feature value of each input, one per output
// value, and label. Layout says which: a tensor's columns are named by the
// model's feature names where its reference gives them, else
// <tensor>_<i>; an output with one value per row is one column named for
// it. Values are typed by the tensor's datatype: FP32 and FP16 as FLOAT,
// FP64 as DOUBLE, integers as INT64, BOOL as BOOLEAN.
//
// The label is always a nullable string holding the label's JSON (1,
// "cat", [0, 1]), null for a row no label has arrived for: one rule for
// every export, so that a query written against one file works on the
// next, whatever labels it holds (a data-dependent column type would
// change with a single string label). CAST(label AS DOUBLE) in DuckDB,
// pl.col("label").cast(pl.Float64) in polars or df.label.astype(float) in
// pandas make numbers of numeric labels. JSON lines carry the same keys
// with the label as JSON itself (null when none).
//
// A Parquet file is written streaming: rows go into row groups of bounded
// rows and bytes (Options), each compressed with zstd and written out when
// full, so memory stays bounded whatever the capture's size.
//
// A Writer or File is not safe for concurrent use: one goroutine writes
// its rows.
package export
