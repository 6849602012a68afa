// bench/cluster_failover.mjs: the failover half of bench/cluster (see bench/README.md).
//
// Three nats-servers clustered on loopback (routes), two instances of the runtime given all three
// (`--nats` in a different order each). wrk loads each instance (POST /greeting_service.hello,
// every body checked against the right answer by a generated wrk script); a Node probe sends one
// request to instance B every --probe-ms. At --at seconds the nats-server B is connected to and
// instance A are SIGKILLed. Prints, per instance, what wrk got (answers by status, wrong bodies,
// socket errors), and from the probe the time to recover.
//
//   node bench/cluster_failover.mjs --bin build/microservice --dir DIR --services DIR
//        [--duration 12] [--at 4] [--connections 32] [--probe-ms 10] [--call-timeout 3]
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { parseArgs } from 'node:util';

const { values: opt } = parseArgs({
  options: {
    bin: { type: 'string' }, dir: { type: 'string' }, services: { type: 'string' },
    duration: { type: 'string', default: '12' }, at: { type: 'string', default: '4' },
    connections: { type: 'string', default: '32' }, 'probe-ms': { type: 'string', default: '10' },
    'call-timeout': { type: 'string', default: '3' },
  },
});
const DURATION = Number(opt.duration);
const AT = Number(opt.at);
const PROBE_MS = Number(opt['probe-ms']);
const BODY = '[["Bob"], {"last_name": "Ross"}]';
const EXPECTED = '[["Hello, Bob Ross"],{}]';
const dir = opt.dir;
fs.rmSync(dir, { recursive: true, force: true });
fs.mkdirSync(dir, { recursive: true });

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const procs = new Set();
function run(cmd, args, log) {
  const fd = fs.openSync(log, 'a');
  const p = spawn(cmd, args, { stdio: ['ignore', fd, fd] });
  fs.closeSync(fd);
  procs.add(p);
  p.exited = new Promise((resolve) => p.once('exit', (code, signal) => { procs.delete(p); resolve({ code, signal }); }));
  return p;
}
function killAll() { for (const p of procs) { try { p.kill('SIGKILL'); } catch { /* gone */ } } }
process.on('exit', killAll);
for (const s of ['SIGINT', 'SIGTERM']) process.on(s, () => process.exit(130));

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}
async function waitFor(fn, ms, what) {
  const end = Date.now() + ms;
  for (;;) {
    try { if (await fn()) return; } catch { /* not yet */ }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}
const getJson = async (url) => (await fetch(url, { signal: AbortSignal.timeout(1000) })).json();

// ---- the cluster
const servers = [];
for (let i = 1; i <= 3; i++) servers.push({ i, port: await freePort(), cport: await freePort(), mport: await freePort() });
for (const s of servers) {
  const routes = servers.filter((o) => o !== s).map((o) => `nats://127.0.0.1:${o.cport}`).join(',');
  s.proc = run('nats-server', ['-a', '127.0.0.1', '-p', String(s.port), '-m', String(s.mport), '-n', `n${s.i}`,
    '-cluster', `nats://127.0.0.1:${s.cport}`, '-routes', routes, '-cluster_name', 'bench', '-l', path.join(dir, `nats-n${s.i}.log`)],
  path.join(dir, `nats-n${s.i}.stdio.log`));
}
await waitFor(async () => {
  for (const s of servers) if ((await getJson(`http://127.0.0.1:${s.mport}/routez`)).num_routes !== 2) return false;
  return true;
}, 20000, 'the three nats-servers to be routed');

// ---- the instances
const inst = { A: { order: [0, 1, 2] }, B: { order: [2, 0, 1] } };
for (const [name, x] of Object.entries(inst)) {
  x.port = await freePort();
  x.log = path.join(dir, `instance${name}.log`);
  x.proc = run(opt.bin, ['--http', `127.0.0.1:${x.port}`, '--nats', x.order.map((i) => `nats://127.0.0.1:${servers[i].port}`).join(','),
    '--call-timeout', opt['call-timeout'], '--log-level', 'info', opt.services], x.log);
}
for (const [name, x] of Object.entries(inst)) {
  await waitFor(async () => (await fetch(`http://127.0.0.1:${x.port}/healthz`)).status === 200, 20000, `instance ${name} healthy (log ${x.log})`);
  const r = await fetch(`http://127.0.0.1:${x.port}/greeting_service.hello`, { method: 'POST', body: BODY });
  const t = await r.text();
  if (t !== EXPECTED) throw new Error(`instance ${name} answered ${r.status} ${t}`);
}

// The nats-server instance B is connected to: its sockets (/proc/PID/fd) whose remote port is a
// server's client port (/proc/net/tcp).
function serverOf(pid) {
  const inodes = new Set();
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
    try { const m = /^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/${pid}/fd/${fd}`)); if (m) inodes.add(m[1]); } catch { /* closed */ }
  }
  for (const line of fs.readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 10 || !inodes.has(f[9]) || f[3] !== '01') continue; // ESTABLISHED
    const rport = parseInt(f[2].split(':')[1], 16);
    const s = servers.find((x) => x.port === rport);
    if (s) return s;
  }
  return null;
}
const victim = serverOf(inst.B.proc.pid);
if (!victim) throw new Error('cannot tell which nats-server instance B is connected to');

// ---- the load
const wrkScript = path.join(dir, 'check.lua');
fs.writeFileSync(wrkScript, `
wrk.method = "POST"
wrk.body = '${BODY}'
wrk.headers["Content-Type"] = "application/json"
local expected = '${EXPECTED}'
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) ok = 0; wrong = 0; codes = {} end
function response(status, headers, body)
  if status == 200 then
    if body == expected then ok = ok + 1 else wrong = wrong + 1 end
  else
    codes[tostring(status)] = (codes[tostring(status)] or 0) + 1
  end
end
function done(summary, latency, requests)
  local tok, twrong, tc = 0, 0, {}
  for _, t in ipairs(threads) do
    tok = tok + t:get("ok"); twrong = twrong + t:get("wrong")
    for k, v in pairs(t:get("codes")) do tc[k] = (tc[k] or 0) + v end
  end
  local parts = {}
  for k, v in pairs(tc) do parts[#parts + 1] = k .. ":" .. v end
  local e = summary.errors
  io.write(string.format("FAILOVER requests=%d ok=%d wrong=%d non200=%s connect=%d read=%d write=%d timeout=%d\\n",
    summary.requests, tok, twrong, #parts > 0 and table.concat(parts, ",") or "none", e.connect, e.read, e.write, e.timeout))
end
`);
const conns = Math.max(1, Math.floor(Number(opt.connections) / 2));
const wrks = {};
for (const [name, x] of Object.entries(inst)) {
  const out = path.join(dir, `wrk-${name}.txt`);
  wrks[name] = { out, proc: run('wrk', ['-t1', `-c${conns}`, `-d${DURATION}s`, '--timeout', '10s', '-s', wrkScript, `http://127.0.0.1:${x.port}/greeting_service.hello`], out) };
}

const probes = [];
let probing = true;
const probeLoop = (async () => {
  while (probing) {
    const t0 = Date.now();
    const p = { t0 };
    probes.push(p);
    fetch(`http://127.0.0.1:${inst.B.port}/greeting_service.hello`, { method: 'POST', body: BODY, signal: AbortSignal.timeout(15000) })
      .then(async (r) => { const t = await r.text(); p.ok = r.status === 200 && t === EXPECTED; p.wrong = r.status === 200 && !p.ok; p.what = `${r.status}`; })
      .catch((e) => { p.ok = false; p.what = e.cause?.code || e.name; })
      .finally(() => { p.t1 = Date.now(); });
    await sleep(PROBE_MS);
  }
})();

const tStart = Date.now();
await sleep(AT * 1000);
const tKill = Date.now();
inst.A.proc.kill('SIGKILL');
victim.proc.kill('SIGKILL');
await Promise.all(Object.values(wrks).map((w) => w.proc.exited));
probing = false;
await probeLoop;
await waitFor(() => probes.every((p) => p.t1), 20000, 'the last probes');

// ---- figures
const rel = (t) => `${t - tKill} ms`;
console.log(`killed at ${tKill - tStart} ms into a ${DURATION} s wrk run (-t1 -c${conns} per instance): instance A (pid ${inst.A.proc.pid}) and nats-server n${victim.i}, the one instance B was connected to`);
for (const name of ['A', 'B']) {
  const text = fs.readFileSync(wrks[name].out, 'utf8');
  const line = (/^FAILOVER .*$/m.exec(text) || ['(no summary: see ' + wrks[name].out + ')'])[0];
  console.log(`wrk on instance ${name}${name === 'A' ? ' (killed: connect errors after the kill are expected)' : ''}: ${line.replace(/^FAILOVER /, '')}`);
}
const after = probes.filter((p) => p.t0 >= tKill);
const failed = probes.filter((p) => !p.ok);
const failedAfter = after.filter((p) => !p.ok);
const wrongProbes = probes.filter((p) => p.wrong);
let recovered = tKill;
for (const p of after) if (!p.ok) recovered = Math.max(recovered, p.t0 + 1);
const firstOkAfter = after.find((p) => p.t0 >= recovered && p.ok);
const byKind = {};
for (const p of failed) byKind[p.what] = (byKind[p.what] || 0) + 1;
const logB = fs.readFileSync(inst.B.log, 'utf8');
const reconn = /^(\S+Z)\s+\S+\s+\[nats\][^\n]*reconnected[^\n]*$/m.exec(logB);
console.log(`probe to B every ${PROBE_MS} ms: ${probes.length} requests, ${failed.length} failed (${JSON.stringify(byKind)}), ${wrongProbes.length} wrong; ${failedAfter.length ? `failures from ${rel(Math.min(...failedAfter.map((p) => p.t0)))} to ${rel(Math.max(...failedAfter.map((p) => p.t1)))} after the kill; every probe sent from ${rel(recovered)} on answered correctly` : 'none failed after the kill'}${firstOkAfter ? '' : ' (no later probe)'}`);
console.log(`instance B log: ${reconn ? `${reconn[0].trim()} (${Date.parse(reconn[1]) - tKill} ms after the kill)` : 'no "reconnected" line'}`);
process.exitCode = wrongProbes.length ? 1 : 0;
killAll();
