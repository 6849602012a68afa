// Authentication and authorization (issue 7, items 1 and 2, and the per-session call limit of
// item 4): an auth file made with `microservice auth-secret` / `auth-token`; HTTP bearer tokens
// (401/403), WAMP ticket and wampcra with npm autobahn (JSON and msgpack), anonymous only where
// configured, per-role URI patterns for call/register/publish/subscribe, and the caller's
// identity in microservice.context(), signed on the bus so a plain NATS client cannot forge it.
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import * as h from './lib/harness.mjs';
import { autobahn, openSession, closeSession, expectWampError, eventSink, RawWamp, MSG, wsUrl, closeAllWamp, SERIALIZERS } from './lib/wamp.mjs';

const BUS_SECRET = 'a-bus-secret-for-the-tests-0123456789';
const PASSWORD = { alice: 'alice-password', bob: 'bob-password' };
let dir, nats, open, strict, token, authFile;

function makeSecret(password) {
  const out = execFileSync(h.BIN, ['auth-secret', '--iterations', '1000'], { input: password + '\n' });
  return JSON.parse(out.toString());
}

before(async () => {
  dir = h.workDir('auth');
  const tok = JSON.parse(execFileSync(h.BIN, ['auth-token']).toString());
  assert.match(tok.token, /^[0-9a-f]{64}$/);
  assert.equal(tok.stored, 'sha256:' + crypto.createHash('sha256').update(tok.token).digest('hex'));
  token = tok.token;
  const roles = {
    admin: { call: ['>'], register: ['>'], publish: ['>'], subscribe: ['>'] },
    guest: {
      call: ['whoami.me', 'whoami.relay', 'whoami.wait', 'guest.*'],
      register: ['guest.>'],
      publish: ['news.guest'],
      subscribe: ['news.*'],
    },
  };
  const users = {
    alice: { role: 'admin', ...makeSecret(PASSWORD.alice), tokens: [tok.stored] },
    bob: { role: 'guest', ...makeSecret(PASSWORD.bob) },
  };
  authFile = path.join(dir, 'auth.json');
  fs.writeFileSync(authFile, JSON.stringify({ bus_secret: BUS_SECRET, anonymous: 'guest', users, roles }, null, 2));
  const strictFile = path.join(dir, 'auth-strict.json');
  fs.writeFileSync(strictFile, JSON.stringify({ bus_secret: BUS_SECRET, users, roles }, null, 2));

  nats = await h.startNats({ dir });
  const services = path.join(h.SOURCE_DIR, 'tests', 'blackbox', 'services_auth');
  open = await h.startRuntime({ dir, natsUrl: nats.url, servicesDir: services, name: 'open', args: ['--auth', authFile, '--max-session-calls', '2'] });
  // the strict one serves no RPC of its own (services_auth is served by `open`, through NATS)
  const empty = path.join(dir, 'empty');
  fs.mkdirSync(empty, { recursive: true });
  // its failed sign-ins all come from 127.0.0.1: more than the default 10 of the limiter
  // (auth_limit.test.mjs tests it), so that the tests here do not depend on their number
  strict = await h.startRuntime({ dir, natsUrl: nats.url, servicesDir: empty, name: 'strict', args: ['--auth-max-failures', '100'], env: { MICROSERVICE_AUTH: strictFile } });
});

after(async () => {
  await closeAllWamp();
  await h.stopAll();
});

const bearer = (t) => ({ authorization: `Bearer ${t}` });
// autobahn gives a Result for several positional results
const who = async (session) => { const r = await session.call('whoami.me', []); return r.args ?? r; };

