// Outbound HTTP (issue 14, item 1): `require "microservice.http"` against a real external API,
// a Node http server and an https + HTTP/2 server (certificates made here with the openssl CLI),
// through the test service tests/blackbox/services_http/http_test.lua: GET/POST/json, headers,
// non-2xx returned, connection refused / DNS / certificate failures raising
// wamp.error.unavailable, timeouts raising wamp.error.timeout and closing the connection,
// certificate verification by default, with `ca` and off with `verify = false`, redirects only
// when asked, the body limit, keep-alive reuse, 50 requests in flight at once while
// greeting_service.hello answers, --http-client-max bounding the transfers, and a call abandoned
// at its caller's timeout aborting its transfer.
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import path from 'node:path';
import * as h from './lib/harness.mjs';
import { makePki } from './lib/pki.mjs';

const SERVICES = path.join(h.SOURCE_DIR, 'tests', 'blackbox', 'services_http');

let dir, nats, rt, pki, api, tlsApi;

// ---- the external API ----

// What the servers saw: connections opened, requests parked on /hold, sockets closed while a
// request of theirs was unanswered.
const seen = { connections: 0, held: [], maxHeld: 0, abortedHangs: 0 };

function handler(req, res) {
  const url = new URL(req.url, 'http://x');
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const body = Buffer.concat(chunks).toString();
    switch (url.pathname) {
      case '/echo': {
        const status = Number(url.searchParams.get('status') || 200);
        res.writeHead(status, { 'content-type': 'application/json', 'x-echo': 'yes', 'set-cookie': ['a=1', 'b=2'] });
        res.end(JSON.stringify({ method: req.method, url: req.url, headers: req.headers, body, version: req.httpVersion }));
        return;
      }
      case '/redirect':
        res.writeHead(302, { location: '/echo?from=redirect' });
        res.end();
        return;
      case '/loop':
        res.writeHead(302, { location: '/loop' });
        res.end();
        return;
      case '/big': { // n bytes, with a content-length or chunked
        const n = Number(url.searchParams.get('bytes'));
        const chunked = url.searchParams.get('chunked') === '1';
        res.writeHead(200, chunked ? { 'content-type': 'text/plain' } : { 'content-type': 'text/plain', 'content-length': n });
        const piece = Buffer.alloc(64 * 1024, 'x');
        let left = n;
        const more = () => {
          while (left > 0) {
            const part = piece.subarray(0, Math.min(left, piece.length));
            left -= part.length;
            if (!res.write(part)) return res.once('drain', more);
          }
          res.end();
        };
        more();
        return;
      }
      case '/hold': // answered when the test releases it
        seen.held.push(res);
        seen.maxHeld = Math.max(seen.maxHeld, seen.held.length);
        return;
      case '/hang': // never answered; counts the connection closed under it
        req.socket.once('close', () => { seen.abortedHangs++; });
        return;
      default:
        res.writeHead(404);
        res.end('no such path');
    }
  });
}

function releaseHeld(n = Infinity) {
  while (n-- > 0 && seen.held.length) {
    const res = seen.held.shift();
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end('released');
  }
}

function listen(server) {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server.address().port)));
}

// ---- calls ----

const apiUrl = (p) => `http://127.0.0.1:${api.port}${p}`;
const tlsUrl = (p) => `https://127.0.0.1:${tlsApi.port}${p}`;

// POST http_test.<rpc> with positional args; returns the first result (or the error reply).
async function call(r, rpc, args, { query = '' } = {}) {
  const res = await h.post(r, `http_test.${rpc}${query}`, [args, {}], { timeout: 60000 });
  if (res.status !== 200) return { httpStatus: res.status, json: res.json };
  return res.json[0][0];
}

