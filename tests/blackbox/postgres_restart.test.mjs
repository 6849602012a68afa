// The database restarted under a running microservice (issue 3): calls in flight get errors, not
// hangs; while it is down calls fail fast with 503 wamp.error.unavailable; when it is back the
// runtime recovers by itself, without a restart.
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import * as h from './lib/harness.mjs';
import { startPostgres } from './lib/postgres.mjs';

const PG_SERVICES = path.join(h.SOURCE_DIR, 'tests', 'blackbox', 'services_pg');
const CALL_TIMEOUT = 20; // seconds: an in-flight call that hangs would take this long

let dir, pg, nats, rt, nc;

before(async () => {
  dir = h.workDir('postgres_restart');
  [pg, nats] = await Promise.all([startPostgres({ dir }), h.startNats({ dir })]);
  const sdir = h.servicesDir(path.join(dir, 'services'), ['greeting.lua']);
  fs.symlinkSync(path.join(PG_SERVICES, 'pg_test.lua'), path.join(sdir, 'pg_test.lua'));
  fs.mkdirSync(path.join(sdir, 'migrations'));
  fs.symlinkSync(path.join(PG_SERVICES, 'migrations', '100_pg_test.sql'), path.join(sdir, 'migrations', '100_pg_test.sql'));
  rt = await h.startRuntime({
    dir, natsUrl: nats.url, servicesDir: sdir, logLevel: 'info',
    args: ['--postgres', pg.url, '--postgres-pool', '4', '--call-timeout', String(CALL_TIMEOUT)],
  });
  nc = await h.natsClient(nats.url);
});

after(async () => {
  if (nc) await nc.close().catch(() => {});
  await h.stopAll();
  if (pg) await pg.stop().catch(() => {});
});

async function health() {
  const r = await fetch(rt.url('/healthz'), { signal: AbortSignal.timeout(2000) });
  return { status: r.status, json: await r.json() };
}

// Sessions of the runtime's pool running pg_sleep, seen from psql.
async function sleepingInDb() {
  const rows = await pg.psql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'microservice' AND state = 'active' AND query LIKE '%pg_sleep(%'");
  return Number(rows[0][0]);
}

