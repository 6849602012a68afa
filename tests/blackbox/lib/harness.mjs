// Shared harness for the black-box tests: real nats-server, the real microservice binary, real clients.
//
// Environment (set by ctest; defaults work for a manual `node --test tests/blackbox/x.test.mjs`):
//   MICROSERVICE_BIN         the program under test (default <source>/build/microservice)
//   MICROSERVICE_SOURCE_DIR  the repository root (default: derived from this file's path)
//   MICROSERVICE_TEST_TMP    where every test file keeps its services dirs, logs and data
//   NATS_SERVER_BIN          nats-server (default: the one on PATH, else /usr/sbin/nats-server)

import { spawn, execFile } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test as nodeTest } from 'node:test';
import { connect as natsConnect, StringCodec } from 'nats';

const here = path.dirname(fileURLToPath(import.meta.url));

export const SOURCE_DIR = process.env.MICROSERVICE_SOURCE_DIR || path.resolve(here, '../../..');
export const BIN = process.env.MICROSERVICE_BIN || path.join(SOURCE_DIR, 'build', 'microservice');
export const TEST_TMP = process.env.MICROSERVICE_TEST_TMP || path.join(SOURCE_DIR, 'build', 'test-tmp');
export const SHIPPED_SERVICES = path.join(SOURCE_DIR, 'services');
export const TEST_SERVICES = path.join(SOURCE_DIR, 'tests', 'blackbox', 'services');

function findNatsServer() {
  if (process.env.NATS_SERVER_BIN) return process.env.NATS_SERVER_BIN;
  for (const dir of (process.env.PATH || '').split(':').concat(['/usr/sbin', '/usr/bin', '/usr/local/bin'])) {
    const p = path.join(dir, 'nats-server');
    try { fs.accessSync(p, fs.constants.X_OK); return p; } catch { /* next */ }
  }
  return 'nats-server';
}
export const NATS_SERVER = findNatsServer();

// setpriv --pdeathsig makes the kernel kill our children if this node process dies without running
// its exit hooks (e.g. ctest's timeout kill). Used when available.
const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => fs.existsSync(p));

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export const sc = StringCodec();

// ---------------------------------------------------------------------------------------------
// Children bookkeeping: everything we start is killed in teardown and on process exit.

const children = new Set();
const logFiles = new Set();

function killAllSync() {
  for (const c of children) {
    try { if (c.exitCode === null && c.signalCode === null) process.kill(c.pid, 'SIGKILL'); } catch { /* gone */ }
  }
}
process.on('exit', killAllSync);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => { killAllSync(); process.exit(128 + (sig === 'SIGINT' ? 2 : sig === 'SIGTERM' ? 15 : 1)); });
}

function spawnChild(cmd, args, { logFile, env, cwd } = {}) {
  const fd = fs.openSync(logFile, 'a');
  const argv = SETPRIV ? ['--pdeathsig', 'KILL', '--', cmd, ...args] : args;
  const file = SETPRIV ? SETPRIV : cmd;
  const child = spawn(file, argv, {
    stdio: ['ignore', fd, fd],
    env: { ...process.env, ...(env || {}) },
    cwd: cwd || SOURCE_DIR,
  });
  fs.closeSync(fd);
  children.add(child);
  logFiles.add(logFile);
  child.exited = new Promise((resolve) => {
    child.once('exit', (code, signal) => {
      children.delete(child);
      try { fs.appendFileSync(logFile, `# [harness] ${path.basename(cmd)} pid ${child.pid} exited: code ${code}, signal ${signal}\n`); } catch { /* ignore */ }
      resolve({ code, signal });
    });
    child.once('error', (err) => { children.delete(child); resolve({ code: null, signal: null, error: err }); });
  });
  return child;
}

export function alive(child) {
  return child.exitCode === null && child.signalCode === null && children.has(child);
}

// Stop a child: signal, wait up to graceMs, then SIGKILL. Returns {code, signal}.
export async function stopChild(child, signal = 'SIGTERM', graceMs = 5000) {
  if (!child) return null;
  if (!alive(child)) return child.exited;
  try { child.kill(signal); } catch { /* gone */ }
  const t = setTimeout(() => { try { child.kill('SIGKILL'); } catch { /* gone */ } }, graceMs);
  const res = await child.exited;
  clearTimeout(t);
  return res;
}

const runtimeLogs = new Set();
const SANITIZER_RE = /ERROR: (AddressSanitizer|LeakSanitizer|ThreadSanitizer)|\.c:\d+:\d+: runtime error:/;

