// HTTP/2 with prior knowledge, and HTTP/1.1 keep-alive, with curl.
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import http2 from 'node:http2';
import * as h from './lib/harness.mjs';

let dir, nats, rt;

before(async () => {
  dir = h.workDir('http2');
  nats = await h.startNats({ dir });
  rt = await h.startRuntime({ dir, natsUrl: nats.url, servicesDir: h.servicesDir(path.join(dir, 'services')) });
});

after(async () => { await h.stopAll(); });

h.test('curl --http2-prior-knowledge POST hello -> HTTP/2 200 [["Hello, Bob Ross"],{}]', async () => {
  const r = await h.curl(rt.url('/greeting_service.hello'),
    ['--http2-prior-knowledge', '-X', 'POST', '-d', '[["Bob"], {"last_name": "Ross"}]']);
  assert.match(r.statusLine, /^HTTP\/2 200\b/, r.statusLine);
  assert.equal(r.httpVersion, 'HTTP/2');
  assert.match(r.headers['content-type'] || '', /^application\/json/);
  assert.deepEqual(r.json, [['Hello, Bob Ross'], {}]);
});

h.test('HTTP/2: errors keep their status and body', async () => {
  const r = await h.curl(rt.url('/test_service.app_error'), ['--http2-prior-knowledge', '-X', 'POST', '-d', '[]']);
  assert.equal(r.httpVersion, 'HTTP/2');
  assert.equal(r.status, 418);
  assert.deepEqual(r.json, { error: 'app.error.custom', args: ['custom message'], kwargs: { detail: 1 } });
  const g = await h.curl(rt.url('/greeting_service.hello'), ['--http2-prior-knowledge']);
  assert.equal(g.httpVersion, 'HTTP/2');
  assert.equal(g.status, 405);
  assert.equal(g.headers.allow, 'POST');
});

h.test('HTTP/2: concurrent streams on one connection are answered independently', async () => {
  // node:http2 over cleartext (prior knowledge): one session, a slow stream and quick ones. The slow
  // call must not hold back the quick ones.
  const session = http2.connect(rt.base);
  session.on('error', () => {});
  const stream = (rpc, body) => new Promise((resolve, reject) => {
    const t0 = Date.now();
    const req = session.request({ ':method': 'POST', ':path': '/' + rpc, 'content-type': 'application/json' });
    let status; let data = '';
    req.on('response', (hdrs) => { status = hdrs[':status']; });
    req.setEncoding('utf8');
    req.on('data', (c) => { data += c; });
    req.on('end', () => resolve({ status, json: JSON.parse(data), at: Date.now(), ms: Date.now() - t0 }));
    req.on('error', reject);
    req.end(body);
  });
  try {
    const slow = stream('test_service.sleep', '[[1.5, "slow"]]');
    const quick = await Promise.all([1, 2, 3].map((i) => stream('test_service.echo_all', `[[${i}, "h2"]]`)));
    const s = await slow;
    for (const [i, q] of quick.entries()) {
      assert.equal(q.status, 200);
      assert.deepEqual(q.json, [[i + 1, 'h2'], {}]);
      assert.ok(q.at < s.at, 'a quick stream waited for the slow one');
    }
    assert.equal(s.status, 200);
    assert.deepEqual(s.json, [['slow'], { slept: 1.5 }]);
  } finally {
    session.close();
  }
});

h.test('HTTP/1.1 keep-alive: two requests over one connection', async () => {
  const url = rt.url('/greeting_service.hello');
  const res = await h.runCurl(['-sS', '-v', '--http1.1', '-X', 'POST', '-d', '[["Bob"], {"last_name": "Ross"}]',
    '-w', '\n%{http_code} %{num_connects}\n', url, url]);
  assert.equal(res.code, 0, res.stderr);
  const out = res.stdout.toString().trim().split('\n');
  // body, "200 1", body, "200 0"
  assert.equal(out.length, 4, res.stdout.toString());
  assert.deepEqual(JSON.parse(out[0]), [['Hello, Bob Ross'], {}]);
  assert.deepEqual(JSON.parse(out[2]), [['Hello, Bob Ross'], {}]);
  assert.equal(out[1], '200 1');
  assert.equal(out[3], '200 0', 'the second request reused the connection (no new connect)');
  assert.match(res.stderr, /Re-using existing connection/i);
  assert.ok(!/Connection: close/i.test(res.stderr.split('\n').filter((l) => l.startsWith('<')).join('\n')),
    'the server must not close after the first response');
});
