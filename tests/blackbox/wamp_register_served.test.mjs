// Issue 12, item 3: a WAMP REGISTER of a procedure some process already serves (a Lua service, or
// a WAMP registration, in this process or another on the same nats-server) is refused with
// wamp.error.procedure_already_exists, unless both sides share it (the Lua service says
// `shared = true`, the REGISTER asks invoke roundrobin or random). HTTP calls of a Lua RPC then
// all go to the Lua service. The probe subjects ($MS.PROC.<procedure>) are not reachable over WAMP.
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import * as h from './lib/harness.mjs';
import * as w from './lib/wamp.mjs';

const { MSG, RawWamp } = w;
const EXISTS = 'wamp.error.procedure_already_exists';

let dir, nats, A, B;

const SHARED_LUA = `local ms = require "microservice"
-- test-only: a service whose RPCs WAMP callees may share (shared = true)
return { name = "shared_svc", shared = true,
  who = ms.rpc(function() return { "lua" }, {} end) }
`;

before(async () => {
  dir = h.workDir('wamp_register_served');
  nats = await h.startNats({ dir });
  const sdirA = h.servicesDir(path.join(dir, 'servicesA'), ['greeting.lua']);
  fs.writeFileSync(path.join(sdirA, 'shared_svc.lua'), SHARED_LUA);
  const sdirB = path.join(dir, 'servicesB'); // B serves no Lua service: gateway and router only
  fs.mkdirSync(sdirB);
  [A, B] = await Promise.all([
    h.startRuntime({ dir, natsUrl: nats.url, servicesDir: sdirA, name: 'runtimeA' }),
    h.startRuntime({ dir, natsUrl: nats.url, servicesDir: sdirB, name: 'runtimeB' }),
  ]);
});

after(async () => {
  await w.closeAllWamp();
  await h.stopAll();
});

const test = (name, fn) => h.test(name, { timeout: 30000 }, fn);

// Answers every INVOCATION the raw session gets with [who].
function answer(raw, who) {
  raw.ws.on('message', () => {
    for (let m; (m = raw.messages.find((x) => x[0] === MSG.INVOCATION));) {
      raw.messages.splice(raw.messages.indexOf(m), 1);
      raw.send([MSG.YIELD, m[1], {}, [who]]);
    }
  });
}

async function register(raw, procedure, options = {}) {
  return raw.request([MSG.REGISTER, raw.req(), options, procedure], MSG.REGISTERED);
}

test('REGISTER of a Lua RPC is refused in its process and in another; HTTP calls all reach Lua', async () => {
  for (const rt of [A, B]) {
    for (const ser of w.SERIALIZERS) {
      const raw = await RawWamp.session(w.wsUrl(rt), ser);
      for (const options of [{}, { invoke: 'roundrobin' }, { invoke: 'random' }]) {
        const r = await register(raw, 'greeting_service.hello', options);
        assert.deepEqual([r[0], r[4]], [MSG.ERROR, EXISTS], `${rt === A ? 'A' : 'B'} ${ser} ${JSON.stringify(options)}: ${JSON.stringify(r)}`);
        assert.match(r[5][0], /already served on the bus/);
      }
      // the session is not disturbed: it still registers a free procedure
      const ok = await register(raw, `served.free_${ser}_${rt.port}`);
      assert.equal(ok[0], MSG.REGISTERED, JSON.stringify(ok));
      raw.terminate();
    }
  }
  // a session that tried, and then stays connected with its INVOCATION handler: it never gets one
  const spy = await RawWamp.session(w.wsUrl(B), 'json');
  await register(spy, 'greeting_service.hello', { invoke: 'roundrobin' });
  const replies = await Promise.all(Array.from({ length: 20 }, (_, i) =>
    h.post(A, 'greeting_service.hello', [[`n${i}`], { last_name: 'X' }])));
  for (const [i, r] of replies.entries()) {
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.json, [[`Hello, n${i} X`], {}]);
  }
  assert.equal(spy.counts[MSG.INVOCATION] || 0, 0, 'no call reached the WAMP session');
  spy.terminate();
});