before(async () => {
  dir = h.workDir('http_client');
  pki = makePki(dir);
  const plain = http.createServer(handler);
  plain.on('connection', () => { seen.connections++; });
  api = { server: plain, port: await listen(plain) };
  const secure = http2.createSecureServer({
    key: fs.readFileSync(path.join(pki, 'server.key')),
    cert: fs.readFileSync(path.join(pki, 'server.pem')),
    allowHTTP1: true,
  }, handler);
  tlsApi = { server: secure, port: await listen(secure) };
  nats = await h.startNats({ dir });
  const sdir = h.servicesDir(path.join(dir, 'services'), ['greeting.lua']);
  fs.symlinkSync(path.join(SERVICES, 'http_test.lua'), path.join(sdir, 'http_test.lua'));
  rt = await h.startRuntime({ dir, natsUrl: nats.url, servicesDir: sdir });
});

after(async () => {
  releaseHeld();
  await h.stopAll();
  api?.server.closeAllConnections?.();
  api?.server.close();
  tlsApi?.server.close();
});

h.test('GET with headers: status, lower-case response headers, body', async () => {
  const r = await call(rt, 'get', [apiUrl('/echo?x=1'), { headers: { 'X-Custom': 'value 1', Accept: 'application/json' } }]);
  assert.equal(r.status, 200, JSON.stringify(r));
  assert.equal(r.headers['x-echo'], 'yes');
  assert.equal(r.headers['content-type'], 'application/json');
  assert.equal(r.headers['set-cookie'], 'a=1, b=2', 'a repeated header is joined with ", "');
  const echo = JSON.parse(r.body);
  assert.equal(echo.method, 'GET');
  assert.equal(echo.url, '/echo?x=1');
  assert.equal(echo.headers['x-custom'], 'value 1');
  assert.equal(echo.headers.accept, 'application/json');
  assert.equal(echo.version, '1.1');
});

h.test('POST a string, POST a table as JSON, PUT with http.request', async () => {
  let r = await call(rt, 'post', [apiUrl('/echo'), 'plain text', { headers: { 'content-type': 'text/plain' } }]);
  let echo = JSON.parse(r.body);
  assert.equal(echo.method, 'POST');
  assert.equal(echo.body, 'plain text');
  assert.equal(echo.headers['content-type'], 'text/plain');

  r = await call(rt, 'post', [apiUrl('/echo'), { name: 'Bob', tags: ['a', 'b'], n: 1.5 }]);
  echo = JSON.parse(r.body);
  assert.equal(echo.headers['content-type'], 'application/json');
  assert.deepEqual(JSON.parse(echo.body), { name: 'Bob', tags: ['a', 'b'], n: 1.5 });

  r = await call(rt, 'request', [{ method: 'PUT', url: apiUrl('/echo'), json: { a: 1 } }]);
  echo = JSON.parse(r.body);
  assert.equal(echo.method, 'PUT');
  assert.equal(echo.body, '{"a":1}');

  r = await call(rt, 'request', [{ method: 'DELETE', url: apiUrl('/echo') }]);
  assert.equal(JSON.parse(r.body).method, 'DELETE');
});

h.test('a non-2xx status is returned, not raised', async () => {
  for (const status of [404, 500, 503]) {
    const r = await call(rt, 'get', [apiUrl(`/echo?status=${status}`)]);
    assert.equal(r.status, status, JSON.stringify(r));
    assert.equal(JSON.parse(r.body).url, `/echo?status=${status}`);
  }
});

h.test('connection refused and an unknown host raise wamp.error.unavailable', async () => {
  const closed = await h.freePort(); // nothing listens there
  let r = await call(rt, 'get', [`http://127.0.0.1:${closed}/`]);
  assert.equal(r.error?.uri, 'wamp.error.unavailable', JSON.stringify(r));
  assert.match(r.error.message, /connect/i);
  // uncaught, the error reaches the HTTP caller as 503
  r = await call(rt, 'status', [`http://127.0.0.1:${closed}/`]);
  assert.equal(r.httpStatus, 503);
  assert.equal(r.json.error, 'wamp.error.unavailable');
  r = await call(rt, 'get', ['http://no-such-host.invalid/', { timeout: 10 }]);
  assert.equal(r.error?.uri, 'wamp.error.unavailable', JSON.stringify(r));
  assert.match(r.error.message, /resolve/i);
});

