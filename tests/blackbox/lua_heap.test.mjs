// The Lua memory a call's arguments take once decoded (runtime/mlua_memory.c): JSON amplifies (a
// body of [0],[0],... takes 20-odd times its size as Lua tables), and the decode runs before the
// call's coroutine, outside the --max-lua-memory cap. One call's arguments are bounded by
// --max-call-memory (413 beyond), the large arguments of the calls in flight together by a quarter
// of --max-lua-memory (503 beyond), so one client's big bodies, over HTTP or NATS, leave the heap
// bounded and other clients' small calls answered. Replies to ms.call are bounded per call too.
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import * as h from './lib/harness.mjs';
import { RawWamp, MSG, wsUrl, closeAllWamp } from './lib/wamp.mjs';

const LUA_MB = 64; // call cap 8 MiB, large arguments 16 MiB together
let dir, nats, rt, nc;

before(async () => {
  dir = h.workDir('lua_heap');
  nats = await h.startNats({ dir });
  rt = await h.startRuntime({
    dir, natsUrl: nats.url,
    servicesDir: h.servicesDir(path.join(dir, 'services'), ['greeting.lua', 'memory_test.lua']),
    args: ['--max-lua-memory', String(LUA_MB)],
    logLevel: 'info',
  });
  nc = await h.natsClient(nats.url);
});

after(async () => {
  if (nc) await nc.close();
  await closeAllWamp();
  await h.stopAll();
});

// [[[[0],[0],...], seconds]]: memory_test.hold_args keeps the list for `seconds`.
const body = (n, seconds) => `[[[${'[0],'.repeat(n - 1)}[0]], ${seconds}]]`;

const metric = async (name) => {
  const m = await h.post(rt, '/metrics', undefined, { method: 'GET' });
  const line = m.text.split('\n').find((l) => l.startsWith(name + ' '));
  assert.ok(line, `${name} in /metrics`);
  return Number(line.split(' ')[1]);
};

// One small call over HTTP and one over NATS (another client than the big bodies' ones).
const smallCalls = async () => {
  const r = await h.post(rt, 'greeting_service.hello', [['Bob'], { last_name: 'Ross' }]);
  assert.equal(r.status, 200, `small HTTP call while big bodies are in flight: ${r.text}`);
  const m = await nc.request('greeting_service.hello', h.sc.encode('[["Bob"]]'), { timeout: 10000 });
  assert.equal(m.headers?.get('Nats-Service-Error-Code') || '', '', `small NATS call: ${h.sc.decode(m.data)}`);
  assert.deepEqual(JSON.parse(h.sc.decode(m.data)), [['Hello, Bob '], {}]);
};

// Sends the big bodies (half over HTTP, half as NATS requests) and makes small calls until they
// have all answered; returns their outcomes and the largest heap seen.
async function storm(payload, count) {
  let done = false, maxHeap = 0, probes = 0;
  const big = [];
  for (let i = 0; i < count; i++) {
    big.push(i % 2 === 0
      ? h.post(rt, 'memory_test.hold_args', payload, { timeout: 60000 }).then((r) => ({ status: r.status, text: r.text }))
      : nc.request('memory_test.hold_args', h.sc.encode(payload), { timeout: 60000 }).then((m) => ({
        status: Number(m.headers?.get('Nats-Service-Error-Code') || 200), text: h.sc.decode(m.data),
      })));
  }
  const all = Promise.all(big).finally(() => { done = true; });
  while (!done) {
    await smallCalls();
    maxHeap = Math.max(maxHeap, await metric('microservice_lua_memory_bytes'));
    probes++;
  }
  const results = await all;
  console.log(`# ${count} bodies of ${payload.length} bytes: ${JSON.stringify(results.map((r) => r.status))}, ` +
    `${probes} rounds of small calls, largest Lua heap ${(maxHeap / 1048576).toFixed(1)} MiB`);
  return { results, maxHeap, probes };
}

h.test('900 KB bodies that decode past --max-call-memory: 413, the heap stays bounded, small calls answered', async () => {
  await smallCalls();
  const payload = body(225000, 4); // 900 KB, about 20 MB of Lua tables
  assert.ok(payload.length > 890000 && payload.length < 1000000, `${payload.length}`);
  const { results, maxHeap, probes } = await storm(payload, 8);
  for (const r of results) {
    assert.equal(r.status, 413, r.text);
    const e = JSON.parse(r.text);
    h.assertErrorBody(assert, e, 'wamp.error.invalid_argument', r.text);
    assert.match(e.args[0], /^request too large once decoded: its arguments take over 8192 KiB of Lua memory/);
  }
  assert.ok(probes >= 1);
  assert.ok(maxHeap < LUA_MB * 1024 * 1024, `largest heap seen: ${maxHeap}`);
  assert.ok(await metric('microservice_lua_memory_refusals_total{what="too_large"}') >= 8);
  assert.equal(await metric('microservice_lua_memory_refusals_total{what="call"}'), 0);
  await smallCalls();
});

