// microservice.postgres against a real PostgreSQL (issue 3): type conversions both ways, real
// parameters, 200 concurrent queries on a pool of 4, transactions, SQL error mapping, and hello
// answering while a slow query is in flight. The RPCs are in tests/blackbox/services_pg/pg_test.lua.
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import * as h from './lib/harness.mjs';
import { startPostgres } from './lib/postgres.mjs';

const PG_SERVICES = path.join(h.SOURCE_DIR, 'tests', 'blackbox', 'services_pg');

let dir, pg, nats, rt, nc;

// A services dir: greeting, thing and pg_test, with the shipped migration and pg_test's own.
function makeServicesDir(sdir) {
  h.servicesDir(sdir, ['greeting.lua', 'thing.lua']);
  fs.symlinkSync(path.join(PG_SERVICES, 'pg_test.lua'), path.join(sdir, 'pg_test.lua'));
  const mdir = path.join(sdir, 'migrations');
  fs.mkdirSync(mdir);
  fs.symlinkSync(path.join(h.SHIPPED_SERVICES, 'migrations', '001_create_thing.sql'), path.join(mdir, '001_create_thing.sql'));
  fs.symlinkSync(path.join(PG_SERVICES, 'migrations', '100_pg_test.sql'), path.join(mdir, '100_pg_test.sql'));
  return sdir;
}

before(async () => {
  dir = h.workDir('postgres');
  [pg, nats] = await Promise.all([startPostgres({ dir }), h.startNats({ dir })]);
  rt = await h.startRuntime({
    dir, natsUrl: nats.url, servicesDir: makeServicesDir(path.join(dir, 'services')),
    args: ['--postgres', pg.url, '--postgres-pool', '4'], logLevel: 'info',
  });
  nc = await h.natsClient(nats.url);
});

after(async () => {
  if (nc) await nc.close().catch(() => {});
  await h.stopAll();
  if (pg) await pg.stop().catch(() => {});
});

// POST /rpc with [args, kwargs]; asserts 200 and returns the envelope.
async function ok(rpc, args = [], kwargs = {}) {
  const r = await h.post(rt, rpc, [args, kwargs]);
  assert.equal(r.status, 200, `${rpc} ${JSON.stringify(args)}: ${r.status} ${r.text}`);
  assert.ok(Array.isArray(r.json) && r.json.length === 2, `envelope of ${rpc}: ${r.text}`);
  return r.json;
}

h.test('the runtime is healthy with the database connected', async () => {
  const r = await h.curl(rt.url('/healthz'));
  assert.equal(r.status, 200, r.body);
  assert.equal(r.json.postgres, 'connected', r.body);
  assert.equal(r.json.status, 'ok', r.body);
});

h.test('every type converts from PostgreSQL to Lua to JSON', async () => {
  const [[count], row] = await ok('pg_test.types');
  assert.equal(count, 1, 'a SELECT of one row reports 1 row');
  const expected = {
    i2: 32767, i2_min: -32768,
    i4: 2147483647, i4_min: -2147483648,
    i8: 42, i8_2p53: 9007199254740992, i8_m2p53: -9007199254740992,
    i8_big: '9007199254740993', i8_max: '9223372036854775807', i8_min: '-9223372036854775808',
    f4: 1.5, f4_pi: 3.14, f8: 0.1, f8_tiny: -2.5e-300,
    num: '123456789012345678901234567890.123456789', num_scale: '0.10',
    t: true, f: false,
    txt: 'it\'s "quoted" \\ back\\\\slash ünïcødé 日本語 🎉',
    vc: 'varchar ✓',
    id: 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
    ts: '2026-11-28T12:30:00.5Z',
    ts_whole: '2026-11-28T14:30:00Z',
    d: '2026-11-28',
    js: { a: [1, 2, { b: null }], c: 'x', e: [], o: { k: 'v' } },
    jsb: { n: 1.5, deep: { list: [true, false] } },
    empty_arr: [],
    arr: [1, 'two', null],
    by: 'Hi\n',
    null_int: null, null_text: null, null_json: null,
  };
  for (const [k, v] of Object.entries(expected)) {
    assert.ok(k in row, `column ${k} is present in ${JSON.stringify(row)}`);
    assert.deepEqual(row[k], v, `column ${k}`);
  }
  assert.deepEqual(Object.keys(row).sort(), Object.keys(expected).sort());
});

