// Local dispatch (issue 13, docs/local-dispatch.md): a call of an RPC that a Lua service of the same
// process serves runs in-process: no NATS message (a `>` subscription on the test's nats-server
// sees none), it answers while nats-server is down, /healthz says which part is down, a call with
// local = false goes over the bus, arguments are copies, and a caller that goes away cancels the
// callee (its outbound HTTP transfer is aborted: the test's HTTP server sees the connection close).
// Run both ways (tests/CMakeLists.txt): with MICROSERVICE_TEST_PREFER_LOCAL=off every call goes over
// the bus and the expectations say so.
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import path from 'node:path';
import * as h from './lib/harness.mjs';
import * as w from './lib/wamp.mjs';

const LOCAL = h.preferLocal;
let dir, nats, rt, nc, api;
const hangs = { requests: 0, closed: 0 };
const onBus = []; // subjects seen on the bus by a `>` subscription

before(async () => {
  dir = h.workDir('local_dispatch');
  nats = await h.startNats({ dir });
  const sdir = path.join(dir, 'services');
  fs.mkdirSync(sdir);
  fs.symlinkSync(path.join(h.SOURCE_DIR, 'tests', 'blackbox', 'services_local', 'local_test.lua'),
    path.join(sdir, 'local_test.lua'));
  api = http.createServer((req, res) => { // /hang: never answered; counts connections closed under it
    hangs.requests++;
    req.socket.once('close', () => { hangs.closed++; });
  });
  await new Promise((resolve) => api.listen(0, '127.0.0.1', resolve));
  rt = await h.startRuntime({ dir, natsUrl: nats.url, servicesDir: sdir });
  nc = await h.natsClient(nats.url);
  nc.subscribe('>', { callback: (_, m) => onBus.push(m.subject) });
  await nc.flush();
});

after(async () => {
  if (nc) await nc.close().catch(() => {});
  api?.closeAllConnections();
  api?.close();
  await w.closeAllWamp();
  await h.stopAll();
});

// What reached the bus on subject since mark: waits for the marker that the runtime publishes on
// its own connection after the calls (the server keeps one connection's messages in order).
async function seenOnBus(subject, from) {
  const r = await h.post(rt, 'local_test.mark', [[], {}]);
  assert.equal(r.status, 200, r.text);
  await h.waitFor(() => onBus.slice(from).includes('local_test.marker'), { what: 'the marker on the bus' });
  return onBus.slice(from).filter((s) => s === subject).length;
}

h.test('an HTTP call and a Lua microservice.call of a local RPC send no NATS message', async () => {
  const from = onBus.length;
  const r = await h.post(rt, 'local_test.hello', [['Bob'], {}]);
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.json, [['Hello, Bob'], {}]);
  const nested = await h.post(rt, 'local_test.call_hello', [['Ann'], {}]);
  assert.equal(nested.status, 200, nested.text);
  assert.deepEqual(nested.json, [['Hello, Ann'], {}]);
  assert.equal(await seenOnBus('local_test.hello', from), LOCAL ? 0 : 2);
  assert.equal(await seenOnBus('local_test.call_hello', from), LOCAL ? 0 : 1);
});

h.test('microservice.call with {["local"] = false} (or prefer_local = false) goes over the bus', async () => {
  const from = onBus.length;
  for (const opts of [{ local: false }, { prefer_local: false }]) {
    const r = await h.post(rt, 'local_test.call_hello', [['Cy', opts], {}]);
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.json, [['Hello, Cy'], {}]);
  }
  assert.equal(await seenOnBus('local_test.hello', from), 2);
});

h.test('arguments are copied: a callee cannot alter the caller\'s tables', async () => {
  const r = await h.post(rt, 'local_test.copy_check', [[], {}]);
  assert.equal(r.status, 200, r.text);
  const [[{ mine, theirs }]] = r.json;
  assert.deepEqual(mine, { list: ['original'] });
  assert.deepEqual(theirs, { list: ['changed'], changed: true });
});

