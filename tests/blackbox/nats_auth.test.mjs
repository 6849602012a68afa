// Credentials and TLS on the bus: real nats-server instances with authorization, NKeys, operator
// JWTs (a .creds file made here with nkeys.js) and mutual TLS (certificates made with openssl);
// the runtime and `microservice call` connect with the --nats-* options or their NATS_*
// variables, and refuse clearly (not ready, the reason in the log, still alive) when refused.
import assert from 'node:assert/strict';
import { after, before } from 'node:test';
import { execFile, execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { createOperator, createAccount, createUser } from 'nkeys.js';
import { nkeyAuthenticator, credsAuthenticator } from 'nats';
import * as h from './lib/harness.mjs';

let dir, sdir;
before(async () => {
  dir = h.workDir('nats_auth');
  sdir = h.servicesDir(path.join(dir, 'services'), ['greeting.lua']);
});
after(async () => { await h.stopAll(); });

const PASSWORD = 'pa$$:w@rd';

// `microservice call ...`: {code, stdout, stderr}
function call(args, env = {}) {
  return new Promise((resolve) => {
    execFile(h.BIN, ['call', ...args], { env: { ...process.env, ...env }, timeout: 30000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (err.code ?? 1) : 0, stdout, stderr });
    });
  });
}

async function hello(rt, name = 'Bob') {
  const r = await h.post(rt, 'greeting_service.hello', [[name], {}]);
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.json, [[`Hello, ${name} `], {}]);
}

async function natsHello(url, opts) {
  const nc = await h.natsClient(url, opts);
  try {
    const m = await nc.request('greeting_service.hello', h.sc.encode('[["Nats"],{}]'), { timeout: 5000 });
    assert.deepEqual(JSON.parse(h.sc.decode(m.data)), [['Hello, Nats '], {}]);
  } finally {
    await nc.close();
  }
}

// A runtime refused by the server: alive, /healthz not ok (503, or 200 "degraded" while its own
// RPCs answer in-process), the reason logged; retried, not spinning.
async function assertRefused(rt, reason) {
  await h.waitFor(() => reason.test(rt.log()), { what: `log line matching ${reason}` });
  assert.ok(h.alive(rt.proc), 'the runtime must stay alive');
  const r = await fetch(rt.url('/healthz'));
  assert.equal(r.status, h.busDownHealth);
  const j = await r.json();
  assert.notEqual(j.nats, 'connected');
  assert.notEqual(j.status, 'ok');
  // retried in the background: a second attempt is logged (at debug), and not in a tight loop
  await h.waitFor(() => /failed again/.test(rt.log()), { what: 'a second connection attempt' });
  const t0 = Date.now();
  const before = (rt.log().match(/failed again/g) || []).length;
  await h.sleep(1500);
  const attempts = (rt.log().match(/failed again/g) || []).length - before;
  assert.ok(attempts <= Math.ceil((Date.now() - t0) / 250) + 1, `${attempts} attempts in ${Date.now() - t0} ms`);
  assert.ok(h.alive(rt.proc));
  assert.equal((await fetch(rt.url('/healthz'))).status, h.busDownHealth);
}

// ---- user and password ----