h.test('HTTP: anonymous callers get the anonymous role, a bearer token its user', async () => {
  let r = await h.post(open, 'whoami.me', []);
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.json, [['anonymous', 'guest'], {}]);

  r = await h.post(open, 'whoami.secret', []);
  assert.equal(r.status, 403, r.text);
  h.assertErrorBody(assert, r.json, 'wamp.error.not_authorized', r.text);
  assert.match(r.json.args[0], /role guest may not call whoami\.secret/);

  r = await h.post(open, 'whoami.secret', [], { headers: bearer(token) });
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.json, [['the secret'], {}]);

  r = await h.post(open, 'whoami.me', [], { headers: bearer(token) });
  assert.deepEqual(r.json, [['alice', 'admin'], {}]);
  // a service calling another on behalf of its caller passes the identity on
  r = await h.post(open, 'whoami.relay', [], { headers: bearer(token) });
  assert.deepEqual(r.json, [['alice', 'admin'], {}]);

  // the other process (strict) reaches the same services with the same identities
  r = await h.post(strict, 'whoami.relay', [], { headers: bearer(token) });
  assert.deepEqual(r.json, [['alice', 'admin'], {}]);
});

h.test('HTTP: 401 for a bad token or none (when anonymous is off), with WWW-Authenticate', async () => {
  for (const [rt, headers, what] of [
    [open, bearer('0'.repeat(64)), 'unknown token'],
    [open, bearer(''), 'empty token'],
    [open, { authorization: `Basic ${Buffer.from('alice:alice-password').toString('base64')}` }, 'Basic'],
    [strict, {}, 'no credentials'],
  ]) {
    const r = await h.post(rt, 'whoami.me', [], { headers });
    assert.equal(r.status, 401, `${what}: ${r.text}`);
    h.assertErrorBody(assert, r.json, 'wamp.error.authentication_failed', r.text);
    assert.match(r.headers.get('www-authenticate') || '', /^Bearer realm="microservice"/, what);
  }
  // curl, as in the README
  const res = await h.curl(strict.url('/whoami.me'), ['-X', 'POST', '-H', `Authorization: Bearer ${token}`, '-d', '[]']);
  assert.equal(res.status, 200, res.body);
  assert.deepEqual(res.json, [['alice', 'admin'], {}]);
  // authentication comes before anything else: a bad body without credentials is still 401
  const bad = await h.post(strict, 'whoami.me', '{not json');
  assert.equal(bad.status, 401);
  const health = await fetch(strict.url('/healthz'));
  assert.equal(health.status, 200, 'health checks need no credentials');
});

// The bus signature (docs/auth.md): HMAC-SHA256(bus_secret, subject, reply subject, authid,
// authrole, time, SHA-256 of the body), with the time in Microservice-Auth-Time.
const busSign = ({ subject, reply, id, role, time, body }) => crypto.createHmac('sha256', BUS_SECRET)
  .update([subject, reply, id, role, String(time), crypto.createHash('sha256').update(body).digest('hex')].join('\n'))
  .digest('base64');

// A request published by hand (so that the test picks the reply subject): the identity headers
// given, the answer of whoami.me ([[authid, authrole], {}]).
async function askWhoami(nc, { reply, body = '[]', headers = {}, subject = 'whoami.me' }) {
  const { headers: natsHeaders } = await import('nats');
  const sub = nc.subscribe(reply, { max: 1, timeout: 5000 });
  const hdrs = natsHeaders();
  for (const [k, v] of Object.entries(headers)) hdrs.set(k, v);
  nc.publish(subject, h.sc.encode(body), { reply, headers: hdrs });
  for await (const m of sub) return JSON.parse(h.sc.decode(m.data));
  throw new Error('no reply');
}

