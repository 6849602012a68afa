// Limits of the WAMP router (issue 7, item 4 in part): sessions per process, subscriptions and
// registrations per session, each refused with a clear error while everything else keeps working.
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import * as h from './lib/harness.mjs';
import { RawWamp, MSG, wsUrl, closeAllWamp } from './lib/wamp.mjs';

let dir, nats, rt;

before(async () => {
  dir = h.workDir('wamp_limits');
  nats = await h.startNats({ dir });
  rt = await h.startRuntime({
    dir, natsUrl: nats.url, servicesDir: h.servicesDir(path.join(dir, 'services')),
    args: ['--max-sessions', '2', '--max-subscriptions', '2', '--max-registrations', '1', '--join-timeout', '1'],
  });
});

after(async () => {
  await closeAllWamp();
  await h.stopAll();
});

async function request(raw, msg, replyType) {
  raw.send(msg);
  return raw.next((m) => (m[0] === replyType || m[0] === MSG.ERROR) && m[m[0] === MSG.ERROR ? 2 : 1] === msg[1],
    5000, `the answer to ${JSON.stringify(msg)}`);
}

h.test('subscriptions and registrations per session, and sessions per process', async () => {
  const a = await RawWamp.session(wsUrl(rt), 'json');
  let r = await request(a, [MSG.SUBSCRIBE, a.req(), {}, 'limits.one'], MSG.SUBSCRIBED);
  assert.equal(r[0], MSG.SUBSCRIBED);
  r = await request(a, [MSG.SUBSCRIBE, a.req(), {}, 'limits.two'], MSG.SUBSCRIBED);
  assert.equal(r[0], MSG.SUBSCRIBED);
  r = await request(a, [MSG.SUBSCRIBE, a.req(), {}, 'limits.one'], MSG.SUBSCRIBED);
  assert.equal(r[0], MSG.SUBSCRIBED, 'subscribing again to a topic it has is not a new subscription');
  r = await request(a, [MSG.SUBSCRIBE, a.req(), {}, 'limits.three'], MSG.SUBSCRIBED);
  assert.deepEqual([r[0], r[4]], [MSG.ERROR, 'wamp.error.limit_exceeded'], JSON.stringify(r));
  assert.match(r[5][0], /too many subscriptions/);

  r = await request(a, [MSG.REGISTER, a.req(), {}, 'limits.proc1'], MSG.REGISTERED);
  assert.equal(r[0], MSG.REGISTERED);
  r = await request(a, [MSG.REGISTER, a.req(), {}, 'limits.proc2'], MSG.REGISTERED);
  assert.deepEqual([r[0], r[4]], [MSG.ERROR, 'wamp.error.limit_exceeded'], JSON.stringify(r));

  const b = await RawWamp.session(wsUrl(rt), 'json');
  const refused = await RawWamp.connect(wsUrl(rt), 'json').then(() => null, (e) => e);
  assert.ok(refused, 'a third session is refused');
  assert.equal(refused.statusCode, 503);
  assert.equal(JSON.parse(refused.body).error, 'wamp.error.unavailable');
  assert.match(JSON.parse(refused.body).args[0], /too many WAMP sessions/);

  // the sessions that are in keep working
  r = await request(b, [MSG.CALL, b.req(), {}, 'greeting_service.hello', ['Bob'], { last_name: 'Ross' }], MSG.RESULT);
  assert.deepEqual(r[3], ['Hello, Bob Ross']);
  const health = await fetch(rt.url('/healthz'));
  assert.equal(health.status, 200);

  // a session that leaves frees its place
  b.terminate();
  await b.closed;
  await h.waitFor(async () => {
    const c = await RawWamp.connect(wsUrl(rt), 'json').then((x) => x, () => null);
    if (c) c.terminate();
    return c !== null;
  }, { what: 'a place for a new session once one left' });
});

h.test('a WebSocket that does not HELLO within --join-timeout is aborted and frees its slot', async () => {
  await closeAllWamp(); // the sessions of the test above (--max-sessions 2)
  await h.waitFor(async () => /^microservice_wamp_sessions 0$/m.test(await (await fetch(rt.url('/metrics'))).text()),
    { timeout: 5000, what: 'no WAMP session left' });
  const idle = await RawWamp.connect(wsUrl(rt), 'json');
  const joined = await RawWamp.session(wsUrl(rt), 'json');
  const abort = await idle.next(null, 5000, 'ABORT after the join timeout');
  assert.deepEqual([abort[0], abort[2]], [MSG.ABORT, 'wamp.error.timeout'], JSON.stringify(abort));
  assert.match(abort[1].message, /no HELLO within 1 s/);
  await h.waitFor(() => idle.closeInfo !== null, { timeout: 5000, what: 'the idle socket closed' });
  // the session that said HELLO in time is not touched, however long it stays quiet
  await h.sleep(1500);
  const r = await request(joined, [MSG.CALL, joined.req(), {}, 'greeting_service.hello', ['Bob']], MSG.RESULT);
  assert.equal(r[0], MSG.RESULT, JSON.stringify(r));
  assert.equal(joined.closeInfo, null);
});