h.test('user and password: flags, environment and URL; a wrong password is refused clearly', async () => {
  const nats = await h.startNats({
    dir, name: 'nats-user',
    config: `authorization { users = [ { user: alice, password: "${PASSWORD}" } ] }\n`,
  });
  const byFlags = await h.startRuntime({ dir, natsUrl: nats.url, servicesDir: sdir, name: 'user-flags',
    args: ['--nats-user', 'alice', '--nats-password', PASSWORD] });
  await hello(byFlags);
  await natsHello(nats.url, { user: 'alice', pass: PASSWORD });
  await byFlags.stop();

  const byEnv = await h.startRuntime({ dir, natsUrl: nats.url, servicesDir: sdir, name: 'user-env',
    env: { NATS_USER: 'alice', NATS_PASSWORD: PASSWORD } });
  await hello(byEnv);
  await byEnv.stop();

  // in the URL (nats.c parses user:password@; the last '@' ends them)
  const inUrl = `nats://alice:${PASSWORD}@127.0.0.1:${nats.port}`;
  const byUrl = await h.startRuntime({ dir, natsUrl: inUrl, servicesDir: sdir, name: 'user-url' });
  await hello(byUrl);
  await h.waitFor(() => /connected to nats:\/\/alice:\*\*\*@127\.0\.0\.1/.test(byUrl.log()), { what: 'the redacted URL in the log' });
  await byUrl.stop();

  for (const rt of [byFlags, byEnv, byUrl]) {
    const log = rt.log().split('\n').filter((l) => !l.startsWith('# ')).join('\n'); // not the harness's command line
    assert.ok(!log.includes(PASSWORD), `the password must not be logged:\n${log}`);
  }

  const wrong = await h.startRuntime({ dir, natsUrl: nats.url, servicesDir: sdir, name: 'user-wrong', ready: false,
    args: ['--nats-user', 'alice', '--nats-password', 'wrong'] });
  await h.waitFor(() => h.tcpProbe(wrong.port), { what: 'the HTTP listener' });
  await assertRefused(wrong, /ERROR \[nats\] connecting to nats:\/\/127\.0\.0\.1:\d+ failed: .*Authorization Violation/);
  await wrong.stop();

  // microservice call with the same options
  const ok = await call(['greeting_service.hello', 'Ann', '--json', '--nats', nats.url, '--nats-user', 'alice', '--nats-password', PASSWORD]);
  // (no runtime serves now: the connection works and the call reaches the bus)
  assert.equal(ok.code, 1, ok.stderr);
  assert.match(ok.stderr, /no_such_procedure/);
  const bad = await call(['greeting_service.hello', 'Ann', '--nats', `nats://alice:nope@127.0.0.1:${nats.port}`]);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /wamp\.error\.unavailable: cannot connect to NATS at nats:\/\/alice:\*\*\*@127\.0\.0\.1:\d+ \(.*Authorization Violation/);
  assert.ok(!bad.stderr.includes('nope'));

  const served = await h.startRuntime({ dir, natsUrl: nats.url, servicesDir: sdir, name: 'user-call',
    env: { NATS_USER: 'alice', NATS_PASSWORD: PASSWORD } });
  const r = await call(['greeting_service.hello', 'Ann', '--json', '--nats', nats.url, '--nats-user', 'alice', '--nats-password', PASSWORD]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.trim(), '[["Hello, Ann "],{}]');
  const viaEnv = await call(['greeting_service.hello', 'Env', '--json', '--nats', nats.url], { NATS_USER: 'alice', NATS_PASSWORD: PASSWORD });
  assert.equal(viaEnv.code, 0, viaEnv.stderr);
  assert.equal(viaEnv.stdout.trim(), '[["Hello, Env "],{}]');
  await served.stop();
  await nats.stop();
});

// ---- credentials changed on the server while connected ----