test('a WAMP registration is exclusive across processes unless both share it', async () => {
  const a = await RawWamp.session(w.wsUrl(A), 'json');
  const b = await RawWamp.session(w.wsUrl(B), 'msgpack');
  let r = await register(a, 'served.single');
  assert.equal(r[0], MSG.REGISTERED);
  for (const options of [{}, { invoke: 'roundrobin' }]) {
    r = await register(b, 'served.single', options);
    assert.deepEqual([r[0], r[4]], [MSG.ERROR, EXISTS], JSON.stringify(r));
  }
  // once the callee on A leaves, B may register it
  a.terminate();
  await h.waitFor(async () => {
    const x = await register(b, 'served.single');
    return x[0] === MSG.REGISTERED;
  }, { what: 'B registers served.single once A left' });
  // shared on both sides: accepted, and calls reach both processes' callees
  const a2 = await RawWamp.session(w.wsUrl(A), 'json');
  r = await register(a2, 'served.rr', { invoke: 'roundrobin' });
  assert.equal(r[0], MSG.REGISTERED);
  r = await register(b, 'served.rr', { invoke: 'random' });
  assert.equal(r[0], MSG.REGISTERED, JSON.stringify(r));
  answer(a2, 'A');
  answer(b, 'B');
  const seen = new Set();
  for (let i = 0; i < 60 && seen.size < 2; i++) {
    const x = await h.post(B, 'served.rr', [[]]);
    assert.equal(x.status, 200, x.text);
    seen.add(x.json[0][0]);
  }
  assert.deepEqual([...seen].sort(), ['A', 'B']);
  a2.terminate();
  b.terminate();
});

test('a Lua service with shared = true admits shared WAMP registrations only', async () => {
  const s = await RawWamp.session(w.wsUrl(B), 'json');
  let r = await register(s, 'shared_svc.who');
  assert.deepEqual([r[0], r[4]], [MSG.ERROR, EXISTS], JSON.stringify(r));
  assert.match(r[5][0], /invoke roundrobin or random/);
  r = await register(s, 'shared_svc.who', { invoke: 'roundrobin' });
  assert.equal(r[0], MSG.REGISTERED, JSON.stringify(r));
  answer(s, 'wamp');
  const seen = new Set();
  for (let i = 0; i < 60 && seen.size < 2; i++) {
    const x = await h.post(A, 'shared_svc.who', [[]]);
    assert.equal(x.status, 200, x.text);
    seen.add(x.json[0][0]);
  }
  assert.deepEqual([...seen].sort(), ['lua', 'wamp']);
  s.terminate();
});

test('the probe subjects and other system subjects are not reachable over WAMP', async () => {
  const s = await RawWamp.session(w.wsUrl(A), 'json');
  for (const uri of ['$MS.PROC.greeting_service.hello', '$SRV.PING', '_INBOX.abc.def']) {
    let r = await s.request([MSG.CALL, s.req(), {}, uri, []], MSG.RESULT);
    assert.deepEqual([r[0], r[4]], [MSG.ERROR, 'wamp.error.invalid_uri'], `CALL ${uri}: ${JSON.stringify(r)}`);
    r = await register(s, uri);
    assert.deepEqual([r[0], r[4]], [MSG.ERROR, 'wamp.error.invalid_uri'], `REGISTER ${uri}: ${JSON.stringify(r)}`);
    r = await s.request([MSG.SUBSCRIBE, s.req(), {}, uri], MSG.SUBSCRIBED);
    assert.deepEqual([r[0], r[4]], [MSG.ERROR, 'wamp.error.invalid_uri'], `SUBSCRIBE ${uri}: ${JSON.stringify(r)}`);
  }
  s.terminate();
});
