// Process-wide limits on held calls: --max-http-inflight (HTTP calls in flight, 503 beyond) and
// --max-call-timeout (the longest timeout a caller may ask for: HTTP ?timeout=, WAMP
// options.timeout, the Microservice-Timeout of a request taken from NATS).
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { headers as natsHeaders } from 'nats';
import * as h from './lib/harness.mjs';
import * as w from './lib/wamp.mjs';

const HTTP_CAP = 5;
let dir, nats, clamped, capped, nc;

before(async () => {
  dir = h.workDir('call_limits');
  nats = await h.startNats({ dir });
  const services = h.servicesDir(path.join(dir, 'services'));
  const none = h.servicesDir(path.join(dir, 'no-services'), []); // only the WAMP callee of the test
  clamped = await h.startRuntime({ dir, natsUrl: nats.url, servicesDir: services, name: 'clamped', logLevel: 'info',
    args: ['--max-call-timeout', '1'] });
  capped = await h.startRuntime({ dir, natsUrl: nats.url, servicesDir: none, name: 'capped', logLevel: 'info',
    args: ['--max-http-inflight', String(HTTP_CAP)] });
  nc = await h.natsClient(nats.url);
});

after(async () => {
  await w.closeAllWamp();
  if (nc) await nc.close();
  await h.stopAll();
});

async function httpInflight(rt) {
  return (await (await fetch(rt.url('/healthz'))).json()).http_inflight;
}

h.test('--max-call-timeout 1: 150 calls with ?timeout=3600 and 64 KiB bodies time out at 1 s, not 3600', async () => {
  const body = JSON.stringify([['x'.repeat(64 * 1024)]]);
  const t0 = Date.now();
  const rs = await Promise.all(Array.from({ length: 150 }, () =>
    h.post(clamped, 'greeting_service.hello_sleep?timeout=3600', body, { timeout: 9000 })));
  for (const r of rs) {
    assert.equal(r.status, 504, r.text);
    h.assertErrorBody(assert, r.json, 'wamp.error.timeout', r.text);
  }
  assert.equal(await httpInflight(clamped), 0);
  process.stderr.write(`150 clamped calls answered 504 in ${Date.now() - t0} ms\n`);
});

h.test('--max-call-timeout 1: a NATS request asking for an hour (Microservice-Timeout) is abandoned at 1 s', async () => {
  const hd = natsHeaders();
  hd.set('Microservice-Timeout', '3600000');
  // greeting_service.hello_sleep sleeps 10 s: without the maximum it would answer after 10 s
  const m = await nc.request('greeting_service.hello_sleep', h.sc.encode('[["Bob"]]'), { timeout: 8000, headers: hd, noMux: true });
  assert.equal(m.headers && m.headers.get('Nats-Service-Error-Code'), '504', h.sc.decode(m.data));
  assert.equal(JSON.parse(h.sc.decode(m.data)).error, 'wamp.error.timeout');
});

h.test('--max-call-timeout 1: a WAMP CALL with options.timeout of an hour times out at 1 s', async () => {
  const { session } = await w.openSession(w.wsUrl(clamped), 'json');
  const err = await w.expectWampError(assert,
    w.withTimeout(session.call('greeting_service.hello_sleep', ['Bob'], {}, { timeout: 3600000 }), 8000, 'the CALL'),
    'wamp.error.timeout', 'CALL with options.timeout 3600000');
  assert.ok(err.args.length >= 1);
});

h.test(`--max-http-inflight ${HTTP_CAP}: call ${HTTP_CAP + 1} gets 503 while the ${HTTP_CAP} held ones still complete`, async () => {
  // A WAMP callee that holds its invocations until the test releases them.
  const { session } = await w.openSession(w.wsUrl(capped), 'json');
  const held = [];
  await session.register('call_limits.hold', (args) => {
    if (args[0] === 'probe') return 'probe'; // one value: the reply's args are [value]
    return new Promise((resolve) => held.push(() => resolve(args[0])));
  });
  await w.untilCallable(async () => {
    const r = await h.post(capped, 'call_limits.hold', [['probe']]);
    if (r.status === 404) throw { error: 'wamp.error.no_such_procedure' };
    assert.equal(r.status, 200, r.text);
  });
  const calls = Array.from({ length: HTTP_CAP }, (_, i) => h.post(capped, 'call_limits.hold', [[`call ${i}`]]));
  await h.waitFor(() => held.length === HTTP_CAP, { what: `${HTTP_CAP} calls held by the callee` });
  assert.equal(await httpInflight(capped), HTTP_CAP);
  const over = await h.post(capped, 'call_limits.hold', [['one too many']]);
  assert.equal(over.status, 503, over.text);
  h.assertErrorBody(assert, over.json, 'wamp.error.unavailable', over.text);
  assert.match(over.json.args[0], /--max-http-inflight/);
  for (const release of held) release();
  const rs = await Promise.all(calls);
  rs.forEach((r, i) => {
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.json, [[`call ${i}`], {}]);
  });
  const after = await h.post(capped, 'call_limits.hold', [['probe']]);
  assert.equal(after.status, 200, after.text);
  const metrics = await (await fetch(capped.url('/metrics'))).text();
  assert.match(metrics, /^microservice_http_calls_in_flight 0$/m);
});

h.test('--call-timeout over --max-call-timeout is refused at start', async () => {
  const r = await new Promise((resolve) => {
    import('node:child_process').then(({ execFile }) => execFile(h.BIN,
      ['--http', 'off', '--nats', nats.url, '--call-timeout', '10', '--max-call-timeout', '5', dir],
      { timeout: 10000 }, (err, stdout, stderr) => resolve({ code: err ? err.code : 0, stderr })));
  });
  assert.equal(r.code, 2);
  assert.match(r.stderr, /--call-timeout 10 is over --max-call-timeout 5/);
});
