// Package table reads and writes tables of named, typed columns as the
// files a data scientist keeps them in: Parquet, CSV with a header row, or
// JSON lines. It is the one place infergate reads and writes Parquet
// (through github.com/parquet-go/parquet-go): `infergate score` reads its
// input and writes its output here, and `infergate capture export` writes
// its files with the same Parquet writer settings and schema.
//
// Everything streams. A Reader yields a table in row groups (a Parquet
// file's own; for CSV and JSON lines, runs of GroupRows rows), and a
// group in chunks of at most the rows asked for, so memory is bounded by a
// chunk whatever the file's size. A Writer writes rows as they come; a
// Parquet writer flushes a row group once it holds its bound of rows or
// bytes.
//
// Readers and Writers are not safe for concurrent use: one goroutine reads
// or writes a table.
package table