h.test('NATS: an identity is trusted only when signed with the bus secret', async () => {
  const nc = await h.natsClient(nats.url);
  const { createInbox } = await import('nats');
  try {
    const ask = (headers, opts = {}) => askWhoami(nc, { reply: createInbox(), headers, ...opts });
    assert.deepEqual(await ask({}), [[null, null], {}], 'no identity: none in context()');
    const forged = { 'Microservice-Authid': 'root', 'Microservice-Authrole': 'admin', 'Microservice-Auth-Time': String(Date.now()), 'Microservice-Auth-Signature': 'AAAA' };
    assert.deepEqual(await ask(forged), [[null, null], {}], 'a forged identity is ignored');
    const signed = (what) => {
      const d = { subject: 'whoami.me', id: 'carol', role: 'admin', time: Date.now(), body: '[]', ...what };
      return { 'Microservice-Authid': d.id, 'Microservice-Authrole': d.role, 'Microservice-Auth-Time': String(d.time), 'Microservice-Auth-Signature': busSign(d) };
    };
    let reply = createInbox();
    assert.deepEqual(await ask(signed({ subject: 'whoami.secret', reply }), { reply }), [[null, null], {}],
      'a signature for another subject is ignored');
    reply = createInbox();
    assert.deepEqual(await ask(signed({ reply }), { reply }), [['carol', 'admin'], {}], 'a gateway holding the secret is trusted');
  } finally {
    await nc.close();
  }
});

h.test('NATS: a captured signature does not work on another body, reply subject or later', async () => {
  const nc = await h.natsClient(nats.url);
  const { createInbox } = await import('nats');
  try {
    const reply = createInbox();
    const d = { subject: 'whoami.me', reply, id: 'carol', role: 'admin', time: Date.now(), body: '[]' };
    const headers = { 'Microservice-Authid': d.id, 'Microservice-Authrole': d.role, 'Microservice-Auth-Time': String(d.time), 'Microservice-Auth-Signature': busSign(d) };
    assert.deepEqual(await askWhoami(nc, { reply, headers }), [['carol', 'admin'], {}], 'the original request');
    assert.deepEqual(await askWhoami(nc, { reply, headers, body: '[[], {}]' }), [[null, null], {}], 'another body');
    assert.deepEqual(await askWhoami(nc, { reply: createInbox(), headers }), [[null, null], {}], 'another reply subject');
    assert.deepEqual(await askWhoami(nc, { reply, headers: { ...headers, 'Microservice-Auth-Time': String(d.time + 1) } }),
      [[null, null], {}], 'another time');
    // signed correctly, but too old, or too far ahead (the window is 60 s)
    for (const [time, what] of [[Date.now() - 120000, 'two minutes old'], [Date.now() + 120000, 'two minutes ahead']]) {
      const r = createInbox();
      const old = { ...d, reply: r, time };
      const hs = { ...headers, 'Microservice-Auth-Time': String(time), 'Microservice-Auth-Signature': busSign(old) };
      assert.deepEqual(await askWhoami(nc, { reply: r, headers: hs }), [[null, null], {}], what);
    }
    // the signature of the old format (subject, authid, authrole only) is refused
    const r2 = createInbox();
    const legacy = crypto.createHmac('sha256', BUS_SECRET).update('whoami.me\ncarol\nadmin').digest('base64');
    assert.deepEqual(await askWhoami(nc, { reply: r2, headers: { ...headers, 'Microservice-Auth-Signature': legacy } }),
      [[null, null], {}], 'the old format');
    // what the gateways sign still reaches the services, also from service to service
    const viaHttp = await h.post(open, 'whoami.relay', [], { headers: bearer(token) });
    assert.deepEqual(viaHttp.json, [['alice', 'admin'], {}]);
  } finally {
    await nc.close();
  }
});

