// Every error status of the contract, with the error body shape checked each time.
import { before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import * as h from './lib/harness.mjs';

let dir, nats, rt;

before(async () => {
  dir = h.workDir('errors');
  nats = await h.startNats({ dir });
  rt = await h.startRuntime({ dir, natsUrl: nats.url, servicesDir: h.servicesDir(path.join(dir, 'services')) });
});

after(async () => { await h.stopAll(); });

function expectError(r, status, uri) {
  assert.equal(r.status, status, `status for body ${r.text}`);
  assert.match(r.headers.get('content-type') || '', /^application\/json/, 'error content-type');
  h.assertErrorBody(assert, r.json, uri, r.text);
  assert.ok(!/stack traceback/i.test(r.text), `no traceback in the body: ${r.text}`);
}

describe('400 wamp.error.invalid_argument', () => {
  const bad = [
    ['invalid JSON', '[["Bob"], {'],
    ['not JSON at all', 'hello'],
    ['a number', '1'],
    ['a string', '"x"'],
    ['an object', '{"args": []}'],
    ['[1, 2]', '[1, 2]'],
    ['[[], []]', '[[], []]'],
    ['[{}, {}]', '[{}, {}]'],
    ['[[], {}, 3]', '[[], {}, 3]'],
    ['trailing garbage', '[[], {}] x'],
  ];
  for (const [what, body] of bad) {
    h.test(`${what}: ${body}`, async () => {
      const r = await h.post(rt, 'test_service.echo', body);
      expectError(r, 400, 'wamp.error.invalid_argument');
    });
  }

  h.test('nesting deeper than 64 is refused; moderate nesting passes', async () => {
    // total document depth 80: [ [ [ ... ] ] ]
    const deep = '['.repeat(80) + ']'.repeat(80);
    const r = await h.post(rt, 'test_service.echo', deep);
    expectError(r, 400, 'wamp.error.invalid_argument');
    // Control: depth 3 (envelope) + 40 in the value, well below the limit, is echoed back.
    const value = JSON.parse('['.repeat(40) + ']'.repeat(40));
    const ok = await h.post(rt, 'test_service.echo', [[value], {}]);
    assert.equal(ok.status, 200, ok.text);
    assert.deepEqual(ok.json, [[value], {}]);
  });

  h.test('invalid UTF-8 bytes in the body', async () => {
    const body = Buffer.concat([Buffer.from('[["'), Buffer.from([0xff, 0xfe, 0xc3]), Buffer.from('"], {}]')]);
    const r = await h.post(rt, 'test_service.echo', body);
    expectError(r, 400, 'wamp.error.invalid_argument');
    // Control: valid multi-byte UTF-8 round-trips.
    const ok = await h.post(rt, 'test_service.echo', [['héllo wörld ✓ 🎉'], {}]);
    assert.equal(ok.status, 200, ok.text);
    assert.deepEqual(ok.json, [['héllo wörld ✓ 🎉'], {}]);
  });

  h.test('unknown keyword argument', async () => {
    const r = await h.post(rt, 'greeting_service.hello', [['Bob'], { nope: 1 }]);
    expectError(r, 400, 'wamp.error.invalid_argument');
    assert.match(r.json.args[0], /nope/, 'the message names the unknown keyword');
  });

  h.test('too many positional arguments', async () => {
    const r = await h.post(rt, 'greeting_service.hello', [['a', 'b', 'c'], {}]);
    expectError(r, 400, 'wamp.error.invalid_argument');
  });

  h.test('the optional parts: [] , [args] and an empty body are accepted', async () => {
    let r = await h.post(rt, 'test_service.echo_all', '[]');
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.json, [[], {}]);
    assert.match(r.text, /^\s*\[\s*\[\s*\]/, 'empty args encode as [] not {}');
    r = await h.post(rt, 'test_service.echo_all', '[[1, "two"]]');
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.json, [[1, 'two'], {}]);
    r = await h.post(rt, 'test_service.echo_all', '');
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.json, [[], {}]);
  });
});

h.test('404 wamp.error.no_such_procedure for an unknown nosuch.method', async () => {
  const r = await h.post(rt, 'nosuch.method', [[], {}]);
  expectError(r, 404, 'wamp.error.no_such_procedure');
});

h.test('405 with Allow: POST for GET and PUT on an RPC path', async () => {
  for (const method of ['GET', 'PUT']) {
    const r = await h.post(rt, 'greeting_service.hello', method === 'GET' ? undefined : '[["Bob"]]', { method });
    assert.equal(r.status, 405, `${method}: ${r.text}`);
    assert.equal(r.headers.get('allow'), 'POST', `${method}: Allow header`);
  }
  // and with curl, for the record
  const c = await h.curl(rt.url('/greeting_service.hello'), ['-X', 'DELETE']);
  assert.equal(c.status, 405);
  assert.equal(c.headers.allow, 'POST');
});