// Sanitizer reports found in the logs of the runtimes started so far (for -DMICROSERVICE_SANITIZE=ON).
export function sanitizerReports() {
  const found = [];
  for (const f of runtimeLogs) {
    let text = '';
    try { text = fs.readFileSync(f, 'utf8'); } catch { continue; }
    const i = text.search(SANITIZER_RE);
    if (i >= 0) found.push(`${f}:\n${text.slice(Math.max(0, i - 200), i + 3000)}`);
  }
  return found;
}

// Kills every child still running, then fails if a runtime's log holds a sanitizer report.
export async function stopAll() {
  await Promise.all([...children].map((c) => stopChild(c, 'SIGKILL', 2000)));
  const reports = sanitizerReports();
  if (reports.length) throw new Error(`sanitizer reports in runtime logs:\n${reports.join('\n')}`);
}

// ---------------------------------------------------------------------------------------------
// Logs

export function tail(file, lines = 60) {
  try {
    const text = fs.readFileSync(file, 'utf8');
    return text.split('\n').slice(-lines).join('\n');
  } catch (e) {
    return `(no log: ${e.message})`;
  }
}

export function dumpLogs(lines = 60) {
  for (const f of logFiles) {
    process.stderr.write(`\n----- tail of ${f} -----\n${tail(f, lines)}\n----- end of ${f} -----\n`);
  }
}

// node:test's test(), printing the tails of every log of this file when the test fails.
export function test(name, opts, fn) {
  if (typeof opts === 'function') { fn = opts; opts = {}; }
  return nodeTest(name, opts, async (t) => {
    try {
      return await fn(t);
    } catch (e) {
      dumpLogs();
      throw e;
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Work dirs

function pidAlive(pid) {
  try { process.kill(pid, 0); return true; } catch (e) { return e.code === 'EPERM'; }
}

// A fresh directory for one test file: TEST_TMP/<name>-<pid>. Directories of earlier runs of the
// same file whose process is gone are removed; a run going on at the same time (another ctest in
// the same build tree) keeps its own.
export function workDir(name) {
  fs.mkdirSync(TEST_TMP, { recursive: true });
  for (const entry of fs.readdirSync(TEST_TMP)) {
    const m = entry.startsWith(name + '-') && /^(\d+)$/.exec(entry.slice(name.length + 1));
    if (m && Number(m[1]) !== process.pid && !pidAlive(Number(m[1]))) {
      fs.rmSync(path.join(TEST_TMP, entry), { recursive: true, force: true });
    }
  }
  const dir = path.join(TEST_TMP, `${name}-${process.pid}`);
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  return dir;
}

// Make a services dir under `dir` with symlinks to the named scripts. Names like "greeting.lua" are
// looked up in tests/blackbox/services first, then in services/.
export function servicesDir(dir, files = ['greeting.lua', 'websocket_test.lua', 'testsvc.lua']) {
  fs.mkdirSync(dir, { recursive: true });
  for (const f of files) {
    const candidates = [path.join(TEST_SERVICES, f), path.join(SHIPPED_SERVICES, f)];
    const src = candidates.find((p) => fs.existsSync(p));
    if (!src) throw new Error(`service script ${f} not found in ${candidates.join(' or ')}`);
    fs.symlinkSync(src, path.join(dir, f));
  }
  return dir;
}

// ---------------------------------------------------------------------------------------------
// Ports and polling

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

// Poll fn until it returns a truthy value (returned) or the deadline passes (throws with the last
// error/value). fn may be async; exceptions count as "not yet".
export async function waitFor(fn, { timeout = 15000, interval = 50, what = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
      last = v;
    } catch (e) {
      if (e && e.fatal) throw e;
      last = e;
    }
    if (Date.now() > deadline) {
      const detail = last instanceof Error ? last.message : JSON.stringify(last);
      throw new Error(`timed out after ${timeout} ms waiting for ${what} (last: ${detail})`);
    }
    await sleep(interval);
  }
}

// Resolves true if a TCP connection to host:port is accepted, false if refused/failed.
export function tcpProbe(port, host = '127.0.0.1', timeoutMs = 1000) {
  return new Promise((resolve) => {
    const s = net.connect({ port, host });
    const done = (ok, err) => { s.destroy(); resolve(ok ? true : false); };
    s.setTimeout(timeoutMs, () => done(false));
    s.once('connect', () => done(true));
    s.once('error', (e) => { s.lastError = e; done(false); });
  });
}

// Like tcpProbe but tells why: 'connected' | 'refused' | other error code.
export function tcpConnectResult(port, host = '127.0.0.1', timeoutMs = 1000) {
  return new Promise((resolve) => {
    const s = net.connect({ port, host });
    s.setTimeout(timeoutMs, () => { s.destroy(); resolve('timeout'); });
    s.once('connect', () => { s.destroy(); resolve('connected'); });
    s.once('error', (e) => { s.destroy(); resolve(e.code === 'ECONNREFUSED' ? 'refused' : e.code || e.message); });
  });
}

// ---------------------------------------------------------------------------------------------
// nats-server

// Reads the server's INFO line: proves it accepts connections and speaks NATS.
function natsInfo(port, timeoutMs = 1000) {
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host: '127.0.0.1' });
    let buf = '';
    s.setTimeout(timeoutMs, () => { s.destroy(); reject(new Error('timeout')); });
    s.on('data', (d) => {
      buf += d.toString();
      if (buf.includes('\r\n')) {
        s.destroy();
        if (buf.startsWith('INFO ')) resolve(true); else reject(new Error(`unexpected: ${buf}`));
      }
    });
    s.once('error', (e) => { s.destroy(); reject(e); });
  });
}