h.test('the database restarts while calls are in flight: errors, fail-fast while down, then recovery', { timeout: 60000 }, async () => {
  assert.deepEqual((await h.post(rt, 'pg_test.ping', [[], {}])).json, [[1], {}]);
  const pid = rt.proc.pid;

  // 6 slow queries and one slow transaction on a pool of 4: 4 run in the database, 3 wait in the queue
  const inflight = [];
  for (let i = 0; i < 6; i++) {
    inflight.push(h.post(rt, 'pg_test.slow', [[30, `slow-${i}`], {}], { timeout: 45000 }).then((r) => ({ r, at: Date.now(), what: `slow-${i}` })));
  }
  inflight.push(h.post(rt, 'pg_test.slow_tx', [[30, 'restart-tx'], {}], { timeout: 45000 }).then((r) => ({ r, at: Date.now(), what: 'slow_tx' })));
  const viaNats = nc.request('pg_test.slow', h.sc.encode(JSON.stringify([[30, 'slow-nats'], {}])), { timeout: 45000 })
    .then((m) => ({ m, at: Date.now() }), (e) => ({ e, at: Date.now() }));
  await h.waitFor(async () => (await sleepingInDb()) >= 4, { timeout: 10000, interval: 100, what: '4 pool connections running pg_sleep' });

  const stoppedAt = Date.now();
  await pg.stop();
  const settled = await Promise.all(inflight);
  const nats = await viaNats;
  for (const { r, at, what } of settled) {
    assert.ok([500, 503].includes(r.status), `${what}: an error, got ${r.status} ${r.text}`);
    h.assertErrorBody(assert, r.json, r.status === 503 ? 'wamp.error.unavailable' : 'wamp.error.runtime_error', r.text);
    assert.ok(at - stoppedAt < 10000, `${what} answered ${at - stoppedAt} ms after the stop (must not hang until the ${CALL_TIMEOUT} s timeout)`);
  }
  assert.ok(nats.at - stoppedAt < 10000, `the NATS caller answered ${nats.at - stoppedAt} ms after the stop`);
  if (nats.m) {
    const code = nats.m.headers?.get('Nats-Service-Error-Code');
    assert.ok(['500', '503'].includes(code), `NATS caller: error code ${code}: ${h.sc.decode(nats.m.data)}`);
  } else {
    assert.ok(/50[03]/.test(String(nats.e?.code ?? nats.e?.message)), `NATS caller: ${nats.e}`);
  }
  assert.ok(h.alive(rt.proc), 'the runtime survived the database going away');

  // down: health says so, and calls fail fast with 503 unavailable (well under the call timeout)
  await h.waitFor(async () => {
    const hh = await health();
    return hh.status === 503 && hh.json.postgres === 'down' ? hh : false;
  }, { timeout: 15000, interval: 100, what: 'GET /healthz to report postgres "down" with 503' });
  const t0 = Date.now();
  const down = await Promise.all(Array.from({ length: 20 }, () => h.post(rt, 'pg_test.ping', [[], {}], { timeout: 15000 })));
  for (const r of down) {
    assert.equal(r.status, 503, r.text);
    h.assertErrorBody(assert, r.json, 'wamp.error.unavailable', r.text);
    assert.ok(r.ms < 2000, `a call while the database is down took ${r.ms} ms`);
  }
  assert.ok(Date.now() - t0 < 3000, `20 calls while down took ${Date.now() - t0} ms`);
  const tx = await h.post(rt, 'pg_test.tx_commit', [['while-down'], {}], { timeout: 15000 });
  assert.equal(tx.status, 503, `a transaction while down: ${tx.text}`);
  assert.ok(tx.ms < 2000, `a transaction while down took ${tx.ms} ms`);
  // the error value a service sees carries the uri
  const [[okFlag], e] = (await h.post(rt, 'pg_test.ping_caught', [[], {}])).json;
  assert.equal(okFlag, false);
  assert.equal(e.uri, 'wamp.error.unavailable', JSON.stringify(e));
  assert.equal(e.is_error, false, 'unavailable is not a SQL error');
  const m = await nc.request('pg_test.ping', h.sc.encode('[[], {}]'), { timeout: 5000 });
  assert.equal(m.headers?.get('Nats-Service-Error-Code'), '503');
  // services that do not need the database still answer
  const hello = await h.post(rt, 'greeting_service.hello', [['Bob'], { last_name: 'Ross' }]);
  assert.deepEqual(hello.json, [['Hello, Bob Ross'], {}]);

  // back: same data folder, same port; the runtime reconnects by itself
  await pg.start();
  const backAt = Date.now();
  await h.waitFor(async () => {
    const r = await h.post(rt, 'pg_test.ping', [[], {}], { timeout: 5000 });
    return r.status === 200 && r.json[0][0] === 1;
  }, { timeout: 30000, interval: 200, what: 'a query to succeed again after the database restarted' });
  process.stderr.write(`# recovered ${Date.now() - backAt} ms after the database was back\n`);
  await h.waitFor(async () => {
    const hh = await health();
    return hh.status === 200 && hh.json.postgres === 'connected';
  }, { timeout: 10000, what: 'GET /healthz 200 with postgres "connected"' });

  // the whole pool works again: concurrent queries and transactions
  const results = await Promise.all(Array.from({ length: 50 }, (_, i) => h.post(rt, 'pg_test.double', [[i], {}], { timeout: 20000 })));
  const wrong = results.filter((r, i) => r.status !== 200 || r.json[0][0] !== i * 2);
  assert.equal(wrong.length, 0, `after recovery: ${wrong.slice(0, 3).map((r) => `${r.status} ${r.text}`).join('; ')}`);
  for (let i = 0; i < 6; i++) {
    const r = await h.post(rt, 'pg_test.tx_commit', [[`after-${i}`], {}], { timeout: 20000 });
    assert.equal(r.status, 200, r.text);
  }
  assert.deepEqual((await h.post(rt, 'pg_test.count', [['restart-tx'], {}])).json, [[0, []], {}], 'the interrupted transaction left nothing');
  assert.deepEqual((await h.post(rt, 'pg_test.count', [['after-5'], {}])).json, [[2, ['after-5-1', 'after-5-2']], {}]);
  assert.ok(h.alive(rt.proc) && rt.proc.pid === pid, 'the same runtime process throughout');
  assert.ok(!/AddressSanitizer|runtime error:/.test(rt.log()), 'no sanitizer output');
});