h.test('credentials revoked while connected: not ready, reconnects once they are valid again', async () => {
  const conf = (pw) => `authorization { users = [ { user: bob, password: "${pw}" } ] }\n`;
  const nats = await h.startNats({ dir, name: 'nats-reload', config: conf('first') });
  const rt = await h.startRuntime({ dir, natsUrl: nats.url, servicesDir: sdir, name: 'reload',
    args: ['--nats-user', 'bob', '--nats-password', 'first'] });
  await hello(rt);
  fs.writeFileSync(nats.configFile, conf('second'));
  nats.proc.kill('SIGHUP'); // nats-server reloads and closes connections no longer authorized
  await h.waitFor(async () => (await (await fetch(rt.url('/healthz'))).json()).status !== 'ok', { what: '/healthz not ok after the reload' });
  // nats.c stops reconnecting after the same refusal twice; the runtime starts again by itself
  await h.waitFor(() => /ERROR \[nats\] the NATS client gave up the connection \(.*Authorization Violation/.test(rt.log()),
    { what: 'the refusal in the log' });
  assert.ok(h.alive(rt.proc));
  fs.writeFileSync(nats.configFile, conf('first'));
  nats.proc.kill('SIGHUP');
  await h.waitFor(async () => (await fetch(rt.url('/healthz'))).status === 200, { timeout: 20000, what: '/healthz 200 again' });
  await hello(rt);
  await rt.stop();
  await nats.stop();
});

// ---- token ----

h.test('token: --nats-token and NATS_TOKEN', async () => {
  const nats = await h.startNats({ dir, name: 'nats-token', config: 'authorization { token: "t0k3n-secret" }\n' });
  const rt = await h.startRuntime({ dir, natsUrl: nats.url, servicesDir: sdir, name: 'token', args: ['--nats-token', 't0k3n-secret'] });
  await hello(rt);
  await natsHello(nats.url, { token: 't0k3n-secret' });
  const r = await call(['greeting_service.hello', 'Tok', '--json', '--nats', nats.url], { NATS_TOKEN: 't0k3n-secret' });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.trim(), '[["Hello, Tok "],{}]');
  assert.ok(!rt.log().split('\n').filter((l) => !l.startsWith('# ')).join('\n').includes('t0k3n-secret'));
  await rt.stop();
  const wrong = await h.startRuntime({ dir, natsUrl: nats.url, servicesDir: sdir, name: 'token-wrong', ready: false,
    env: { NATS_TOKEN: 'not-it' } });
  await h.waitFor(() => h.tcpProbe(wrong.port), { what: 'the HTTP listener' });
  await assertRefused(wrong, /Authorization Violation/);
  await wrong.stop();
  await nats.stop();
});

// ---- NKey ----

h.test('NKey: --nats-nkey with a user seed file, the public key derived from the seed', async () => {
  const user = createUser();
  const seed = new TextDecoder().decode(user.getSeed());
  const seedFile = path.join(dir, 'user.nk');
  fs.writeFileSync(seedFile, seed + '\n', { mode: 0o600 });
  const nats = await h.startNats({ dir, name: 'nats-nkey',
    config: `authorization { users = [ { nkey: ${user.getPublicKey()} } ] }\n` });
  const rt = await h.startRuntime({ dir, natsUrl: nats.url, servicesDir: sdir, name: 'nkey', args: ['--nats-nkey', seedFile] });
  await hello(rt);
  await natsHello(nats.url, { authenticator: nkeyAuthenticator(user.getSeed()) });
  const r = await call(['greeting_service.hello', 'Nk', '--json', '--nats', nats.url], { NATS_NKEY: seedFile });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.trim(), '[["Hello, Nk "],{}]');
  await rt.stop();

  // another user's seed: refused by the server
  const other = path.join(dir, 'other.nk');
  fs.writeFileSync(other, new TextDecoder().decode(createUser().getSeed()) + '\n');
  const wrong = await h.startRuntime({ dir, natsUrl: nats.url, servicesDir: sdir, name: 'nkey-wrong', ready: false, args: ['--nats-nkey', other] });
  await h.waitFor(() => h.tcpProbe(wrong.port), { what: 'the HTTP listener' });
  await assertRefused(wrong, /Authorization Violation/);
  await wrong.stop();

  // not a seed: refused at start-up
  const junk = path.join(dir, 'junk.nk');
  fs.writeFileSync(junk, 'SUNOTASEED\n');
  const j = await runMain(['--http', 'off', '--nats', nats.url, '--nats-nkey', junk, sdir]);
  assert.equal(j.code, 2, j.stderr);
  assert.match(j.stderr, /--nats-nkey .*junk\.nk: no NKey user seed/);
  await nats.stop();
});

// ---- operator JWTs and a .creds file ----

const B32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
function base32(buf) {
  let bits = 0, acc = 0, out = '';
  for (const b of buf) {
    acc = (acc << 8) | b; bits += 8;
    while (bits >= 5) { bits -= 5; out += B32[(acc >>> bits) & 31]; }
  }
  if (bits > 0) out += B32[(acc << (5 - bits)) & 31];
  return out;
}
const b64url = (x) => Buffer.from(x).toString('base64url');