h.test('many concurrent bodies under the per-call bound: they share a quarter of the limit, the rest 503, small calls answered', async () => {
  const payload = body(40000, 3); // 160 KB, about 4 MB of Lua tables: 3 or 4 fit in 16 MiB
  const { results, maxHeap } = await storm(payload, 24); // 24 x 4 MB would be 96 MB, over the limit
  const ok = results.filter((r) => r.status === 200);
  const refused = results.filter((r) => r.status === 503);
  assert.equal(ok.length + refused.length, results.length, JSON.stringify(results.map((r) => r.status)));
  assert.ok(ok.length >= 1 && ok.length <= 4, `admitted: ${ok.length}`);
  for (const r of ok) assert.deepEqual(JSON.parse(r.text), [[40000], {}]);
  for (const r of refused) {
    const e = JSON.parse(r.text);
    h.assertErrorBody(assert, e, 'wamp.error.unavailable', r.text);
    assert.match(e.args[0], /^Lua memory for large requests in use \(\d+ of 16 MiB by calls in flight\): retry later$/);
  }
  assert.ok(maxHeap < LUA_MB * 1024 * 1024, `largest heap seen: ${maxHeap}`);
  assert.ok(await metric('microservice_lua_memory_refusals_total{what="large_args"}') >= 20);
  assert.equal(await metric('microservice_lua_memory_refusals_total{what="call"}'), 0);
  // the share is given back when the calls end: a big body is taken again
  assert.equal(await metric('microservice_lua_memory_large_args_bytes'), 0);
  const again = await h.post(rt, 'memory_test.hold_args', body(40000, 0));
  assert.equal(again.status, 200, again.text);
  await smallCalls();
});

h.test('a reply that decodes past --max-call-memory fails the ms.call with a runtime error', async () => {
  const small = await h.post(rt, 'memory_test.call_big', [[1000]]);
  assert.equal(small.status, 200, small.text);
  assert.deepEqual(small.json, [[1000], {}]);
  const big = await h.post(rt, 'memory_test.call_big', [[150000]]); // 600 KB, about 14 MB decoded
  assert.equal(big.status, 500, big.text);
  h.assertErrorBody(assert, big.json, 'wamp.error.runtime_error', big.text);
  assert.match(big.json.args[0], /^reply too large once decoded: over 8388608 bytes of Lua memory/);
  await smallCalls();
});

h.test('a WAMP CALL whose arguments decode past --max-call-memory gets ERROR invalid_argument; the session goes on', async () => {
  // A message holds at most 100,000 values (docs/wamp.md), which bounds a CALL's arguments to a
  // few MB of Lua memory by itself: a runtime with a per-call bound of 1 MB shows this one. It
  // has a bus of its own, so that the other runtime's memory_test never answers for it.
  const ownNats = await h.startNats({ dir });
  const small = await h.startRuntime({
    dir, natsUrl: ownNats.url, name: 'callmem',
    servicesDir: h.servicesDir(path.join(dir, 'services-callmem'), ['memory_test.lua']),
    args: ['--max-lua-memory', String(LUA_MB), '--max-call-memory', '1'],
  });
  const w = await RawWamp.session(wsUrl(small), 'json');
  const list = JSON.parse(`[${'[0],'.repeat(40000 - 1)}[0]]`); // 80,000 values, about 4 MB
  const err = await w.request([MSG.CALL, w.req(), {}, 'memory_test.hold_args', [list, 0]], MSG.RESULT, 20000);
  assert.equal(err[0], MSG.ERROR, JSON.stringify(err).slice(0, 300));
  assert.equal(err[4], 'wamp.error.invalid_argument');
  assert.match(err[5][0], /^request too large once decoded/);
  const ok = await w.request([MSG.CALL, w.req(), {}, 'memory_test.hold_args', [[[0], [0]], 0]], MSG.RESULT);
  assert.equal(ok[0], MSG.RESULT, JSON.stringify(ok));
  assert.deepEqual(ok[3], [2]);
});