for (const ser of SERIALIZERS) {
  h.test(`WAMP (${ser}): ticket and wampcra with salted secrets; WELCOME says who`, async () => {
    const t = await openSession(wsUrl(strict), ser, {
      authmethods: ['ticket'], authid: 'alice',
      onchallenge: (session, method) => { assert.equal(method, 'ticket'); return PASSWORD.alice; },
    });
    assert.equal(t.details.authid, 'alice');
    assert.equal(t.details.authrole, 'admin');
    assert.equal(t.details.authmethod, 'ticket');
    const me = await who(t.session);
    assert.deepEqual(me, ['alice', 'admin']);
    closeSession(t);

    let challengeExtra;
    const c = await openSession(wsUrl(strict), ser, {
      authmethods: ['wampcra'], authid: 'bob',
      onchallenge: (session, method, extra) => {
        assert.equal(method, 'wampcra');
        challengeExtra = extra;
        const key = autobahn.auth_cra.derive_key(PASSWORD.bob, extra.salt, extra.iterations, extra.keylen);
        return autobahn.auth_cra.sign(key, extra.challenge);
      },
    });
    assert.equal(c.details.authid, 'bob');
    assert.equal(c.details.authrole, 'guest');
    assert.equal(c.details.authmethod, 'wampcra');
    const challenge = JSON.parse(challengeExtra.challenge);
    assert.equal(challenge.authid, 'bob');
    assert.equal(challenge.authmethod, 'wampcra');
    assert.ok(challenge.nonce && challenge.timestamp, JSON.stringify(challenge));
    assert.deepEqual(await who(c.session), ['bob', 'guest']);
    closeSession(c);
  });
}

h.test('WAMP: wrong secrets, unknown users and missing methods are refused with ABORT', async () => {
  const refused = async (opts, what) => {
    const e = await openSession(wsUrl(strict), 'json', opts).then(() => null, (err) => err);
    assert.ok(e, `${what}: the session must not open`);
    return e.message;
  };
  assert.match(await refused({ authmethods: ['ticket'], authid: 'alice', onchallenge: () => 'wrong' }, 'wrong ticket'),
    /wamp\.error\.authentication_failed/);
  assert.match(await refused({ authmethods: ['ticket'], authid: 'nobody', onchallenge: () => 'x' }, 'unknown ticket user'),
    /wamp\.error\.authentication_failed/);
  const salts = [];
  for (let i = 0; i < 2; i++) {
    assert.match(await refused({
      authmethods: ['wampcra'], authid: 'mallory',
      onchallenge: (s, m, extra) => { salts.push(extra.salt); return autobahn.auth_cra.sign(autobahn.auth_cra.derive_key('guess', extra.salt, extra.iterations, extra.keylen), extra.challenge); },
    }, 'unknown wampcra user'), /wamp\.error\.authentication_failed/);
  }
  assert.equal(salts.length, 2, 'an unknown authid still gets a challenge');
  assert.equal(salts[0], salts[1], 'with the same made-up salt each time (no user enumeration)');
  assert.match(await refused({
    authmethods: ['wampcra'], authid: 'bob',
    onchallenge: (s, m, extra) => autobahn.auth_cra.sign(autobahn.auth_cra.derive_key('not-bobs', extra.salt, extra.iterations, extra.keylen), extra.challenge),
  }, 'wrong wampcra password'), /wamp\.error\.authentication_failed/);
  // no anonymous on the strict router
  const raw = await RawWamp.connect(wsUrl(strict), 'json');
  raw.send([MSG.HELLO, 'realm1', { roles: { caller: {} } }]);
  const abort = await raw.next(null, 5000, 'ABORT');
  assert.equal(abort[0], MSG.ABORT, JSON.stringify(abort));
  assert.equal(abort[2], 'wamp.error.no_auth_method');
  // AUTHENTICATE out of turn is a protocol violation
  const raw2 = await RawWamp.connect(wsUrl(strict), 'json');
  raw2.send([5, 'sig', {}]);
  const v = await raw2.next(null, 5000, 'ABORT');
  assert.deepEqual([v[0], v[2]], [MSG.ABORT, 'wamp.error.protocol_violation']);
  // and the router still serves
  const ok = await openSession(wsUrl(strict), 'json', { authmethods: ['ticket'], authid: 'alice', onchallenge: () => PASSWORD.alice });
  assert.deepEqual(await who(ok.session), ['alice', 'admin']);
  closeSession(ok);
});

