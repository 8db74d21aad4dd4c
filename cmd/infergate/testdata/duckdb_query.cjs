// Runs SQL queries with DuckDB (npm's @duckdb/node-api, which `make
// duckdb` installs) and prints one JSON array: each query's rows as
// objects.
//
// Usage: node duckdb_query.cjs <folder holding node_modules> <query>...
const path = require('path');
const [dir, ...queries] = process.argv.slice(2);
const { DuckDBInstance } = require(path.resolve(dir, 'node_modules', '@duckdb', 'node-api'));

(async () => {
  const db = await DuckDBInstance.create(':memory:');
  const conn = await db.connect();
  const out = [];
  for (const q of queries) {
    out.push((await conn.runAndReadAll(q)).getRowObjectsJson());
  }
  conn.closeSync();
  db.closeSync();
  console.log(JSON.stringify(out));
})().catch((err) => {
  console.error(err);
  process.exit(1);
});
