// HTTPS and WSS: a CA and a server certificate made here with the openssl CLI; curl (HTTP/2 by
// ALPN and HTTP/1.1), node's https and http2 clients, autobahn over wss://, --http-redirect,
// --http off with TLS only (and with workers), start-up errors for bad certificates, garbage on
// the TLS port, and the drain closing idle TLS connections.
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http2 from 'node:http2';
import https from 'node:https';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import * as h from './lib/harness.mjs';
import { makePki as makeTestPki } from './lib/pki.mjs';
import * as w from './lib/wamp.mjs';

let dir, nats, services, pki, rt, tlsPort;

function makePki() {
  pki = makeTestPki(dir);
}
const file = (f) => path.join(pki, f);
const tlsArgs = (port) => ['--https', `127.0.0.1:${port}`, '--tls-cert', file('server.pem'), '--tls-key', file('server.key')];
const ca = () => fs.readFileSync(file('ca.pem'));

// Starts a runtime with TLS; resolves once GET https://.../healthz says ok (and the plain
// healthz too when it listens). Retries on a port taken by a parallel test.
async function startTls({ name, plain = true, args = [] }) {
  for (let attempt = 0; ; attempt++) {
    const port = await h.freePort();
    const r = await h.startRuntime({
      dir, name, natsUrl: nats.url, servicesDir: services, ready: false,
      http: await h.freePort(),
      args: [...tlsArgs(port), ...(plain ? [] : ['--http', 'off']), ...args],
    });
    r.tlsPort = port;
    r.tlsUrl = (p) => `https://127.0.0.1:${port}${p}`;
    try {
      await h.waitFor(async () => {
        if (!h.alive(r.proc)) throw Object.assign(new Error(`microservice exited early (${r.proc.exitCode})`), { fatal: true });
        const res = await h.runCurl(['-sS', '--cacert', file('ca.pem'), '-m', '2', r.tlsUrl('/healthz')]);
        if (res.code !== 0 || !/"status":"ok"/.test(res.stdout)) return false;
        if (!plain) return true;
        return (await fetch(r.url('/healthz'))).status === 200;
      }, { timeout: 20000, what: `https healthz on ${port}` });
    } catch (e) {
      const log = r.log();
      await r.stop('SIGKILL');
      if (attempt < 2 && /in use|EADDRINUSE/i.test(log)) continue;
      throw new Error(`${e.message}\n${h.tail(r.logFile, 40)}`);
    }
    return r;
  }
}

before(async () => {
  dir = h.workDir('https');
  makePki();
  nats = await h.startNats({ dir });
  services = h.servicesDir(path.join(dir, 'services'));
  rt = await startTls({ name: 'tls' });
  tlsPort = rt.tlsPort;
});

after(async () => {
  await w.closeAllWamp();
  await h.stopAll();
});

const curlTls = (p, extra = []) => h.curl(rt.tlsUrl(p), ['--cacert', file('ca.pem'), ...extra]);

h.test('curl over HTTPS: POST hello → 200 over HTTP/2 (ALPN h2) and over HTTP/1.1', async () => {
  const body = ['-X', 'POST', '-d', '[["Bob"], {"last_name": "Ross"}]'];
  const r2 = await curlTls('/greeting_service.hello', ['--http2', ...body]);
  assert.equal(r2.httpVersion, 'HTTP/2', r2.statusLine);
  assert.equal(r2.status, 200);
  assert.deepEqual(r2.json, [['Hello, Bob Ross'], {}]);
  const v = await h.runCurl(['-sS', '-o', '/dev/null', '-w', '%{http_version}', '--http2', '--cacert', file('ca.pem'),
    rt.tlsUrl('/healthz')]);
  assert.equal(v.stdout.toString(), '2', `curl -w %{http_version}: ${v.stderr}`);
  const r1 = await curlTls('/greeting_service.hello', ['--http1.1', ...body]);
  assert.equal(r1.httpVersion, 'HTTP/1.1');
  assert.equal(r1.status, 200);
  assert.deepEqual(r1.json, [['Hello, Bob Ross'], {}]);
  // the name in the certificate: localhost works too; without the CA curl refuses the server
  const byName = await h.curl(`https://localhost:${tlsPort}/healthz`, ['--cacert', file('ca.pem')]);
  assert.equal(byName.status, 200);
  const untrusted = await h.runCurl(['-sS', '-o', '/dev/null', rt.tlsUrl('/healthz')]);
  assert.equal(untrusted.code, 60, `curl without the CA must fail verification: ${untrusted.stderr}`);
  // errors keep their status over TLS; TLS 1.1 is refused
  const e = await curlTls('/greeting_service.nope', ['-X', 'POST', '-d', '[]']);
  assert.equal(e.status, 404);
  const old = await h.runCurl(['-sS', '--tls-max', '1.1', '--cacert', file('ca.pem'), rt.tlsUrl('/healthz')]);
  assert.notEqual(old.code, 0, 'a TLS 1.1 handshake must fail');
});