// A NATS JWT: header.claims.signature, base64url, Ed25519 by the issuer's nkey; jti is the
// base32 SHA-512/256 of the claims without it (as the Go jwt library makes them).
function natsJwt(issuer, sub, name, nats) {
  const header = b64url(JSON.stringify({ typ: 'JWT', alg: 'ed25519-nkey' }));
  const claims = { jti: '', iat: Math.floor(Date.now() / 1000), iss: issuer.getPublicKey(), name, sub, nats };
  claims.jti = base32(crypto.createHash('sha512-256').update(JSON.stringify(claims)).digest());
  const payload = b64url(JSON.stringify(claims));
  const sig = issuer.sign(new TextEncoder().encode(`${header}.${payload}`));
  return `${header}.${payload}.${b64url(sig)}`;
}

h.test('.creds file: operator, account and user JWTs; --nats-creds and NATS_CREDS', async () => {
  const op = createOperator(), acc = createAccount(), usr = createUser();
  const opJwt = natsJwt(op, op.getPublicKey(), 'test-operator', { type: 'operator', version: 2 });
  const accJwt = natsJwt(op, acc.getPublicKey(), 'test-account', {
    limits: { subs: -1, data: -1, payload: -1, imports: -1, exports: -1, wildcards: true, conn: -1, leaf: -1 },
    default_permissions: { pub: {}, sub: {} }, type: 'account', version: 2,
  });
  const usrJwt = natsJwt(acc, usr.getPublicKey(), 'test-user', {
    pub: {}, sub: {}, subs: -1, data: -1, payload: -1, type: 'user', version: 2,
  });
  const creds = `-----BEGIN NATS USER JWT-----\n${usrJwt}\n------END NATS USER JWT------\n\n` +
    '************************* IMPORTANT *************************\n' +
    'NKEY Seed printed below can be used to sign and prove identity.\n' +
    'NKEYs are sensitive and should be treated as secrets.\n\n' +
    `-----BEGIN USER NKEY SEED-----\n${new TextDecoder().decode(usr.getSeed())}\n------END USER NKEY SEED------\n\n` +
    '*************************************************************\n';
  const credsFile = path.join(dir, 'user.creds');
  fs.writeFileSync(credsFile, creds, { mode: 0o600 });
  const nats = await h.startNats({ dir, name: 'nats-jwt', config:
    `operator: ${opJwt}\nresolver: MEMORY\nresolver_preload: {\n  ${acc.getPublicKey()}: ${accJwt}\n}\n` });
  const rt = await h.startRuntime({ dir, natsUrl: nats.url, servicesDir: sdir, name: 'creds', args: ['--nats-creds', credsFile] });
  await hello(rt);
  await natsHello(nats.url, { authenticator: credsAuthenticator(new TextEncoder().encode(creds)) });
  const r = await call(['greeting_service.hello', 'Jwt', '--json', '--nats', nats.url], { NATS_CREDS: credsFile });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.trim(), '[["Hello, Jwt "],{}]');
  // nats.c 3.4.1 leaves the signature out of CONNECT when its first byte is 0, one sign-in in 256
  // (the server logs "Signature missing"); runtime/nats_auth.c tries such a refusal again. 400
  // sign-ins, 8 at a time, all succeed; without the retry one fails with probability 79%.
  const failed = [];
  for (let i = 0; i < 400; i += 8) {
    const batch = await Promise.all(Array.from({ length: 8 }, () =>
      call(['greeting_service.hello', 'Jwt', '--nats', nats.url], { NATS_CREDS: credsFile })));
    failed.push(...batch.filter((b) => b.code !== 0).map((b) => `${b.code}: ${b.stderr}${b.stdout}`));
  }
  assert.deepEqual(failed, [], 'every sign-in with the .creds file is accepted');
  await rt.stop();

  // a missing .creds file: start-up fails at once with the file's name
  const missing = await runMain(['--http', 'off', '--nats', nats.url, '--nats-creds', path.join(dir, 'nope.creds'), sdir]);
  assert.equal(missing.code, 2, missing.stderr);
  assert.match(missing.stderr, /--nats-creds .*nope\.creds: No such file or directory/);
  const missingCall = await call(['greeting_service.hello', '--nats', nats.url, '--nats-creds', path.join(dir, 'nope.creds')]);
  assert.equal(missingCall.code, 2);
  assert.match(missingCall.stderr, /nope\.creds: No such file or directory/);
  await nats.stop();
});