// config: optional text of a nats-server configuration file (written to <dir>/<name>-<port>.conf,
// returned as configFile; the listen address and port come from the command line).
// jetstream: true adds -js with its store in <dir>/<name>-<port>-js (under the build tree).
export async function startNats({ dir, port, name = 'nats', config, jetstream = false } = {}) {
  for (let attempt = 0; ; attempt++) {
    const p = port || await freePort();
    const logFile = path.join(dir, `${name}-${p}.log`);
    const configFile = config === undefined ? null : path.join(dir, `${name}-${p}.conf`);
    if (configFile) fs.writeFileSync(configFile, config);
    const js = jetstream ? ['-js', '-sd', path.join(dir, `${name}-${p}-js`)] : [];
    const proc = spawnChild(NATS_SERVER, [...(configFile ? ['-c', configFile] : []), ...js, '-a', '127.0.0.1', '-p', String(p), '-l', logFile], {
      logFile: path.join(dir, `${name}-${p}.stdio.log`),
    });
    logFiles.add(logFile);
    let exited = false;
    proc.exited.then(() => { exited = true; });
    try {
      await waitFor(async () => {
        if (exited) throw Object.assign(new Error(`nats-server exited early (code ${proc.exitCode})`), { fatal: true });
        return natsInfo(p);
      }, { timeout: 15000, what: `nats-server on port ${p}` });
    } catch (e) {
      await stopChild(proc, 'SIGKILL');
      if (!port && attempt < 3) continue; // a port race with a parallel test: try another port
      throw new Error(`${e.message}\n${tail(logFile, 20)}`);
    }
    return {
      port: p,
      url: `nats://127.0.0.1:${p}`,
      proc,
      logFile,
      configFile,
      stop: (signal = 'SIGTERM') => stopChild(proc, signal),
    };
  }
}

// A cluster of n nats-servers with JetStream (routes on loopback, stores in <dir>/<name><i>-js,
// under the build tree). Returns { servers, urls, url, stop, kill(i), start(i), untilReady() };
// each server { i, port, cport, mport, proc }. Every process is a harness child: stopAll() stops
// them too. untilReady waits until every running server is routed to the others and the
// JetStream meta group has a leader.
export async function startNatsCluster({ dir, n = 3, name = 'jsc' } = {}) {
  const servers = [];
  for (let i = 0; i < n; i++) servers.push({ i, port: await freePort(), cport: await freePort(), mport: await freePort() });
  const launch = (s) => {
    const routes = servers.filter((o) => o !== s).map((o) => `nats://127.0.0.1:${o.cport}`).join(',');
    const logFile = path.join(dir, `${name}${s.i}.log`);
    s.proc = spawnChild(NATS_SERVER, ['-a', '127.0.0.1', '-p', String(s.port), '-m', String(s.mport),
      '-n', `${name}${s.i}`, '-js', '-sd', path.join(dir, `${name}${s.i}-js`),
      '-cluster', `nats://127.0.0.1:${s.cport}`, '-routes', routes, '-cluster_name', name, '-l', logFile],
    { logFile: logFile + '.stdio' });
    logFiles.add(logFile);
  };
  const running = () => servers.filter((s) => s.proc && alive(s.proc));
  const monitor = async (s, what) => (await fetch(`http://127.0.0.1:${s.mport}/${what}`, { signal: AbortSignal.timeout(1000) })).json();
  const untilReady = () => waitFor(async () => {
    const live = running();
    for (const s of live) {
      if ((await monitor(s, 'routez')).num_routes < live.length - 1) return false;
      const jsz = await monitor(s, 'jsz');
      if (!jsz.meta_cluster || !jsz.meta_cluster.leader) return false;
    }
    return true;
  }, { timeout: 30000, interval: 100, what: `${n} nats-servers routed with a JetStream meta leader` });
  for (const s of servers) launch(s);
  await untilReady();
  return {
    servers,
    urls: servers.map((s) => `nats://127.0.0.1:${s.port}`),
    url: servers.map((s) => `nats://127.0.0.1:${s.port}`).join(','),
    kill: (i, signal = 'SIGKILL') => stopChild(servers[i].proc, signal),
    start: (i) => launch(servers[i]),
    untilReady,
    stop: () => Promise.all(servers.map((s) => stopChild(s.proc))),
  };
}