h.test('parameters round-trip through every type (sent as real parameters)', async () => {
  const cases = [
    ['int2', -7, -7], ['int4', 2147483647, 2147483647], ['int8', 9007199254740991, 9007199254740991],
    ['int8', '9223372036854775807', '9223372036854775807'],
    ['float4', 0.5, 0.5], ['float8', 1e-10, 1e-10], ['float8', 123.456, 123.456],
    ['numeric', '3.14159265358979323846264338327950288', '3.14159265358979323846264338327950288'],
    ['numeric', 12, '12'],
    ['bool', true, true], ['bool', false, false],
    ['text', 'it\'s "quoted" \\ back\\\\slash\ttab\nnewline ünïcødé 日本語 🎉', 'it\'s "quoted" \\ back\\\\slash\ttab\nnewline ünïcødé 日本語 🎉'],
    ['text', '', ''],
    ['text', '$1 $2 %s %d ?', '$1 $2 %s %d ?'],
    ['varchar', 'ünïcødé', 'ünïcødé'],
    ['uuid', 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'],
    ['timestamptz', '2026-11-28T14:30:00.123456+05:30', '2026-11-28T09:00:00.123456Z'],
    ['timestamptz', '2000-01-01T00:00:00Z', '2000-01-01T00:00:00Z'],
    ['date', '1999-12-31', '1999-12-31'],
    ['jsonb', { a: [1, { b: null }, 'c'], e: [] }, { a: [1, { b: null }, 'c'], e: [] }],
    ['json', [1, 'two', [], { x: true }], [1, 'two', [], { x: true }]],
    ['jsonb', [], []],
  ];
  for (const [type, value, back] of cases) {
    const [[v, luaType, wasNull]] = await ok('pg_test.echo', [type, value]);
    assert.deepEqual(v, back, `${type} ${JSON.stringify(value)} came back as ${JSON.stringify(v)} (${luaType})`);
    assert.equal(wasNull, false, `${type} ${JSON.stringify(value)} is not NULL`);
  }
  // JSON null (and a missing argument) is SQL NULL, and NULL comes back as JSON null
  for (const type of ['int4', 'text', 'jsonb', 'timestamptz']) {
    const env = await ok('pg_test.echo', [type, null]);
    assert.equal(env[0][0], null, `${type} NULL comes back as null: ${JSON.stringify(env)}`);
    assert.equal(env[0][2], true, `${type} null was sent as SQL NULL`);
    const env2 = await ok('pg_test.echo', [type]);
    assert.deepEqual(env2[0][0], null, `${type} missing argument is NULL`);
    assert.equal(env2[0][2], true);
  }
  // several parameters of different types, in order
  assert.deepEqual(await ok('pg_test.many', ['x', 41, true]), [['x', 41, true, 42], {}]);
});

h.test('a parameter is data, never SQL: injection attempts are stored verbatim', async () => {
  const evil = [
    "'); DROP TABLE pg_test_kv; --",
    "Robert'); DROP TABLE pg_test_kv;--",
    "x' OR '1'='1",
    '$1; SELECT pg_sleep(10); --',
    "\\'; DELETE FROM pg_test_kv; --",
  ];
  for (const [i, value] of evil.entries()) {
    const json = { value, nested: [value] };
    const [args, kwargs] = await ok('pg_test.store', [`evil-${i}`, value, json]);
    assert.deepEqual(args, [value, json, 1], `stored verbatim: ${JSON.stringify(args)}`);
    assert.equal(kwargs.table_exists, true, 'the table is still there');
  }
  const rows = await pg.psql("SELECT count(*) FROM pg_test_kv WHERE k LIKE 'evil-%'");
  assert.deepEqual(rows, [[String(evil.length)]]);
  const v = await pg.psql("SELECT v FROM pg_test_kv WHERE k = 'evil-0'");
  assert.deepEqual(v, [[evil[0]]], 'psql sees the same text');
});

h.test('bytea comes out as a Lua string with every byte value, NUL included', async () => {
  assert.deepEqual(await ok('pg_test.binary_out'), [['string', 256, true, '00010203'], {}]);
});

h.test('NUL-free binary is a parameter like any other: it round-trips through bytea', async () => {
  const [[same, luaLen, pgLen, hexSame, hexBlob]] = await ok('pg_test.binary_in');
  assert.equal(pgLen, 254, 'PostgreSQL stored 254 bytes');
  assert.equal(luaLen, 254, 'Lua got 254 bytes back');
  assert.equal(same, true, 'the bytes that came back are the bytes sent');
  assert.equal(hexSame, true);
  assert.equal(hexBlob, true);
});

h.test('200 concurrent HTTP calls, each doing a query, on --postgres-pool 4: all correct', { timeout: 60000 }, async () => {
  const N = 200;
  const t0 = Date.now();
  const results = await Promise.all(Array.from({ length: N }, (_, i) => h.post(rt, 'pg_test.double', [[i * 1000003], {}])));
  const wrong = results.filter((r, i) => r.status !== 200 || r.json?.[0]?.[0] !== i * 1000003 * 2);
  assert.equal(wrong.length, 0, `${wrong.length} wrong, e.g. ${wrong.slice(0, 3).map((r) => `${r.status} ${r.text}`).join('; ')}`);
  const pids = new Set(results.map((r) => r.json[0][1]));
  assert.ok(pids.size >= 1 && pids.size <= 4, `queries ran on ${pids.size} backends; the pool has 4`);
  const after = await h.curl(rt.url('/healthz'));
  assert.equal(after.json.postgres, 'connected');
  process.stderr.write(`# 200 HTTP queries in ${Date.now() - t0} ms on ${pids.size} connections\n`);
});

h.test('one RPC spawning 200 coroutines that query at once on a pool of 4: all correct', { timeout: 60000 }, async () => {
  const [[done, wrong, npids], { errors }] = await ok('pg_test.fanout', [200]);
  assert.ok(Array.isArray(errors), JSON.stringify(errors));
  assert.deepEqual(errors, [], 'no coroutine failed');
  assert.equal(done, 200);
  assert.equal(wrong, 0);
  assert.ok(npids >= 1 && npids <= 4, `${npids} backends`);
});

h.test('200 concurrent NATS requests each doing a query: all correct', { timeout: 60000 }, async () => {
  const N = 200;
  const results = await Promise.all(Array.from({ length: N }, (_, i) =>
    nc.request('pg_test.double', h.sc.encode(JSON.stringify([[i], {}])), { timeout: 30000 })));
  const bad = results.map((m) => JSON.parse(h.sc.decode(m.data))).filter((j, i) => j?.[0]?.[0] !== i * 2);
  assert.equal(bad.length, 0, `${bad.length} wrong, e.g. ${JSON.stringify(bad.slice(0, 3))}`);
});

h.test('transaction: commits when the function returns, and returns its values', async () => {
  assert.deepEqual(await ok('pg_test.tx_commit', ['commit-a']), [['first', 'second'], {}]);
  assert.deepEqual(await ok('pg_test.count', ['commit-a']), [[2, ['commit-a-1', 'commit-a-2']], {}]);
});

h.test('transaction: rolls back when the function raises, and the error reaches the caller', async () => {
  const r = await h.post(rt, 'pg_test.tx_raise', [['raise-a'], {}]);
  assert.equal(r.status, 500, r.text);
  h.assertErrorBody(assert, r.json, 'wamp.error.runtime_error', r.text);
  assert.match(r.json.args[0], /deliberate rollback of raise-a/);
  assert.deepEqual(await ok('pg_test.count', ['raise-a']), [[0, []], {}], 'the row is absent afterwards');
  assert.deepEqual(await pg.psql("SELECT count(*) FROM pg_test_tx WHERE tag = 'raise-a'"), [['0']]);
});

h.test('transaction: a SQL error inside rolls back the earlier statements; pcall sees the SQL error', async () => {
  const [[okFlag], e] = await ok('pg_test.tx_sql_error', ['sqlerr-a']);
  assert.equal(okFlag, false);
  assert.equal(e.sqlstate, '23505', JSON.stringify(e));
  assert.equal(e.is_error, true);
  assert.deepEqual(await ok('pg_test.count', ['sqlerr-a']), [[0, []], {}]);
});

h.test('transaction: isolated from other connections until COMMIT', async () => {
  const [, seen] = await ok('pg_test.tx_isolation', ['iso-a']);
  assert.deepEqual(seen, { inside: 1, outside_before_commit: 0, outside_after_commit: 1 });
});

h.test('transaction: nesting is refused and rolls back; failed transactions do not leak connections', async () => {
  const [[okFlag, msg]] = await ok('pg_test.tx_nested', ['nested-a']);
  assert.equal(okFlag, false);
  assert.match(msg, /nest/);
  assert.deepEqual(await ok('pg_test.count', ['nested-a']), [[0, []], {}]);
  // more failing transactions than the pool has connections, then more committing ones
  for (let i = 0; i < 10; i++) {
    const r = await h.post(rt, 'pg_test.tx_raise', [[`leak-${i}`], {}], { timeout: 10000 });
    assert.equal(r.status, 500, r.text);
  }
  const commits = await Promise.all(Array.from({ length: 10 }, (_, i) =>
    h.post(rt, 'pg_test.tx_commit', [[`leak-ok-${i}`], {}], { timeout: 10000 })));
  for (const r of commits) assert.equal(r.status, 200, r.text);
  assert.deepEqual(await ok('pg_test.ping'), [[1], {}]);
});

h.test('a SQL error escaping an RPC answers 500 runtime_error with the SQLSTATE and no SQL', async () => {
  for (const [rpc, args, state] of [['pg_test.sql_error_escape', [], '22012'], ['pg_test.sql_error_unique_escape', ['dup-key-1'], '23505']]) {
    const r = await h.post(rt, rpc, [args, {}]);
    assert.equal(r.status, 500, r.text);
    h.assertErrorBody(assert, r.json, 'wamp.error.runtime_error', r.text);
    assert.ok(r.text.includes(state), `the message carries SQLSTATE ${state}: ${r.text}`);
    assert.ok(!/secret-sql-marker|SELECT|INSERT/i.test(r.text), `no SQL text in the reply: ${r.text}`);
    // the same over NATS: service-error headers with code 500
    const m = await nc.request(rpc, h.sc.encode(JSON.stringify([args, {}])), { timeout: 10000 });
    assert.equal(m.headers?.get('Nats-Service-Error-Code'), '500');
    const body = JSON.parse(h.sc.decode(m.data));
    assert.equal(body.error, 'wamp.error.runtime_error');
    assert.ok(body.args[0].includes(state), body.args[0]);
    assert.ok(!/secret-sql-marker|SELECT|INSERT/i.test(h.sc.decode(m.data)));
  }
});

h.test('a SQL error caught with pcall carries sqlstate, message and detail', async () => {
  const expect = {
    unique: '23505', syntax: '42601', undefined_table: '42P01', bad_param: '22P02', not_null: '23502',
  };
  for (const [kind, state] of Object.entries(expect)) {
    const [[okFlag, after], e] = await ok('pg_test.sql_error_caught', [kind, `caught-${kind}`]);
    assert.equal(okFlag, false, kind);
    assert.equal(after, 7, `${kind}: the pool answers after the error`);
    assert.equal(e.sqlstate, state, `${kind}: ${JSON.stringify(e)}`);
    assert.equal(e.is_error, true, `${kind}: pg.is_error(e)`);
    assert.equal(e.has_error_mt, true, `${kind}: metatable pg.error_mt`);
    assert.equal(typeof e.message, 'string');
    assert.ok(e.message.length > 0);
    assert.ok(e.tostring.includes(state), `${kind}: tostring(e) = ${e.tostring}`);
  }
  const [, e] = await ok('pg_test.sql_error_caught', ['unique', 'caught-unique']);
  assert.match(e.message, /duplicate key/);
  assert.match(String(e.detail), /caught-unique/, 'detail says which key');
});

h.test('greeting_service.hello keeps answering while a slow query (pg_sleep(2)) is in flight', { timeout: 30000 }, async () => {
  const started = nc.subscribe('pg_test.started', { max: 1 });
  await nc.flush();
  let slowDone = null;
  const slow = h.post(rt, 'pg_test.slow', [[2, 'slow-1'], {}]).then((r) => { slowDone = Date.now(); return r; });
  for await (const _ of started) break;
  // the query is running in the database
  await h.waitFor(async () => (await ok('pg_test.sleeping'))[0][0] >= 1, { timeout: 5000, interval: 20, what: 'pg_sleep to be active' });
  const t0 = Date.now();
  for (let i = 0; i < 5; i++) {
    const r = await h.post(rt, 'greeting_service.hello', [['Bob'], { last_name: 'Ross' }], { timeout: 5000 });
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.json, [['Hello, Bob Ross'], {}]);
    assert.ok(r.ms < 1000, `hello took ${r.ms} ms`);
  }
  assert.equal(slowDone, null, `the slow query was still in flight when hello answered (${Date.now() - t0} ms)`);
  const r = await slow;
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.json, [['done', 'slow-1'], {}]);
});

h.test('the runtime log shows no leaked SQL errors as crashes, and it is still alive', async () => {
  assert.ok(h.alive(rt.proc), 'the runtime is still running');
  assert.ok(!/AddressSanitizer|runtime error:|Assertion/.test(rt.log()), 'no sanitizer or assertion output');
});
