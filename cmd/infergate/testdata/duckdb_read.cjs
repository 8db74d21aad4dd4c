// Reads a Parquet file with DuckDB (npm's @duckdb/node-api, which `make
// duckdb` installs) and prints one JSON object: the queries it ran, the
// columns DESCRIBE reports and the rows, in the file's order.
//
// Usage: node duckdb_read.cjs <folder holding node_modules> <file.parquet>
const path = require('path');
const [dir, file] = process.argv.slice(2);
const { DuckDBInstance } = require(path.resolve(dir, 'node_modules', '@duckdb', 'node-api'));

(async () => {
  const db = await DuckDBInstance.create(':memory:');
  const conn = await db.connect();
  const src = `read_parquet('${file.replaceAll("'", "''")}')`;
  const describe = `DESCRIBE SELECT * FROM ${src}`;
  const select = `SELECT *, epoch_us("time") AS time_us FROM ${src}`;
  const columns = (await conn.runAndReadAll(describe)).getRowObjectsJson();
  const rows = (await conn.runAndReadAll(select)).getRowObjectsJson();
  conn.closeSync();
  db.closeSync();
  console.log(JSON.stringify({ queries: [describe, select], columns, rows }));
})().catch((err) => {
  console.error(err);
  process.exit(1);
});
