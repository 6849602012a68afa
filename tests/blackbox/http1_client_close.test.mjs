// A plain HTTP/1.1 client that closes its connection while its call runs (http_gateway.c,
// peer_check): h2o does not read the connection during a request, so the gateway peeks at the
// sockets of calls pending for a second. The close cancels the callee (in-process, or over the
// bus with $MS.CANCEL: the file runs both ways), counts an abandoned call and a 499. Clients that
// are still there are left alone: one waiting quietly, one that pipelined its next request.
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import * as h from './lib/harness.mjs';

let dir, nats, rt, nc;
const started = new Set(); // tags test_service.sleep_notify published when it began

before(async () => {
  dir = h.workDir('http1_client_close');
  nats = await h.startNats({ dir });
  const sdir = h.servicesDir(dir, ['greeting.lua', 'testsvc.lua']);
  rt = await h.startRuntime({ dir, natsUrl: nats.url, servicesDir: sdir });
  nc = await h.natsClient(nats.url);
  nc.subscribe('test_service.started', { callback: (_, m) => started.add(JSON.parse(h.sc.decode(m.data))[0][0]) });
  await nc.flush();
});

after(async () => {
  if (nc) await nc.close().catch(() => {});
  await h.stopAll();
});

function request(rpc, body) {
  return `POST /${rpc} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n` +
    `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
}

// Opens a connection, sends text, and collects what comes back until the server closes or
// `responses` answers have arrived (counted by their status lines).
function exchange(text, responses) {
  const sock = net.connect(rt.port, '127.0.0.1');
  let got = '';
  const done = new Promise((resolve, reject) => {
    sock.on('data', (d) => {
      got += d;
      if ((got.match(/HTTP\/1\.1 \d{3} /g) || []).length >= responses) resolve(got);
    });
    sock.on('error', reject);
    sock.on('close', () => resolve(got));
  });
  sock.write(text);
  return { sock, done };
}

async function metrics() {
  const text = await (await fetch(rt.url('/metrics'))).text();
  const value = (re) => Number((re.exec(text) || [])[1] || 0);
  return {
    abandoned: value(/^microservice_http_calls_abandoned_total\{sent="true"\} (\d+)$/m),
    closed: value(/^microservice_http_responses_total\{status="499"\} (\d+)$/m),
  };
}

h.test('a client that closes during a long call: the call is cancelled, counted, and the process goes on', async () => {
  const before = await metrics();
  const { sock } = exchange(request('test_service.sleep_notify', '[[30, "close-me"], {}]'), 1);
  await h.waitFor(() => started.has('close-me'), { what: 'the call to start' });
  sock.destroy();
  // the call would run 30 s; its cancellation shows well before
  await h.waitFor(() => /abandoned: its caller went away/.test(rt.log()), { timeout: 10000, what: 'the callee abandoned' });
  await h.waitFor(async () => await h.inflight(rt) === 0, { timeout: 10000, what: 'no call in flight' });
  const now = await metrics();
  assert.equal(now.abandoned - before.abandoned, 1, 'one abandoned call that had been sent');
  assert.equal(now.closed - before.closed, 1, 'one 499');
  const r = await h.post(rt, 'greeting_service.hello', [['Bob'], { last_name: 'Ross' }]);
  assert.equal(r.status, 200);
});

h.test('clients still there are not taken for gone: a quiet one, and one that pipelined its next request', async () => {
  const before = await metrics();
  const quiet = exchange(request('test_service.sleep_notify', '[[2.5, "quiet"], {}]'), 1);
  const piped = exchange(request('test_service.sleep_notify', '[[2.5, "piped"], {}]') +
    request('greeting_service.hello', '[["Pipe"], {}]'), 2);
  const [a, b] = await Promise.all([quiet.done, piped.done]);
  quiet.sock.destroy();
  piped.sock.destroy();
  assert.match(a, /^HTTP\/1\.1 200 [^]*\[\["quiet"\],\{\}\]/);
  assert.match(b, /^HTTP\/1\.1 200 [^]*\[\["piped"\],\{\}\][^]*HTTP\/1\.1 200 [^]*Hello, Pipe/);
  const now = await metrics();
  assert.deepEqual([now.abandoned - before.abandoned, now.closed - before.closed], [0, 0]);
});