h.test('413 for a body over 1 MiB; just under passes', async () => {
  const big = path.join(dir, 'big.json');
  const filler = 'x'.repeat(1024 * 1024 + 10);
  fs.writeFileSync(big, `[["${filler}"], {}]`);
  const r = await h.curl(rt.url('/test_service.echo'),
    ['-X', 'POST', '-H', 'content-type: application/json', '--data-binary', `@${big}`]);
  assert.equal(r.status, 413, r.body.slice(0, 200));

  // Control: 900 kB passes through gateway, NATS and the service and comes back.
  const value = 'y'.repeat(900 * 1000);
  const ok = await h.post(rt, 'test_service.echo', [[value], {}]);
  assert.equal(ok.status, 200, ok.text.slice(0, 200));
  assert.equal(ok.json[0][0], value);
});

h.test('500 wamp.error.runtime_error from a Lua error: message, no stack trace', async () => {
  const r = await h.post(rt, 'test_service.fail', [[], {}]);
  expectError(r, 500, 'wamp.error.runtime_error');
  assert.match(r.json.args[0], /deliberate failure from test_service\.fail/);
  assert.ok(!/traceback|\[C\]|in function/.test(r.text), `no traceback text: ${r.text}`);
  // The trace goes to the log instead.
  await h.waitFor(() => /deliberate failure/.test(rt.log()), { timeout: 5000, what: 'the error in the log' });
});

h.test('application error: custom uri, args, kwargs and code 418', async () => {
  const r = await h.post(rt, 'test_service.app_error', '[]');
  assert.equal(r.status, 418, r.text);
  assert.deepEqual(r.json, { error: 'app.error.custom', args: ['custom message'], kwargs: { detail: 1 } });
});

h.test('504 wamp.error.timeout with ?timeout=0.3 against a sleeping RPC', async () => {
  const t0 = Date.now();
  const r = await h.post(rt, 'test_service.sleep?timeout=0.3', [[5, 'late'], {}]);
  const ms = Date.now() - t0;
  expectError(r, 504, 'wamp.error.timeout');
  assert.ok(ms >= 250, `timed out too early: ${ms} ms`);
  assert.ok(ms < 3000, `timeout 0.3 s took ${ms} ms`);
  // The same RPC within its timeout answers.
  const ok = await h.post(rt, 'test_service.sleep?timeout=5', [[0.1, 'soon'], {}]);
  assert.equal(ok.status, 200, ok.text);
  assert.deepEqual(ok.json, [['soon'], { slept: 0.1 }]);
});

h.test('--call-timeout sets the default call timeout (504 without ?timeout)', async () => {
  const rt2 = await h.startRuntime({
    dir, name: 'call-timeout', natsUrl: nats.url, args: ['--call-timeout', '0.5'],
    servicesDir: h.servicesDir(path.join(dir, 'services-call-timeout'), ['greeting.lua']),
  });
  try {
    // test_service.sleep is served by the first runtime (same bus): this one only times out.
    const t0 = Date.now();
    const r = await h.post(rt2, 'test_service.sleep', [[3, 'late'], {}]);
    const ms = Date.now() - t0;
    expectError(r, 504, 'wamp.error.timeout');
    assert.ok(ms >= 400 && ms < 2500, `--call-timeout 0.5 answered after ${ms} ms`);
    // ?timeout still overrides it
    const ok = await h.post(rt2, 'test_service.sleep?timeout=5', [[1, 'in time'], {}]);
    assert.equal(ok.status, 200, ok.text);
    assert.deepEqual(ok.json, [['in time'], { slept: 1 }]);
  } finally {
    await rt2.stop('SIGKILL');
  }
});

// Last: it stops the bus. With --prefer-local on (the default) the RPCs served by the process
// itself still answer, and /healthz stays 200 with status "degraded" (docs/local-dispatch.md);
// a procedure served elsewhere (or every one, with --prefer-local off) gets 503 at once.
h.test('503 wamp.error.unavailable when the bus is down, immediately; healthz says so', async () => {
  await nats.stop('SIGTERM');
  const want = h.preferLocal ? 200 : 503;
  const health = await h.waitFor(async () => {
    const r = await fetch(rt.url('/healthz'), { signal: AbortSignal.timeout(2000) });
    const text = await r.text();
    return r.status === want && JSON.parse(text).nats !== 'connected' ? { status: r.status, text } : false;
  }, { timeout: 15000, what: `GET /healthz to become ${want} with the bus down` });
  const hj = JSON.parse(health.text);
  assert.notEqual(hj.nats, 'connected', health.text); // "disconnected", "reconnecting", ...
  assert.equal(hj.status, h.preferLocal ? 'degraded' : 'unavailable', health.text);

  if (h.preferLocal) {
    const local = await h.post(rt, 'greeting_service.hello', [['Bob'], {}]);
    assert.equal(local.status, 200, local.text);
  }
  const t0 = Date.now();
  const r = await h.post(rt, `${h.preferLocal ? 'elsewhere_service' : 'greeting_service'}.hello?timeout=20`, [['Bob'], {}], { timeout: 25000 });
  const ms = Date.now() - t0;
  expectError(r, 503, 'wamp.error.unavailable');
  assert.ok(ms < 3000, `503 must come at once, not after a timeout (took ${ms} ms)`);
  assert.ok(h.alive(rt.proc), 'the runtime is still running');
});
