// HTTP/1 re-arm (runtime/epoll_rearm.c, --http1-rearm): h2o stops reading an HTTP/1 connection
// for each request and starts again after the answer; when the answer came in the same loop turn
// the runtime tells libuv that epoll still watches the descriptor, so keep-alive requests cost no
// epoll_ctl. Checked with strace (the system calls themselves, on and off) and /metrics, and the
// cases where the descriptor must not be taken as armed: a request pipelined behind a slow call
// (epoll reports the connection while it is paused, and libuv drops it), pipelined bursts, a
// client that closes mid-call. A wrongly re-armed descriptor would hang the connection (never read
// again) or spin the loop (an event nobody takes): the tests wait for every answer and check that
// the process is idle afterwards.
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import * as h from './lib/harness.mjs';

let dir, nats, on, off, nc;
const started = []; // tags test_service.sleep_notify published when it began

before(async () => {
  dir = h.workDir('http1_rearm');
  nats = await h.startNats({ dir });
  const sdir = h.servicesDir(dir, ['greeting.lua', 'testsvc.lua']);
  on = await h.startRuntime({ dir, natsUrl: nats.url, servicesDir: sdir, name: 'on', logLevel: 'info' });
  off = await h.startRuntime({ dir, natsUrl: nats.url, servicesDir: sdir, name: 'off', logLevel: 'info',
    args: ['--http1-rearm', 'off'] });
  nc = await h.natsClient(nats.url);
  nc.subscribe('test_service.started', { callback: (_, m) => started.push(JSON.parse(h.sc.decode(m.data))[0][0]) });
  await nc.flush();
});

after(async () => {
  if (nc) await nc.close().catch(() => {});
  await h.stopAll();
});

const HELLO = '[["Bob"], {"last_name": "Ross"}]';

