// The pool prepares statements (named, per connection, by SQL text) and keeps the behaviour of
// unnamed ones: a statement seen again runs as a prepared one; a failed Parse is not cached; a
// cached statement made stale by DDL (its result type changed) or by DEALLOCATE ALL is run again
// unnamed, transparently; statements of a transaction stay unnamed; --postgres-statements 0
// turns it off. One connection (--postgres-pool 1), so pg_prepared_statements shows what the pool
// prepared. The RPCs are in tests/blackbox/services_pg/pg_statements.lua.
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import * as h from './lib/harness.mjs';
import { startPostgres } from './lib/postgres.mjs';

const PG_SERVICES = path.join(h.SOURCE_DIR, 'tests', 'blackbox', 'services_pg');
const PREPARED = 'SELECT count(*) AS n FROM pg_prepared_statements WHERE statement = $1';

let dir, pg, nats, sdir;

before(async () => {
  dir = h.workDir('postgres_statements');
  [pg, nats] = await Promise.all([startPostgres({ dir }), h.startNats({ dir })]);
  sdir = path.join(dir, 'services');
  fs.mkdirSync(sdir);
  fs.symlinkSync(path.join(PG_SERVICES, 'pg_statements.lua'), path.join(sdir, 'pg_statements.lua'));
  await pg.psql('CREATE TABLE stmt_t (a int); INSERT INTO stmt_t VALUES (1)');
});

after(async () => {
  await h.stopAll();
  if (pg) await pg.stop().catch(() => {});
});

async function start(extra = []) {
  const rt = await h.startRuntime({
    dir, natsUrl: nats.url, servicesDir: sdir,
    args: ['--postgres', pg.url, '--postgres-pool', '1', ...extra], logLevel: 'info',
  });
  await h.waitFor(async () => (await h.curl(rt.url('/healthz'))).json?.postgres === 'connected',
    { timeout: 10000, interval: 20, what: 'the database connection' });
  return rt;
}

// run(rt, sql, params) -> rows, or throws with the SQL error
async function run(rt, sql, params = []) {
  const r = await h.post(rt, 'pg_statements.run', [[sql, params], {}]);
  assert.equal(r.status, 200, `${sql}: ${r.status} ${r.text}`);
  const [[rows], err] = r.json;
  if (rows === null) throw Object.assign(new Error(`${err.sqlstate} ${err.message}`), err);
  return rows;
}

const preparedCount = async (rt, sql) => (await run(rt, PREPARED, [sql]))[0].n;

let rt;

h.test('a statement run twice is prepared once on the connection, and gives the same rows', async () => {
  rt = await start();
  const sql = 'SELECT $1::int4 + 1 AS v';
  assert.deepEqual(await run(rt, sql, [1]), [{ v: 2 }]);
  assert.deepEqual(await run(rt, sql, [41]), [{ v: 42 }]);
  assert.equal(await preparedCount(rt, sql), 1, 'prepared once, under one name');
  // many at once, the first time (the others run unnamed while the Parse is in flight)
  const sql2 = 'SELECT $1::int4 * 2 AS v';
  const all = await Promise.all(Array.from({ length: 50 }, (_, i) => run(rt, sql2, [i])));
  all.forEach((rows, i) => assert.deepEqual(rows, [{ v: i * 2 }]));
  assert.equal(await preparedCount(rt, sql2), 1);
});

h.test('a statement whose Parse fails gives its error each time and is not cached', async () => {
  for (let i = 0; i < 2; i++) {
    await assert.rejects(run(rt, 'SELEKT 1'), (e) => e.sqlstate === '42601', `try ${i + 1}`);
  }
  assert.equal(await preparedCount(rt, 'SELEKT 1'), 0);
  // a bad parameter fails at Bind: the statement itself was prepared and keeps working
  const sql = 'SELECT $1::int4 AS v';
  await assert.rejects(run(rt, sql, ['not a number']), (e) => e.sqlstate === '22P02');
  assert.deepEqual(await run(rt, sql, [5]), [{ v: 5 }]);
  assert.equal(await preparedCount(rt, sql), 1);
});

h.test('DDL that changes a cached statement\'s result type: the next run answers with the new columns', async () => {
  const sql = 'SELECT * FROM stmt_t ORDER BY a';
  assert.deepEqual(await run(rt, sql), [{ a: 1 }]);
  assert.deepEqual(await run(rt, sql), [{ a: 1 }]);
  assert.equal(await preparedCount(rt, sql), 1);
  await pg.psql("ALTER TABLE stmt_t ADD COLUMN b text DEFAULT 'x'");
  assert.deepEqual(await run(rt, sql), [{ a: 1, b: 'x' }], 'no "cached plan must not change result type"');
  assert.deepEqual(await run(rt, sql), [{ a: 1, b: 'x' }]);
  // again, with many in flight on the connection when the first one learns it is stale
  await pg.psql("ALTER TABLE stmt_t ADD COLUMN c int DEFAULT 3");
  const all = await Promise.all(Array.from({ length: 20 }, () => run(rt, sql)));
  for (const rows of all) assert.deepEqual(rows, [{ a: 1, b: 'x', c: 3 }]);
});

h.test('DEALLOCATE ALL by a service: cached statements are prepared again', async () => {
  const sql = 'SELECT $1::text AS s';
  assert.deepEqual(await run(rt, sql, ['a']), [{ s: 'a' }]);
  assert.deepEqual(await run(rt, sql, ['b']), [{ s: 'b' }]);
  await run(rt, 'DEALLOCATE ALL');
  assert.deepEqual(await run(rt, sql, ['c']), [{ s: 'c' }], 'no "prepared statement does not exist"');
  assert.deepEqual(await run(rt, sql, ['d']), [{ s: 'd' }]);
  assert.equal(await preparedCount(rt, sql), 1);
  // again, with many in flight on the connection when the first one learns it is gone
  await run(rt, 'DEALLOCATE ALL');
  const all = await Promise.all(Array.from({ length: 20 }, (_, i) => run(rt, sql, [`p${i}`])));
  all.forEach((rows, i) => assert.deepEqual(rows, [{ s: `p${i}` }]));
  // a service's own EXECUTE of a statement that does not exist is its error, not a stale one
  await assert.rejects(run(rt, 'EXECUTE no_such_statement'), (e) => e.sqlstate === '26000');
});

h.test('statements of a transaction stay unnamed', async () => {
  const r = await h.post(rt, 'pg_statements.run_tx', [['SELECT 11 AS eleven'], {}]);
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.json, [[0], {}]);
});

h.test('--postgres-statements 0 prepares nothing', async () => {
  await rt.stop();
  rt = await start(['--postgres-statements', '0']);
  const sql = 'SELECT $1::int4 - 1 AS v';
  assert.deepEqual(await run(rt, sql, [1]), [{ v: 0 }]);
  assert.deepEqual(await run(rt, sql, [2]), [{ v: 1 }]);
  assert.equal(await preparedCount(rt, sql), 0);
});

h.test('--postgres-statements refuses what is not a number from 0 to 100000', () => {
  for (const bad of ['-1', '100001', 'many']) {
    const r = spawnSync(h.BIN, ['--postgres-statements', bad, '--http', 'off', sdir], { timeout: 20000 });
    assert.notEqual(r.status, 0, `--postgres-statements ${bad} is refused`);
    assert.match(String(r.stderr), /postgres-statements/, `the error names the flag: ${r.stderr}`);
  }
});
