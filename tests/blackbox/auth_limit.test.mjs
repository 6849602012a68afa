// The limiter of failed sign-ins (issue 12, item 6): --auth-max-failures failures from one client
// address, or for one authid, within --auth-failure-window make further sign-ins from that address
// or for that authid fail at once (ABORT wamp.error.authentication_failed "too many failed
// sign-ins", HTTP 429), even with the right secret, until the window has passed; other addresses
// and authids go on; /metrics counts it. The clients bind distinct loopback addresses
// (127.0.0.x) to be distinct addresses.
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import * as h from './lib/harness.mjs';
import { openSession, closeSession, wsUrl, closeAllWamp } from './lib/wamp.mjs';

const MAX = 3;
const WINDOW_S = 10; // long enough for each step below on a loaded machine, short enough to wait for
const PASSWORD = { alice: 'alice-password', bob: 'bob-password' };
let dir, nats, rt, token;

function makeSecret(password) {
  return JSON.parse(execFileSync(h.BIN, ['auth-secret', '--iterations', '1000'], { input: password + '\n' }).toString());
}

before(async () => {
  dir = h.workDir('auth_limit');
  const tok = JSON.parse(execFileSync(h.BIN, ['auth-token']).toString());
  token = tok.token;
  const roles = { admin: { call: ['>'] } };
  const users = {
    alice: { role: 'admin', ...makeSecret(PASSWORD.alice), tokens: [tok.stored] },
    bob: { role: 'admin', ...makeSecret(PASSWORD.bob) },
  };
  const file = path.join(dir, 'auth.json');
  fs.writeFileSync(file, JSON.stringify({ bus_secret: 'a-bus-secret-for-the-tests-0123456789', users, roles }));
  nats = await h.startNats({ dir });
  rt = await h.startRuntime({
    dir, natsUrl: nats.url, servicesDir: path.join(h.SOURCE_DIR, 'tests', 'blackbox', 'services_auth'),
    args: ['--auth', file, '--auth-max-failures', String(MAX), '--auth-failure-window', String(WINDOW_S)],
  });
});

after(async () => {
  await closeAllWamp();
  await h.stopAll();
});

// A ticket sign-in from a local address: the WELCOME details, or the error of the refusal.
async function signIn(from, authid, password) {
  const agent = new http.Agent({ localAddress: from });
  try {
    const s = await openSession(wsUrl(rt), 'json', { authmethods: ['ticket'], authid, onchallenge: () => password, agent });
    closeSession(s);
    return { ok: true, details: s.details };
  } catch (e) {
    return { ok: false, message: e.message };
  }
}

const TOO_MANY = /wamp\.error\.authentication_failed.*too many failed sign-ins/;

async function metrics() {
  const text = await (await fetch(rt.url('/metrics'))).text();
  const get = (name) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1]);
  return {
    failures: get('microservice_auth_failures_total'),
    refusals: get('microservice_auth_refusals_total'),
    blocked: get('microservice_auth_blocked'),
    max: get('microservice_auth_max_failures'),
    window: get('microservice_auth_failure_window_seconds'),
  };
}

h.test('failed sign-ins: per address, per authid, HTTP bearer, /metrics, and the window passing', async () => {
  const m0 = await metrics();
  assert.deepEqual([m0.failures, m0.refusals, m0.blocked, m0.max, m0.window], [0, 0, 0, MAX, WINDOW_S]);

  // one address, MAX failures (a different unknown authid each time): the address is refused,
  // also for a user with the right password; another address is not
  for (let i = 0; i < MAX; i++) {
    const r = await signIn('127.0.0.2', `nobody${i}`, 'guess');
    assert.ok(!r.ok && /authentication_failed/.test(r.message) && !TOO_MANY.test(r.message), r.message);
  }
  let r = await signIn('127.0.0.2', 'bob', PASSWORD.bob);
  assert.match(r.message ?? 'signed in', TOO_MANY, 'the right password, from the refused address');
  r = await signIn('127.0.0.3', 'bob', PASSWORD.bob);
  assert.ok(r.ok, `another address: ${r.message}`);
  assert.equal(r.details.authid, 'bob');

  // one authid, MAX failures from as many addresses: that authid is refused from anywhere,
  // another authid from the same address is not
  for (let i = 0; i < MAX; i++) {
    r = await signIn(`127.0.0.${4 + i}`, 'alice', 'wrong');
    assert.ok(!r.ok && !TOO_MANY.test(r.message), r.message);
  }
  r = await signIn('127.0.0.7', 'alice', PASSWORD.alice);
  assert.match(r.message ?? 'signed in', TOO_MANY, 'the right password, for the refused authid');
  r = await signIn('127.0.0.7', 'bob', PASSWORD.bob);
  assert.ok(r.ok, `another authid: ${r.message}`);

  // HTTP: wrong bearer tokens count per address; beyond the limit even a good token gets 429
  const call = (from, tok) => h.curl(rt.url('/whoami.me'), ['--interface', from, '-X', 'POST', '-H', `Authorization: Bearer ${tok}`, '-d', '[]']);
  for (let i = 0; i < MAX; i++) assert.equal((await call('127.0.0.8', 'f'.repeat(64))).status, 401);
  let res = await call('127.0.0.8', token);
  assert.equal(res.status, 429, res.body);
  h.assertErrorBody(assert, res.json, 'wamp.error.authentication_failed', res.body);
  assert.match(res.json.args[0], /too many failed sign-ins/);
  res = await call('127.0.0.9', token);
  assert.equal(res.status, 200, res.body);
  assert.deepEqual(res.json, [['alice', 'admin'], {}]);

  const m1 = await metrics();
  assert.equal(m1.failures, 3 * MAX, JSON.stringify(m1));
  assert.equal(m1.refusals, 3, JSON.stringify(m1));
  assert.ok(m1.blocked >= 1, JSON.stringify(m1)); // 127.0.0.8 at least (the others may have expired)

  // once the window has passed, the address and the authid may sign in again
  await h.waitFor(async () => (await signIn('127.0.0.10', 'alice', PASSWORD.alice)).ok,
    { timeout: (WINDOW_S + 20) * 1000, interval: 500, what: 'alice may sign in again' });
  await h.waitFor(async () => (await signIn('127.0.0.2', 'bob', PASSWORD.bob)).ok,
    { timeout: (WINDOW_S + 20) * 1000, interval: 500, what: '127.0.0.2 may sign in again' });
  await h.waitFor(async () => (await call('127.0.0.8', token)).status === 200,
    { timeout: (WINDOW_S + 20) * 1000, interval: 500, what: '127.0.0.8 may call again' });
  const m2 = await metrics();
  assert.equal(m2.failures, 3 * MAX, 'successes and refusals are not failures');
  assert.equal(m2.blocked, 0);
});