h.test('WAMP: an unknown authid gets the same challenge as a user, and its ticket the same work', async () => {
  const challengeOf = async (authid) => {
    let extra;
    const e = await openSession(wsUrl(strict), 'json', {
      authmethods: ['wampcra'], authid, onchallenge: (s, m, x) => { extra = x; return 'not a signature'; },
    }).then(() => null, (err) => err);
    assert.ok(e && extra, `${authid}: a challenge, then a refusal`);
    return extra;
  };
  const known = await challengeOf('bob');
  const unknown = await challengeOf('nobody-here');
  assert.deepEqual(Object.keys(unknown).sort(), Object.keys(known).sort());
  const ck = JSON.parse(known.challenge), cu = JSON.parse(unknown.challenge);
  assert.deepEqual(Object.keys(cu), Object.keys(ck), 'the same fields in the challenge text');
  assert.equal(ck.authrole, undefined, 'no role in the challenge (WELCOME tells it)');
  assert.equal(cu.authrole, undefined);
  for (const e of [known, unknown]) assert.match(e.salt, /^[A-Za-z0-9+/]{22}==$/, 'base64 of 16 bytes');
  assert.equal(unknown.iterations, known.iterations);
  assert.equal(unknown.keylen, known.keylen);

  // a ticket for an unknown authid runs PBKDF2 like one for a user (the timing is in bench/auth)
  const derivations = async () => {
    const text = await (await fetch(strict.url('/metrics'))).text();
    return Number(/^microservice_auth_derivations_total (\d+)$/m.exec(text)?.[1]);
  };
  const before = await derivations();
  assert.ok(Number.isInteger(before), 'the derivations are in /metrics');
  for (const authid of ['nobody-here', 'alice']) {
    const e = await openSession(wsUrl(strict), 'json', { authmethods: ['ticket'], authid, onchallenge: () => 'a guess' })
      .then(() => null, (err) => err);
    assert.match(e?.message ?? '', /wamp\.error\.authentication_failed/, authid);
  }
  assert.equal(await derivations(), before + 2, 'one derivation each');
});

h.test('WAMP: per-role permissions for call, register, publish and subscribe', async () => {
  const g = await openSession(wsUrl(open), 'json'); // anonymous: role guest
  assert.equal(g.details.authmethod, 'anonymous');
  assert.equal(g.details.authrole, 'guest');
  const s = g.session;
  assert.deepEqual(await who(s), ['anonymous', 'guest']);
  await expectWampError(assert, s.call('whoami.secret', []), 'wamp.error.not_authorized', 'call');
  await expectWampError(assert, s.register('other.proc', () => 1), 'wamp.error.not_authorized', 'register');
  await s.register('guest.echo', (args) => args);
  await expectWampError(assert, s.subscribe('secret.topic', () => {}), 'wamp.error.not_authorized', 'subscribe');
  await expectWampError(assert, s.subscribe('news', () => {}, { match: 'prefix' }), 'wamp.error.not_authorized',
    'a prefix subscription wider than news.*');
  const sink = eventSink();
  await s.subscribe('news.today', sink.handler);
  await expectWampError(assert, s.publish('news.today', ['x'], {}, { acknowledge: true }), 'wamp.error.not_authorized', 'publish');

  // an admin (bearer over HTTP, ticket over WAMP) may do all of it, and reaches the guest's procedure
  const a = await openSession(wsUrl(open), 'msgpack', { authmethods: ['ticket'], authid: 'alice', onchallenge: () => PASSWORD.alice });
  await a.session.publish('news.today', ['hello'], {}, { acknowledge: true });
  await sink.waitCount(1, 5000, 'the admin\'s event reaches the guest');
  assert.deepEqual(sink.events[0].args, ['hello']);
  assert.deepEqual(await a.session.call('guest.echo', ['hi']), ['hi']);
  await g.session.publish('news.guest', ['from guest'], {}, { acknowledge: true });
  // a callee that asks for it learns who calls (disclose_caller)
  await s.register('guest.who', (args, kwargs, details) => [details.caller_authid, details.caller_authrole],
    { disclose_caller: true });
  const seen = await a.session.call('guest.who', []);
  assert.deepEqual(seen.args ?? seen, ['alice', 'admin']);
  const viaHttp = await h.post(open, 'guest.who', [], { headers: bearer(token) });
  assert.deepEqual(viaHttp.json, [[['alice', 'admin']], {}]);
  closeSession(a);
  closeSession(g);
});