// ---------------------------------------------------------------------------------------------
// The runtime

// Starts the binary. opts:
//   natsUrl      nats://127.0.0.1:PORT (required)
//   servicesDir  the services folder
//   http         true (default: a free port), false ("--http off"), or a port number
//   args         extra command-line args (e.g. ['--call-timeout', '5'])
//   env          extra environment
//   name         log name
//   ready        'healthz' (default when http), {rpc: 'svc.method', payload} (NATS readiness), or false
// MICROSERVICE_TEST_PREFER_LOCAL=off runs every runtime with --prefer-local off (calls of RPCs
// served in the same process go over NATS): tests/CMakeLists.txt runs the semantic tests both
// ways. Tests that see the difference (a call on the bus or not) read preferLocal.
export const preferLocal = process.env.MICROSERVICE_TEST_PREFER_LOCAL !== 'off';

// The HTTP status of /healthz while the bus is down for a runtime that serves RPCs: 200
// ("degraded": its own RPCs still answer in-process) with --prefer-local on, else 503.
export const busDownHealth = preferLocal ? 200 : 503;

// Calls (tasks) running in rt, from /healthz through curl (node's fetch pool may be busy with the
// very calls being counted).
export async function inflight(rt) {
  return (await curl(rt.url('/healthz'))).json.inflight;
}

export async function startRuntime({ dir, natsUrl, servicesDir: sdir, http = true, args = [], env = {}, name = 'runtime', ready, logLevel = 'debug' } = {}) {
  for (let attempt = 0; ; attempt++) {
    const port = http === false ? null : (typeof http === 'number' ? http : await freePort());
    const logFile = path.join(dir, `${name}${port ? '-' + port : ''}.log`);
    const argv = [
      '--http', port ? `127.0.0.1:${port}` : 'off',
      '--nats', natsUrl,
      '--log-level', logLevel,
      ...(preferLocal || args.includes('--prefer-local') ? [] : ['--prefer-local', 'off']),
      ...args,
      sdir,
    ];
    fs.appendFileSync(logFile, `# ${BIN} ${argv.join(' ')}\n`);
    runtimeLogs.add(logFile);
    const proc = spawnChild(BIN, argv, { logFile, env });
    const rt = {
      proc,
      port,
      logFile,
      base: port ? `http://127.0.0.1:${port}` : null,
      url: (p) => `http://127.0.0.1:${port}${p}`,
      stop: (signal = 'SIGTERM', grace = 15000) => stopChild(proc, signal, grace),
      log: () => { try { return fs.readFileSync(logFile, 'utf8'); } catch { return ''; } },
    };
    const readiness = ready === undefined ? (port ? 'healthz' : false) : ready;
    try {
      if (readiness === 'healthz') {
        await waitFor(async () => {
          if (!alive(proc)) throw Object.assign(new Error(`microservice exited early (code ${proc.exitCode}, signal ${proc.signalCode})`), { fatal: true });
          const r = await fetch(rt.url('/healthz'), { signal: AbortSignal.timeout(2000) });
          const body = await r.text();
          if (r.status !== 200) throw new Error(`healthz ${r.status} ${body}`);
          const j = JSON.parse(body);
          if (j.status === 'ok' && j.nats === 'connected') return true;
          throw new Error(`healthz ${r.status} ${body}`);
        }, { timeout: 20000, what: `GET /healthz 200 on port ${port}` });
      } else if (readiness && readiness.rpc) {
        const nc = await natsConnect({ servers: natsUrl });
        try {
          await waitFor(async () => {
            if (!alive(proc)) throw Object.assign(new Error(`microservice exited early (code ${proc.exitCode}, signal ${proc.signalCode})`), { fatal: true });
            const m = await nc.request(readiness.rpc, sc.encode(readiness.payload || '[[], {}]'), { timeout: 1000 });
            return !(m.headers && m.headers.get('Nats-Service-Error-Code'));
          }, { timeout: 20000, what: `NATS request ${readiness.rpc} to answer` });
        } finally {
          await nc.close();
        }
      }
    } catch (e) {
      const log = rt.log();
      await stopChild(proc, 'SIGKILL');
      if (http === true && attempt < 2 && /in use|EADDRINUSE/i.test(log)) continue;
      throw new Error(`${e.message}\n----- ${logFile} -----\n${tail(logFile, 40)}`);
    }
    return rt;
  }
}