h.test('node https and http2 clients with the CA; ALPN picks h2, or http/1.1 when asked', async () => {
  const body = await new Promise((resolve, reject) => {
    const req = https.request(rt.tlsUrl('/greeting_service.hello'), { method: 'POST', ca: ca(), agent: false },
      (res) => {
        let data = '';
        res.setEncoding('utf8');
        res.on('data', (c) => { data += c; });
        res.on('end', () => resolve({ status: res.statusCode, data, alpn: res.socket.alpnProtocol }));
      });
    req.on('error', reject);
    req.end('[["Ann"], {"last_name": "Lee"}]');
  });
  assert.equal(body.status, 200);
  assert.deepEqual(JSON.parse(body.data), [['Hello, Ann Lee'], {}]);
  const session = http2.connect(`https://127.0.0.1:${tlsPort}`, { ca: ca() });
  session.on('error', () => {});
  try {
    await new Promise((resolve, reject) => { session.once('connect', resolve); session.once('error', reject); });
    assert.equal(session.alpnProtocol, 'h2');
    const res = await new Promise((resolve, reject) => {
      const req = session.request({ ':method': 'POST', ':path': '/greeting_service.hello' });
      let status, data = '';
      req.on('response', (hd) => { status = hd[':status']; });
      req.setEncoding('utf8');
      req.on('data', (c) => { data += c; });
      req.on('end', () => resolve({ status, data }));
      req.on('error', reject);
      req.end('[["Kim"], {}]');
    });
    assert.equal(res.status, 200);
    assert.deepEqual(JSON.parse(res.data), [['Hello, Kim '], {}]);
  } finally {
    session.close();
  }
  // a client offering only http/1.1 gets it acknowledged
  const alpn = await new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port: tlsPort, ca: ca(), ALPNProtocols: ['http/1.1'] },
      () => { const p = s.alpnProtocol; s.destroy(); resolve(p); });
    s.on('error', reject);
  });
  assert.equal(alpn, 'http/1.1');
});

h.test('WSS: autobahn over wss:// calls greeting_service.hello and receives a published event', async () => {
  const url = `wss://127.0.0.1:${tlsPort}/websocket`;
  // without the CA the client refuses the server: the TLS really is verified
  await assert.rejects(w.openSession(url, 'json', { timeout: 5000 }), /closed before WELCOME|not open/);
  for (const ser of w.SERIALIZERS) {
    const agent = new https.Agent({ ca: ca() });
    const s = await w.openSession(url, ser, { agent });
    try {
      assert.equal(s.connection.transport.info.protocol, `wamp.2.${ser}`);
      const r = await w.withTimeout(s.session.call('greeting_service.hello', ['Bob'], { last_name: 'Ross' }), 5000, 'CALL');
      assert.equal(r, 'Hello, Bob Ross');
      const sink = w.eventSink();
      await s.session.subscribe('websocket_test.websocket_test', sink.handler);
      // published by the Lua service, called over HTTPS
      const c = await curlTls('/websocket_test.hello_websocket', ['-X', 'POST', '-d', `[["${ser}"], {"over": "tls"}]`]);
      assert.equal(c.status, 200, c.body);
      const [ev] = await sink.waitCount(1, 5000, 'the event over wss');
      assert.deepEqual(ev.args, [ser]);
      assert.deepEqual(ev.kwargs, { over: 'tls' });
    } finally {
      w.closeSession(s);
      agent.destroy();
    }
  }
});

function rawExchange(port, payload) {
  // resolves with what the server sent back once it closed the connection
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port });
    const chunks = [];
    const t = setTimeout(() => { s.destroy(); reject(new Error('the server kept the connection open')); }, 15000);
    s.on('connect', () => s.write(payload));
    s.on('data', (d) => chunks.push(d));
    s.on('error', () => {});
    s.on('close', () => { clearTimeout(t); resolve(Buffer.concat(chunks)); });
  });
}

