// Gateway and process limits: the HTTP path -> subject mapping (strict, no system subjects),
// --max-conn-inflight (calls in flight on one HTTP/2 connection) and --max-lua-memory.
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import http2 from 'node:http2';
import * as h from './lib/harness.mjs';

const CONN_LIMIT = 5;
const LUA_MB = 16;
let dir, nats, rt;

before(async () => {
  dir = h.workDir('limits');
  nats = await h.startNats({ dir });
  rt = await h.startRuntime({
    dir, natsUrl: nats.url,
    servicesDir: h.servicesDir(path.join(dir, 'services'), ['greeting.lua', 'testsvc.lua', 'memory_test.lua']),
    args: ['--max-conn-inflight', String(CONN_LIMIT), '--max-lua-memory', String(LUA_MB)],
  });
});

after(async () => { await h.stopAll(); });

const hello = async () => {
  const r = await h.post(rt, 'greeting_service.hello', [['Bob'], { last_name: 'Ross' }]);
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.json, [['Hello, Bob Ross'], {}]);
};

h.test('system subjects are not reachable over HTTP: 404', async () => {
  for (const p of ['/$SRV.PING', '/%24SRV.PING', '/$SRV.INFO.greeting_service', '/$JS.API.INFO', '/_INBOX.abc.def']) {
    const r = await h.post(rt, p, '[]');
    assert.equal(r.status, 404, `${p}: ${r.text}`);
    h.assertErrorBody(assert, r.json, 'wamp.error.no_such_procedure', r.text);
    assert.match(r.json.args[0], /not reachable over HTTP/);
  }
  // the service API itself still answers on NATS
  const nc = await h.natsClient(nats.url);
  try {
    const m = await nc.request('$SRV.PING.greeting_service', h.sc.encode(''), { timeout: 5000 });
    assert.equal(JSON.parse(h.sc.decode(m.data)).name, 'greeting_service');
  } finally { await nc.close(); }
});

h.test('paths that are no subject of literal tokens: 400; the others unchanged', async () => {
  for (const p of ['/a..b', '/a.*', '/a.%3E', '/a%20b.c', '/a.b%09', '/' + 'a.'.repeat(127) + 'bb']) {
    const r = await h.post(rt, p, '[]');
    assert.equal(r.status, 400, `${p}: ${r.text}`);
    h.assertErrorBody(assert, r.json, 'wamp.error.invalid_argument', r.text);
  }
  const q = await h.post(rt, '/test_service.echo_all?timeout=5', [[1], {}]);
  assert.equal(q.status, 200, q.text);
  assert.deepEqual(q.json, [[1], {}]);
  const get = await h.post(rt, '/$SRV.PING', undefined, { method: 'GET' });
  assert.equal(get.status, 405); // the method is checked first, as for any RPC path
  const slash = await h.post(rt, '/greeting_service.hello/', '[]');
  assert.equal(slash.status, 404); // not an RPC path: left to the static files
});

// One HTTP/2 session; resolves each stream to {status, json}.
function h2session() {
  const session = http2.connect(rt.base);
  session.on('error', () => {});
  const call = (rpc, body) => new Promise((resolve, reject) => {
    const req = session.request({ ':method': 'POST', ':path': '/' + rpc, 'content-type': 'application/json' });
    let status; let data = '';
    req.on('response', (hdrs) => { status = hdrs[':status']; });
    req.setEncoding('utf8');
    req.on('data', (c) => { data += c; });
    req.on('end', () => resolve({ status, json: JSON.parse(data), at: Date.now() }));
    req.on('error', reject);
    req.end(body);
  });
  return { session, call };
}