// ---------------------------------------------------------------------------------------------
// Clients

// POST an envelope (string | Buffer | object) with fetch. Returns {status, headers, text, json, ms}.
export async function post(rt, pathOrRpc, body, { timeout = 30000, method = 'POST', headers = {} } = {}) {
  const p = pathOrRpc.startsWith('/') ? pathOrRpc : '/' + pathOrRpc;
  const payload = body === undefined ? undefined
    : (typeof body === 'string' || Buffer.isBuffer(body)) ? body : JSON.stringify(body);
  const t0 = Date.now();
  const r = await fetch(rt.url(p), {
    method,
    body: payload,
    headers: { 'content-type': 'application/json', ...headers },
    signal: AbortSignal.timeout(timeout),
  });
  const text = await r.text();
  let json;
  try { json = JSON.parse(text); } catch { json = undefined; }
  return { status: r.status, headers: r.headers, text, json, ms: Date.now() - t0 };
}

// Run curl. Returns {code, stdout, stderr}. Never rejects on a non-zero exit.
export function runCurl(args, { timeout = 60000 } = {}) {
  return new Promise((resolve) => {
    execFile('curl', args, { encoding: 'buffer', maxBuffer: 64 * 1024 * 1024, timeout }, (err, stdout, stderr) => {
      resolve({ code: err ? (err.code ?? 1) : 0, stdout, stderr: stderr.toString(), killed: err?.killed });
    });
  });
}

// Parse `curl -i` output: skips 1xx blocks. Returns {status, httpVersion, statusLine, headers, body}.
export function parseCurlI(buf) {
  let rest = buf;
  for (;;) {
    const sep = rest.indexOf('\r\n\r\n');
    if (sep < 0) throw new Error(`no header block in curl output: ${rest.toString().slice(0, 200)}`);
    const head = rest.subarray(0, sep).toString('latin1');
    rest = rest.subarray(sep + 4);
    const [statusLine, ...hl] = head.split('\r\n');
    const m = /^(HTTP\/[\d.]+)\s+(\d{3})/.exec(statusLine);
    if (!m) throw new Error(`bad status line: ${statusLine}`);
    const status = Number(m[2]);
    if (status >= 100 && status < 200) continue;
    const headers = {};
    for (const l of hl) {
      const i = l.indexOf(':');
      if (i > 0) headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
    }
    return { status, httpVersion: m[1], statusLine, headers, body: rest.toString('utf8') };
  }
}

// curl -sS -i [extra] URL. Returns {status, httpVersion, statusLine, headers, body, json, stderr}.
export async function curl(url, extra = [], opts = {}) {
  const r = await runCurl(['-sS', '-i', ...extra, url], opts);
  if (r.code !== 0) throw new Error(`curl exited ${r.code}: ${r.stderr}`);
  const res = parseCurlI(r.stdout);
  try { res.json = JSON.parse(res.body); } catch { res.json = undefined; }
  res.stderr = r.stderr;
  return res;
}

export function natsClient(url, opts = {}) {
  return natsConnect({ servers: url, ...opts });
}

// The error body of the contract: {"error": uri, "args": [message, ...], "kwargs": {...}}.
export function assertErrorBody(assert, json, uri, text = '') {
  assert.ok(json && typeof json === 'object' && !Array.isArray(json), `error body must be an object, got: ${text}`);
  assert.equal(json.error, uri, `error uri in ${text}`);
  assert.ok(Array.isArray(json.args), `args must be an array in ${text}`);
  assert.ok(json.args.length >= 1 && typeof json.args[0] === 'string' && json.args[0].length > 0,
    `args[0] must be a non-empty message in ${text}`);
  assert.ok(json.kwargs && typeof json.kwargs === 'object' && !Array.isArray(json.kwargs),
    `kwargs must be an object in ${text}`);
}