function request(rpc, body) {
  return `POST /${rpc} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n` +
    `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
}

// One keep-alive connection that reads whole responses (Content-Length framed) in order.
async function connection(rt) {
  const sock = net.connect(rt.port, '127.0.0.1');
  await new Promise((resolve, reject) => { sock.once('connect', resolve); sock.once('error', reject); });
  let buf = Buffer.alloc(0);
  const waiting = [];
  const responses = [];
  const pump = () => {
    for (;;) {
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const head = buf.subarray(0, end).toString();
      const m = /content-length: *(\d+)/i.exec(head);
      const len = m ? Number(m[1]) : 0;
      if (buf.length < end + 4 + len) return;
      const status = Number(head.split(' ')[1]);
      const body = buf.subarray(end + 4, end + 4 + len).toString();
      buf = buf.subarray(end + 4 + len);
      responses.push({ status, body });
      while (waiting.length && responses.length) waiting.shift()(responses.shift());
    }
  };
  sock.on('data', (d) => { buf = Buffer.concat([buf, d]); pump(); });
  const next = (ms = 10000) => new Promise((resolve, reject) => {
    if (responses.length) return resolve(responses.shift());
    const t = setTimeout(() => reject(new Error(`no response within ${ms} ms (the connection is not read)`)), ms);
    waiting.push((r) => { clearTimeout(t); resolve(r); });
  });
  return { sock, send: (text) => sock.write(text), next, close: () => sock.destroy() };
}

async function metric(rt, name) {
  const text = await (await fetch(rt.url('/metrics'))).text();
  const m = new RegExp(`^${name} (\\d+)$`, 'm').exec(text);
  assert.ok(m, `${name} in /metrics`);
  return Number(m[1]);
}

// Counts the epoll_ctl calls of the process while fn runs (strace -c on all its threads).
async function epollCtlDuring(pid, fn) {
  const out = path.join(dir, `strace-${pid}-${Date.now()}.txt`);
  const st = spawn('strace', ['-f', '-c', '-e', 'trace=epoll_ctl', '-o', out, '-p', String(pid)],
    { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  st.stderr.on('data', (d) => { err += d; });
  // attached once strace says so for the main thread
  await h.waitFor(() => /attached/.test(err), { what: 'strace to attach', timeout: 10000 });
  await fn();
  const done = new Promise((resolve) => st.once('exit', resolve));
  st.kill('SIGINT');
  await done;
  const summary = fs.readFileSync(out, 'utf8');
  const line = summary.split('\n').find((l) => /\bepoll_ctl$/.test(l.trim()));
  return line ? Number(line.trim().split(/\s+/)[3]) : 0;
}

async function sequential(rt, n) {
  const c = await connection(rt);
  try {
    for (let i = 0; i < n; i++) {
      c.send(request('greeting_service.hello', HELLO));
      const r = await c.next();
      assert.equal(r.status, 200, r.body);
      assert.equal(r.body, '[["Hello, Bob Ross"],{}]');
    }
  } finally {
    c.close();
  }
}

function cpuSeconds(pid) {
  const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(f[11]) + Number(f[12])) / 100; // utime + stime, in clock ticks of 1/100 s
}

h.test('keep-alive requests answered at once make no epoll_ctl; with --http1-rearm off, two each', async () => {
  const N = 200;
  const before = await metric(on, 'microservice_http1_rearmed_total');
  const withRearm = await epollCtlDuring(on.proc.pid, () => sequential(on, N));
  const rearmed = (await metric(on, 'microservice_http1_rearmed_total')) - before;
  const without = await epollCtlDuring(off.proc.pid, () => sequential(off, N));
  assert.ok(rearmed >= N - 1, `${rearmed} of ${N} read restarts re-armed`);
  assert.ok(withRearm < N / 10, `${withRearm} epoll_ctl calls for ${N} requests with the re-arm`);
  assert.ok(without >= 2 * (N - 1), `${without} epoll_ctl calls for ${N} requests without it`);
  assert.equal(await metric(off, 'microservice_http1_rearmed_total'), 0);
});

for (const which of ['on', 'off']) {
  h.test(`--http1-rearm ${which}: a request pipelined behind a slow call is read, and the connection after it`, async () => {
    const rt = which === 'on' ? on : off;
    const c = await connection(rt);
    try {
      const tag = `slow-${which}`;
      c.send(request('test_service.sleep_notify', `[[0.3, "${tag}"], {}]`));
      // sent while the call runs, i.e. while h2o has stopped reading the connection: epoll
      // reports it, and libuv drops the descriptor
      await h.waitFor(() => started.includes(tag), { what: 'the slow call to start' });
      c.send(request('greeting_service.hello', HELLO));
      const slow = await c.next();
      assert.equal(slow.status, 200, slow.body);
      assert.match(slow.body, new RegExp(tag));
      const quick = await c.next();
      assert.equal(quick.status, 200, quick.body);
      for (let i = 0; i < 20; i++) {
        c.send(request('greeting_service.hello', HELLO));
        assert.equal((await c.next()).status, 200);
      }
    } finally {
      c.close();
    }
  });

  h.test(`--http1-rearm ${which}: bursts of pipelined requests are all answered, in order`, async () => {
    const rt = which === 'on' ? on : off;
    const c = await connection(rt);
    try {
      for (let burst = 0; burst < 20; burst++) {
        let text = '';
        for (let i = 0; i < 5; i++) text += request('greeting_service.hello', `[["B"], {"last_name": "${burst}-${i}"}]`);
        c.send(text);
        for (let i = 0; i < 5; i++) {
          const r = await c.next();
          assert.equal(r.status, 200, r.body);
          assert.equal(r.body, `[["Hello, B ${burst}-${i}"],{}]`);
        }
      }
    } finally {
      c.close();
    }
  });
}

h.test('clients that close mid-call and mid-request leave the others served, and the process idle', async () => {
  for (let i = 0; i < 20; i++) {
    const c = await connection(on);
    c.send(request('test_service.sleep', '[[0.05, "gone"], {}]'));
    c.send('POST /greeting_service.hello HTTP/1.1\r\nContent-Length: 50\r\n\r\n[["half'); // never finished
    c.close();
  }
  const clients = await Promise.all(Array.from({ length: 16 }, () => connection(on)));
  await Promise.all(clients.map(async (c, k) => {
    for (let i = 0; i < 50; i++) {
      c.send(request('greeting_service.hello', `[["C"], {"last_name": "${k}"}]`));
      const r = await c.next();
      assert.equal(r.body, `[["Hello, C ${k}"],{}]`);
    }
  }));
  // all 16 connections stay open and idle: a descriptor taken as armed by mistake would either
  // never be read again (the requests above would time out) or make the loop spin
  await h.waitFor(async () => await h.inflight(on) === 0, { what: 'no call in flight' });
  const t0 = cpuSeconds(on.proc.pid);
  const started = Date.now();
  await h.sleep(1000);
  const used = cpuSeconds(on.proc.pid) - t0;
  const wall = (Date.now() - started) / 1000;
  assert.ok(used < 0.3 * wall, `the idle process used ${used.toFixed(2)} s of CPU in ${wall.toFixed(2)} s`);
  for (const c of clients) c.close();
});