// ---- TLS ----

function runMain(args, env = {}) {
  return new Promise((resolve) => {
    execFile(h.BIN, args, { env: { ...process.env, ...env }, timeout: 20000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (err.code ?? 1) : 0, stdout, stderr, killed: err?.killed });
    });
  });
}

function makeCerts(tdir) {
  fs.mkdirSync(tdir, { recursive: true });
  const ossl = (...a) => execFileSync('openssl', a, { cwd: tdir, stdio: ['ignore', 'ignore', 'pipe'] });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  ossl('req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=microservice test CA');
  fs.writeFileSync(path.join(tdir, 'server.ext'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n');
  fs.writeFileSync(path.join(tdir, 'client.ext'), 'extendedKeyUsage=clientAuth\n');
  for (const who of ['server', 'client']) {
    ossl('req', ...ec, '-keyout', `${who}.key`, '-out', `${who}.csr`, '-subj', `/CN=${who === 'server' ? 'localhost' : 'test client'}`);
    ossl('x509', '-req', '-in', `${who}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial',
      '-out', `${who}.pem`, '-days', '2', '-extfile', `${who}.ext`);
  }
  const f = (n) => path.join(tdir, n);
  return { ca: f('ca.pem'), serverCert: f('server.pem'), serverKey: f('server.key'), cert: f('client.pem'), key: f('client.key') };
}

h.test('mutual TLS: --nats-ca, --nats-cert and --nats-key; without the CA the certificate fails verification', async () => {
  const c = makeCerts(path.join(dir, 'tls'));
  const nats = await h.startNats({ dir, name: 'nats-tls', config:
    `tls { cert_file: "${c.serverCert}", key_file: "${c.serverKey}", ca_file: "${c.ca}", verify: true, timeout: 2 }\n` });
  const tlsUrl = `tls://127.0.0.1:${nats.port}`;
  const rt = await h.startRuntime({ dir, natsUrl: tlsUrl, servicesDir: sdir, name: 'tls',
    args: ['--nats-ca', c.ca, '--nats-cert', c.cert, '--nats-key', c.key] });
  await hello(rt);
  // many calls through the TLS connection, some with large bodies (TLS records split over reads)
  const big = 'x'.repeat(200000);
  const rs = await Promise.all(Array.from({ length: 50 }, (_, i) => h.post(rt, 'greeting_service.hello', [[i % 5 ? `n${i}` : big], {}])));
  rs.forEach((r, i) => { assert.equal(r.status, 200, r.text.slice(0, 200)); assert.equal(r.json[0][0], `Hello, ${i % 5 ? `n${i}` : big} `); });
  await natsHello(tlsUrl, { tls: { caFile: c.ca, certFile: c.cert, keyFile: c.key } });
  const r = await call(['greeting_service.hello', 'Tls', '--json', '--nats', nats.url],
    { NATS_CA: c.ca, NATS_CERT: c.cert, NATS_KEY: c.key });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.trim(), '[["Hello, Tls "],{}]');
  await rt.stop();

  // the server's certificate is not trusted without the CA (its own or the system's)
  const noCa = await h.startRuntime({ dir, natsUrl: tlsUrl, servicesDir: sdir, name: 'tls-noca', ready: false,
    args: ['--nats-cert', c.cert, '--nats-key', c.key] });
  await h.waitFor(() => h.tcpProbe(noCa.port), { what: 'the HTTP listener' });
  await assertRefused(noCa, /SSL handshake error: .*unable to get local issuer certificate.*certificate verify failed\?/);
  await noCa.stop();

  // --nats-cert without --nats-key: a usage error at start-up
  const half = await runMain(['--http', 'off', '--nats', tlsUrl, '--nats-cert', c.cert, sdir]);
  assert.equal(half.code, 2);
  assert.match(half.stderr, /--nats-cert and --nats-key .* go together/);
  await nats.stop();
});