h.test('WAMP: calls in flight per session are limited (--max-session-calls)', async () => {
  const a = await openSession(wsUrl(open), 'json', { authmethods: ['ticket'], authid: 'alice', onchallenge: () => PASSWORD.alice });
  const p1 = a.session.call('whoami.wait', [1]);
  const p2 = a.session.call('whoami.wait', [1]);
  const e = await expectWampError(assert, a.session.call('whoami.wait', [1]), 'wamp.error.limit_exceeded', 'third call');
  assert.match(e.args[0], /limit 2/);
  // another session is not affected
  const b = await openSession(wsUrl(open), 'json');
  assert.deepEqual(await who(b.session), ['anonymous', 'guest']);
  assert.deepEqual(await Promise.all([p1, p2]), [1, 1]);
  assert.equal(await a.session.call('whoami.wait', [0]), 0, 'once they answered, calls go again');
  closeSession(a);
  closeSession(b);
});

h.test('a broken auth file stops the start-up with a message naming the problem', () => {
  const cases = [
    ['{"users": {"x": {"role": "nope"}}, "roles": {}}', /users\.x\.role must name a role/],
    ['{"roles": {"r": {"cal": ["a"]}}}', /roles\.r\.cal: the actions are/],
    ['{"roles": {"r": {"call": ["a.>.b"]}}}', /a pattern is dot-separated/],
    ['{"bus_secret": "short"}', /bus_secret must be/],
    ['{"users": {}, "extra": 1}', /unknown field "extra"/],
    ['{"users": {"x": {"role": "r", "tokens": ["abc"]}}, "roles": {"r": {}}}', /sha256:<64 hex digits>/],
    ['{ not json', /auth\.json:1/],
  ];
  for (const [text, re] of cases) {
    const f = path.join(dir, 'bad', 'auth.json');
    fs.mkdirSync(path.dirname(f), { recursive: true });
    fs.writeFileSync(f, text);
    const r = spawnSync(h.BIN, ['--http', 'off', '--nats', nats.url, '--auth', f, path.join(dir, 'empty')], { timeout: 20000 });
    assert.equal(r.status, 1, `${text}: exit status (stderr: ${r.stderr})`);
    assert.match(r.stderr.toString(), re, text);
  }
  const r = spawnSync(h.BIN, ['--http', 'off', '--auth', path.join(dir, 'missing.json'), path.join(dir, 'empty')], { timeout: 20000 });
  assert.equal(r.status, 1);
  assert.match(r.stderr.toString(), /missing\.json/);
});

h.test('/openapi.json declares the bearer scheme (and anonymous access where it exists)', async () => {
  const { Validator } = await import('@seriousme/openapi-schema-validator');
  for (const [rt, anonymous] of [[open, true], [strict, false]]) {
    const doc = await (await fetch(rt.url('/openapi.json'))).json();
    const res = await new Validator().validate(doc);
    assert.equal(res.valid, true, JSON.stringify(res.errors));
    assert.deepEqual(doc.components.securitySchemes, { bearer: { type: 'http', scheme: 'bearer' } });
    assert.deepEqual(doc.security, anonymous ? [{ bearer: [] }, {}] : [{ bearer: [] }]);
    if (anonymous) {
      const op = doc.paths['/whoami.me'].post;
      assert.ok(op.responses['401'] && op.responses['403'], JSON.stringify(Object.keys(op.responses)));
    }
  }
});