h.test('garbage and plain HTTP on the TLS port: the connection is closed, the server keeps serving', async () => {
  for (let i = 0; i < 3; i++) await rawExchange(tlsPort, crypto.randomBytes(512));
  const reply = await rawExchange(tlsPort, 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
  assert.ok(!reply.toString('latin1').includes('"status"'), 'no HTTP answer in clear text on the TLS port');
  // a TLS record header announcing a ClientHello, then nonsense
  await rawExchange(tlsPort, Buffer.concat([Buffer.from([0x16, 0x03, 0x01, 0x00, 0x40]), crypto.randomBytes(64)]));
  assert.ok(h.alive(rt.proc), 'still running');
  const r = await curlTls('/healthz');
  assert.equal(r.status, 200);
  const p = await h.post(rt, '/greeting_service.hello', [['plain'], {}]);
  assert.equal(p.status, 200, 'the plain listener serves alongside');
});

h.test('--http-redirect: plain requests get 308 to https (path and query kept), /healthz stays plain', async () => {
  const r = await startTls({ name: 'redirect', args: ['--http-redirect'] });
  try {
    const a = await h.curl(r.url('/greeting_service.hello?timeout=5'), ['-X', 'POST', '-d', '[["R"], {}]']);
    assert.equal(a.status, 308);
    assert.equal(a.headers.location, `https://127.0.0.1:${r.tlsPort}/greeting_service.hello?timeout=5`);
    const named = await h.curl(r.url('/app.js'), ['-H', `Host: localhost:${r.port}`]);
    assert.equal(named.status, 308);
    assert.equal(named.headers.location, `https://localhost:${r.tlsPort}/app.js`);
    const h2c = await h.curl(r.url('/x'), ['--http2-prior-knowledge']);
    assert.equal(h2c.httpVersion, 'HTTP/2');
    assert.equal(h2c.status, 308, 'h2c on the plain port is redirected too');
    const bad = await h.curl(r.url('/x'), ['-H', 'Host: a/b']);
    assert.equal(bad.status, 400, 'a Host that is no host name is refused');
    const health = await h.curl(r.url('/healthz'));
    assert.equal(health.status, 200);
    assert.equal(health.json.status, 'ok');
    // curl follows the 308 keeping the POST and its body
    const followed = await h.runCurl(['-sS', '-L', '--cacert', file('ca.pem'), '-d', '[["Follow"], {}]',
      '-w', '\n%{http_code} %{num_redirects} %{url_effective}', r.url('/greeting_service.hello')]);
    const [json, last] = followed.stdout.toString().split('\n');
    assert.equal(last, `200 1 https://127.0.0.1:${r.tlsPort}/greeting_service.hello`, followed.stderr);
    assert.deepEqual(JSON.parse(json), [['Hello, Follow '], {}]);
    // over TLS nothing is redirected
    const t = await h.curl(r.tlsUrl('/greeting_service.hello'), ['--cacert', file('ca.pem'), '-X', 'POST', '-d', '[["T"], {}]']);
    assert.equal(t.status, 200);
  } finally {
    const exit = await r.stop();
    assert.equal(exit.code, 0);
  }
});

h.test('--http off with TLS, two workers: the plain port is closed, HTTPS and WSS work', async () => {
  const r = await startTls({ name: 'tlsonly', plain: false, args: ['--workers', '2'] });
  try {
    assert.equal(await h.tcpConnectResult(r.port), 'refused', 'nothing listens on the plain port');
    const c = await h.curl(r.tlsUrl('/greeting_service.hello'), ['--cacert', file('ca.pem'), '-X', 'POST', '-d', '[["Solo"], {}]']);
    assert.equal(c.status, 200);
    assert.deepEqual(c.json, [['Hello, Solo '], {}]);
    const agent = new https.Agent({ ca: ca() });
    const s = await w.openSession(`wss://127.0.0.1:${r.tlsPort}/websocket`, 'json', { agent });
    try {
      assert.equal(await w.withTimeout(s.session.call('greeting_service.hello', ['W']), 5000, 'CALL'), 'Hello, W ');
    } finally {
      w.closeSession(s);
      agent.destroy();
    }
    // the first worker to answer made startTls return; wait for the other to be listening too
    await h.waitFor(() => (r.log().match(/listening on https:/g) || []).length === 2,
      { what: 'each worker to listen on the TLS port' });
    const log = r.log();
    assert.doesNotMatch(log, /listening on http:/);
  } finally {
    const exit = await r.stop();
    assert.equal(exit.code, 0);
  }
});

// Runs the program to its exit; resolves {code, output}.
function runToExit(args, timeout = 20000) {
  return new Promise((resolve, reject) => {
    const p = spawn(h.BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    p.stdout.on('data', (d) => { output += d; });
    p.stderr.on('data', (d) => { output += d; });
    const t = setTimeout(() => { p.kill('SIGKILL'); reject(new Error(`still running after ${timeout} ms: ${output}`)); }, timeout);
    p.on('exit', (code) => { clearTimeout(t); resolve({ code, output }); });
  });
}

h.test('bad start-ups: usage errors exit 2; a missing or mismatched certificate exits non-zero naming the file', async () => {
  const base = ['--nats', nats.url, '--http', '127.0.0.1:0', services];
  let r = await runToExit(['--https', '127.0.0.1:0', ...base]);
  assert.equal(r.code, 2, r.output);
  assert.match(r.output, /--https needs --tls-cert/);
  r = await runToExit(['--tls-cert', file('server.pem'), ...base]);
  assert.equal(r.code, 2, r.output);
  assert.match(r.output, /--tls-key/);
  r = await runToExit(['--http-redirect', ...base]);
  assert.equal(r.code, 2, r.output);
  const missing = file('missing.pem');
  r = await runToExit(['--tls-cert', missing, '--tls-key', file('server.key'), '--https', '127.0.0.1:0', ...base]);
  assert.notEqual(r.code, 0, r.output);
  assert.ok(r.output.includes(missing), `the message names ${missing}: ${r.output}`);
  assert.match(r.output, /No such file/);
  r = await runToExit(['--tls-cert', file('server.pem'), '--tls-key', file('other.key'), '--https', '127.0.0.1:0', ...base]);
  assert.notEqual(r.code, 0, r.output);
  assert.match(r.output, /TLS key .*other\.key does not match the certificate .*server\.pem/);
  r = await runToExit(['--tls-cert', file('server.key'), '--tls-key', file('server.key'), '--https', '127.0.0.1:0', ...base]);
  assert.notEqual(r.code, 0, r.output);
  assert.match(r.output, /TLS certificate .*server\.key/);
  // with workers the parent refuses at once instead of restarting failing workers
  r = await runToExit(['--workers', '2', '--tls-cert', missing, '--tls-key', file('server.key'), ...base]);
  assert.notEqual(r.code, 0, r.output);
  assert.ok(r.output.includes(missing), r.output);
  assert.doesNotMatch(r.output, /worker \d started/);
});

h.test('SIGTERM: idle keep-alive HTTP/1.1 and HTTP/2 TLS connections are closed, the exit is clean', async () => {
  const agent = new https.Agent({ ca: ca(), keepAlive: true });
  const { status, body, idle } = await new Promise((resolve, reject) => {
    https.get(rt.tlsUrl('/healthz'), { agent }, (res) => {
      const socket = res.socket; // back in the agent's pool, idle, once the body is read
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { text += d; });
      res.on('end', () => resolve({ status: res.statusCode, body: text, idle: socket }));
    }).on('error', reject);
  });
  assert.equal(status, 200, body);
  const idleClosed = new Promise((resolve) => idle.once('close', resolve));
  const session = http2.connect(`https://127.0.0.1:${tlsPort}`, { ca: ca() });
  session.on('error', () => {});
  await new Promise((resolve, reject) => { session.once('connect', resolve); session.once('error', reject); });
  const h2Closed = new Promise((resolve) => session.once('close', resolve));
  const exit = await Promise.race([rt.stop('SIGTERM'), h.sleep(15000).then(() => null)]);
  const log = () => `\n----- ${rt.logFile} -----\n${h.tail(rt.logFile, 30)}`;
  assert.ok(exit, `exited within 15 s with idle TLS connections open${log()}`);
  assert.deepEqual([exit.code, exit.signal], [0, null], `the exit${log()}`);
  await w.withTimeout(idleClosed, 5000, 'the idle HTTP/1.1 TLS connection to close');
  await w.withTimeout(h2Closed, 5000, 'the HTTP/2 TLS session to close');
  agent.destroy();
  assert.equal(await h.tcpConnectResult(tlsPort), 'refused', 'the TLS port is closed');
});