h.test('the timeout raises wamp.error.timeout and closes the connection', async () => {
  const before = seen.abortedHangs;
  const r = await call(rt, 'request', [{ url: apiUrl('/hang'), timeout: 0.3 }]);
  assert.equal(r.error?.uri, 'wamp.error.timeout', JSON.stringify(r));
  assert.equal(r.error.code, 504);
  await h.waitFor(() => seen.abortedHangs > before, { timeout: 10000, what: 'the server to see the connection closed' });
});

h.test('a call abandoned at its caller\'s timeout aborts its transfer (default timeout: the time left)', async () => {
  const before = seen.abortedHangs;
  // no timeout given: the request gets at most the call's time left (1 s), not 60 s
  const r = await call(rt, 'status', [apiUrl('/hang')], { query: '?timeout=1' });
  assert.equal(r.httpStatus, 504, JSON.stringify(r));
  await h.waitFor(() => seen.abortedHangs > before, { timeout: 10000, what: 'the server to see the connection closed' });
  // and with a longer explicit timeout, the call's end aborts the transfer
  const again = seen.abortedHangs;
  const r2 = await call(rt, 'status', [apiUrl('/hang'), { timeout: 30 }], { query: '?timeout=1' });
  assert.equal(r2.httpStatus, 504, JSON.stringify(r2));
  await h.waitFor(() => seen.abortedHangs > again, { timeout: 10000, what: 'the server to see the abandoned call\'s connection closed' });
});

h.test('HTTPS verifies the certificate by default; passes with ca and with verify = false; HTTP/2', async () => {
  let r = await call(rt, 'get', [tlsUrl('/echo')]);
  assert.equal(r.error?.uri, 'wamp.error.unavailable', JSON.stringify(r));
  assert.match(r.error.message, /certificate/i);
  r = await call(rt, 'get', [tlsUrl('/echo'), { ca: path.join(pki, 'ca.pem') }]);
  assert.equal(r.status, 200, JSON.stringify(r));
  assert.equal(JSON.parse(r.body).version, '2.0', 'HTTP/2 over TLS (ALPN)');
  r = await call(rt, 'get', [tlsUrl('/echo'), { verify: false }]);
  assert.equal(r.status, 200, JSON.stringify(r));
  // the name is checked too: the certificate is for 127.0.0.1 and localhost, not 127.0.0.2
  r = await call(rt, 'get', [`https://127.0.0.2:${tlsApi.port}/echo`, { ca: path.join(pki, 'ca.pem'), timeout: 5 }]);
  assert.equal(r.error?.uri, 'wamp.error.unavailable', JSON.stringify(r));
});

h.test('redirects are followed only when asked (follow = n)', async () => {
  let r = await call(rt, 'get', [apiUrl('/redirect')]);
  assert.equal(r.status, 302);
  assert.equal(r.headers.location, '/echo?from=redirect');
  r = await call(rt, 'get', [apiUrl('/redirect'), { follow: 1 }]);
  assert.equal(r.status, 200);
  assert.equal(JSON.parse(r.body).url, '/echo?from=redirect');
  assert.equal(r.headers.location, undefined, 'the headers are the last response\'s');
  r = await call(rt, 'get', [apiUrl('/loop'), { follow: 3 }]);
  assert.equal(r.error?.uri, 'wamp.error.unavailable', JSON.stringify(r));
  assert.match(r.error.message, /redirect/i);
});

h.test('the response body limit: 16 MiB by default, max_body to change it, a clear error beyond', async () => {
  let r = await call(rt, 'get', [apiUrl('/big?bytes=1000'), { max_body: 1000 }]);
  assert.equal(r.body_len, 1000);
  for (const chunked of ['0', '1']) {
    r = await call(rt, 'get', [apiUrl(`/big?bytes=1001&chunked=${chunked}`), { max_body: 1000 }]);
    assert.equal(r.error?.uri, 'wamp.error.limit_exceeded', JSON.stringify(r));
    assert.match(r.error.message, /larger than max_body \(1000 bytes\)/);
  }
  r = await call(rt, 'length', [apiUrl(`/big?bytes=${16 * 1024 * 1024 + 1}&chunked=1`)]);
  assert.equal(r.error?.uri, 'wamp.error.limit_exceeded', JSON.stringify(r));
  assert.match(r.error.message, /16777216 bytes/);
  r = await call(rt, 'length', [apiUrl(`/big?bytes=${16 * 1024 * 1024}`)]);
  assert.equal(r.status, 200, JSON.stringify(r));
  assert.equal(r.body_len, 16 * 1024 * 1024);
});