h.test(`--max-conn-inflight ${CONN_LIMIT}: one HTTP/2 connection gets ${CONN_LIMIT} calls in flight, the rest 429`, async () => {
  const a = h2session();
  const b = h2session();
  try {
    const extra = 10;
    const calls = Array.from({ length: CONN_LIMIT + extra }, (_, i) => a.call('test_service.sleep', `[[3, ${i}]]`));
    // the refused ones are answered at once, while the others sleep
    const refused = [];
    await h.waitFor(async () => {
      const settled = await Promise.all(calls.map((p) => Promise.race([p, h.sleep(10).then(() => null)])));
      refused.length = 0;
      refused.push(...settled.filter((r) => r && r.status === 429));
      return refused.length === extra;
    }, { timeout: 15000, what: `${extra} answers 429` });
    for (const r of refused) {
      h.assertErrorBody(assert, r.json, 'wamp.error.limit_exceeded', JSON.stringify(r.json));
      assert.match(r.json.args[0], new RegExp(`limit ${CONN_LIMIT}\\b`));
    }
    // another connection is not counted with the first one
    const other = await b.call('test_service.echo_all', '[[1, "b"]]');
    assert.equal(other.status, 200);
    assert.deepEqual(other.json, [[1, 'b'], {}]);
    const all = await Promise.all(calls);
    assert.equal(all.filter((r) => r.status === 200).length, CONN_LIMIT);
    assert.equal(all.filter((r) => r.status === 429).length, extra);
    for (const r of all.filter((x) => x.status === 200)) assert.deepEqual(r.json[1], { slept: 3 });
    // once they are answered, the connection has its whole allowance again
    const again = await Promise.all(Array.from({ length: CONN_LIMIT }, (_, i) => a.call('test_service.echo_all', `[[${i}]]`)));
    assert.deepEqual(again.map((r) => r.status), Array(CONN_LIMIT).fill(200));
  } finally {
    a.session.close();
    b.session.close();
  }
  const m = await h.post(rt, '/metrics', undefined, { method: 'GET' });
  assert.match(m.text, /microservice_http_responses_total\{status="429"\} 10\n/);
});

const metric = async (name) => {
  const m = await h.post(rt, '/metrics', undefined, { method: 'GET' });
  const line = m.text.split('\n').find((l) => l.startsWith(name + ' '));
  assert.ok(line, `${name} in /metrics`);
  return Number(line.split(' ')[1]);
};

h.test(`--max-lua-memory ${LUA_MB}: a greedy call fails with "out of memory", the process goes on`, async () => {
  await hello();
  assert.equal(await metric('microservice_lua_memory_limit_bytes'), LUA_MB * 1024 * 1024);
  const r = await h.post(rt, 'memory_test.greedy', [[4 * LUA_MB]]); // over twice the limit
  assert.equal(r.status, 500, r.text);
  h.assertErrorBody(assert, r.json, 'wamp.error.runtime_error', r.text);
  assert.match(r.json.args[0], new RegExp(`out of memory: the Lua heap reached ${2 * LUA_MB} MiB`));
  assert.ok(h.alive(rt.proc));
  await hello();
  const small = await h.post(rt, 'memory_test.greedy', [[5]]);
  assert.equal(small.status, 200, small.text);
  assert.deepEqual(small.json, [[5000], {}]);
  const used = await metric('microservice_lua_memory_bytes');
  assert.ok(used > 0 && used < LUA_MB * 1024 * 1024, `heap after the failure: ${used}`);
  assert.ok(await metric('microservice_lua_memory_refusals_total{what="allocation"}') >= 1);
});

h.test(`--max-lua-memory ${LUA_MB}: over the limit after a full collection, calls are refused 503 until memory is freed`, async () => {
  const held = await h.post(rt, 'memory_test.hold', [[1.5 * LUA_MB, 2]]); // over the limit (under twice) for 2 s
  assert.equal(held.status, 200, held.text);
  const r = await h.post(rt, 'greeting_service.hello', [['Bob'], {}]);
  assert.equal(r.status, 503, r.text);
  h.assertErrorBody(assert, r.json, 'wamp.error.unavailable', r.text);
  assert.equal(r.json.args[0], `Lua memory limit reached (${LUA_MB} MiB)`);
  assert.ok(await metric('microservice_lua_memory_refusals_total{what="call"}') >= 1);
  // the spawned task lets the memory go: calls are taken again
  await h.waitFor(async () => (await h.post(rt, 'greeting_service.hello', [['Bob'], {}])).status === 200,
    { timeout: 20000, what: 'calls taken again once the memory is released' });
  await hello();
  assert.ok(h.alive(rt.proc));
});