h.test('/metrics and $SRV.STATS count local calls as requests', async () => {
  const metric = async () => {
    const text = await (await fetch(rt.url('/metrics'))).text();
    const m = /^microservice_rpc_calls_total\{[^}]*procedure="local_test\.hello"[^}]*\} (\d+)$/m.exec(text);
    return m ? Number(m[1]) : 0;
  };
  const before = await metric();
  for (let i = 0; i < 3; i++) assert.equal((await h.post(rt, 'local_test.hello', [['x'], {}])).status, 200);
  assert.equal(await metric(), before + 3);
  const stats = JSON.parse(h.sc.decode((await nc.request('$SRV.STATS.local_test', '', { timeout: 5000 })).data));
  const ep = stats.endpoints.find((e) => e.subject === 'local_test.hello' || e.name === 'hello');
  assert.ok(ep && ep.num_requests >= before + 3, JSON.stringify(stats));
});

h.test('a caller that goes away cancels the callee: its outbound HTTP transfer is aborted', async () => {
  const url = `http://127.0.0.1:${api.address().port}/hang`;
  const requests = hangs.requests, closed = hangs.closed;
  // HTTP/2: a reset stream is a caller gone (h2o sees no end of an HTTP/1.1 client that waits)
  const session = http2.connect(rt.base);
  session.on('error', () => {});
  const req = session.request({ ':method': 'POST', ':path': '/local_test.hang?timeout=60' });
  req.on('error', () => {});
  req.end(JSON.stringify([[url], {}]));
  await h.waitFor(() => hangs.requests > requests, { what: 'the outbound request to reach the server' });
  req.close(http2.constants.NGHTTP2_CANCEL); // long before the 60-s timeout
  // in-process: the callee is abandoned at once; over the bus the serving process is told by a
  // cancel message (docs/local-dispatch.md)
  await h.waitFor(() => hangs.closed > closed, { timeout: 10000, what: 'the server to see the transfer aborted' });
  assert.match(rt.log(), /\[local_test\.hang\] abandoned: its caller went away/);
  session.close();
});

h.test('a WAMP CANCEL cancels the callee too: its outbound HTTP transfer is aborted', async () => {
  const url = `http://127.0.0.1:${api.address().port}/hang`;
  const requests = hangs.requests, closed = hangs.closed;
  const raw = await w.RawWamp.session(w.wsUrl(rt), 'json');
  raw.send([w.MSG.CALL, 1, {}, 'local_test.hang', [url], {}]);
  await h.waitFor(() => hangs.requests > requests, { what: 'the outbound request to reach the server' });
  raw.send([w.MSG.CANCEL, 1, {}]);
  const err = await raw.next((m) => m[0] === w.MSG.ERROR && m[2] === 1, 3000, 'ERROR canceled');
  assert.equal(err[4], 'wamp.error.canceled');
  await h.waitFor(() => hangs.closed > closed, { timeout: 10000, what: 'the server to see the transfer aborted' });
});

// Last: it stops the bus.
h.test('while nats-server is down, local calls answer and /healthz says the bus is down', async () => {
  await nc.close();
  nc = null;
  await nats.stop('SIGTERM');
  const health = await h.waitFor(async () => {
    const r = await fetch(rt.url('/healthz'));
    const j = await r.json();
    return j.nats !== 'connected' ? { status: r.status, j } : false;
  }, { timeout: 15000, what: '/healthz to see the bus down' });
  assert.equal(health.status, LOCAL ? 200 : 503, JSON.stringify(health.j));
  assert.equal(health.j.status, LOCAL ? 'degraded' : 'unavailable');
  assert.equal(health.j.local_dispatch, LOCAL);
  assert.equal(health.j.rpcs, 7);
  const r = await h.post(rt, 'local_test.call_hello', [['Dee'], {}]);
  if (LOCAL) {
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.json, [['Hello, Dee'], {}]);
  } else {
    assert.equal(r.status, 503, r.text);
  }
  const remote = await h.post(rt, 'elsewhere.hello', [['Dee'], {}]);
  assert.equal(remote.status, 503, remote.text);
  // and a Lua call forced onto the bus fails as unavailable
  const forced = await h.post(rt, 'local_test.call_hello', [['Dee', { local: false }], {}]);
  assert.equal(forced.status, 503, forced.text);
});