h.test('bad options are a clear error at the caller\'s line', async () => {
  const cases = [
    [{ url: apiUrl('/echo'), timout: 1 }, /unknown option 'timout'/],
    [{ url: 'ftp://127.0.0.1/' }, /url must be a string starting with http:\/\/ or https:\/\//],
    [{ url: apiUrl('/echo'), headers: { 'X-A': 'a\r\nX-Injected: 1' } }, /no CR, LF or NUL/],
    [{ url: apiUrl('/echo'), body: 'x', json: {} }, /give body or json, not both/],
    [{ url: apiUrl('/echo'), timeout: -1 }, /timeout must be a number of seconds > 0/],
    [{ url: apiUrl('/echo'), follow: 99 }, /follow must be/],
  ];
  for (const [opts, re] of cases) {
    const r = await call(rt, 'request', [opts]);
    assert.match(r.error?.lua_error ?? '', re, JSON.stringify(r));
    assert.match(r.error.lua_error, /http_test\.lua:\d+: http\.request: /);
  }
});

h.test('keep-alive: sequential requests reuse one connection', async () => {
  await call(rt, 'get', [apiUrl('/echo')]);
  const before = seen.connections;
  for (let i = 0; i < 5; i++) assert.equal((await call(rt, 'get', [apiUrl('/echo')])).status, 200);
  assert.equal(seen.connections, before, 'no new connection for 5 requests');
});

h.test('50 requests in flight at once while greeting_service.hello answers', async () => {
  seen.maxHeld = 0;
  const many = call(rt, 'many', [apiUrl('/hold'), 50]);
  // all 50 reach the server before any is answered: they run concurrently
  await h.waitFor(() => seen.held.length === 50, { timeout: 20000, what: '50 requests held by the server at once' });
  const hello = await h.post(rt, 'greeting_service.hello', [['Bob'], {}]);
  assert.equal(hello.status, 200);
  assert.equal(seen.held.length, 50, 'hello answered while the 50 requests were still waiting');
  releaseHeld();
  assert.equal(await many, 50);
  assert.equal(seen.maxHeld, 50);
});

h.test('--http-client-max bounds the transfers at once; --http-client-queue the ones waiting', async () => {
  // its own bus: on the shared one, rt would take half of the calls (queue group)
  const nats2 = await h.startNats({ dir, name: 'nats2' });
  const small = await h.startRuntime({ dir, name: 'small', natsUrl: nats2.url, servicesDir: path.join(dir, 'services'), args: ['--http-client-max', '2', '--http-client-queue', '3'] });
  try {
    seen.maxHeld = 0;
    const many = call(small, 'many', [apiUrl('/hold'), 5]); // 2 in progress, 3 waiting
    await h.waitFor(() => seen.held.length === 2, { timeout: 20000, what: '2 held requests' });
    const over = await call(small, 'request', [{ url: apiUrl('/echo') }]);
    assert.equal(over.error?.uri, 'wamp.error.unavailable', JSON.stringify(over));
    assert.match(over.error.message, /too many outbound HTTP requests waiting \(2 in progress, 3 queued\)/);
    for (let answered = 0; answered < 5; answered++) {
      await h.waitFor(() => seen.held.length > 0, { timeout: 20000, what: 'a held request' });
      releaseHeld(1);
    }
    assert.equal(await many, 5);
    assert.equal(seen.maxHeld, 2, 'never more than 2 requests at the server at once');
  } finally {
    await small.stop();
  }
});
