// bench/idle_subs.mjs: the cost of idle subscriptions (issue 12, item 1; see bench/README.md,
// "Idle subscriptions"). For each binary given: start nats-server (free port) and the binary with
// the shipped services/, measure the median of SEQ sequential HTTP calls to
// greeting_service.hello (one keep-alive connection, one call at a time) and the server's CPU over
// an idle IDLE_S-second window; then open SESSIONS raw WAMP sessions x TOPICS subscriptions to
// distinct topics (nothing is ever published on them), wait for every SUBSCRIBED, and measure the
// same again. Binaries run one after the other, each with its own nats-server.
//   node bench/idle_subs.mjs [--seq 2000] [--sessions 30] [--topics 1000] [--idle 2] \
//        LABEL=PATH/TO/microservice [LABEL=PATH ...]
// Prints one line per binary and case:
//   IDLESUBS label=... subs=N p50_ms=... p90_ms=... p99_ms=... calls=... idle_cpu=...% call_cpu_us=...
import { spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { CLK_TCK, SUBSCRIBE, SUBSCRIBED, percentile, procStat, session } from "./wamp_lib.mjs";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const BODY = '[["Bob"], {"last_name": "Ross"}]';
const EXPECTED = '[["Hello, Bob Ross"],{}]';

const opt = { seq: 2000, sessions: 30, topics: 1000, idle: 2 };
const bins = [];
for (let i = 2; i < process.argv.length; i++) {
  const a = process.argv[i];
  if (a.startsWith("--")) opt[a.slice(2)] = Number(process.argv[++i]);
  else { const [label, bin] = a.split("="); bins.push({ label, bin: path.resolve(bin) }); }
}
if (!bins.length) { console.error("usage: node bench/idle_subs.mjs [--seq N] [--sessions N] [--topics N] [--idle S] LABEL=BIN ..."); process.exit(2); }

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "idle-subs-"));
const children = new Set();
process.on("exit", () => { for (const c of children) try { c.kill("SIGKILL"); } catch { /* gone */ } });

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on("error", reject);
    s.listen(0, "127.0.0.1", () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

function start(cmd, args, log) {
  const c = spawn(cmd, args, { stdio: ["ignore", fs.openSync(log, "a"), fs.openSync(log, "a")] });
  children.add(c);
  c.on("exit", () => children.delete(c));
  return c;
}

async function stop(c) {
  if (!children.has(c)) return;
  const gone = new Promise((r) => c.on("exit", r));
  c.kill("SIGTERM");
  await gone;
}

async function until(what, fn, ms = 20000) {
  const end = Date.now() + ms;
  for (;;) {
    try { if (await fn()) return; } catch { /* not yet */ }
    if (Date.now() > end) throw new Error(`idle_subs: ${what} not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const connects = (port) => new Promise((resolve) => {
  const s = net.connect(port, "127.0.0.1", () => { s.destroy(); resolve(true); });
  s.on("error", () => resolve(false));
});

// SEQ sequential calls; returns sorted latencies (ms) and the server's CPU ticks spent.
async function sequential(url, pid) {
  const lat = [];
  const t0 = procStat(pid).ticks;
  for (let i = 0; i < opt.seq; i++) {
    const s = process.hrtime.bigint();
    const r = await fetch(url, { method: "POST", body: BODY, headers: { "content-type": "application/json" } });
    const text = await r.text();
    if (text !== EXPECTED) throw new Error(`idle_subs: unexpected answer ${r.status} ${text}`);
    lat.push(Number(process.hrtime.bigint() - s) / 1e6);
  }
  return { lat: lat.sort((a, b) => a - b), ticks: procStat(pid).ticks - t0 };
}

async function idleCpu(pid) {
  const t0 = procStat(pid).ticks, w0 = Date.now();
  await new Promise((r) => setTimeout(r, opt.idle * 1000));
  return ((procStat(pid).ticks - t0) / CLK_TCK) / ((Date.now() - w0) / 1000) * 100;
}

async function subscribeAll(port) {
  const sessions = [];
  for (let k = 0; k < opt.sessions; k++) {
    let pending = opt.topics;
    let done;
    const all = new Promise((r) => { done = r; });
    const s = await session(`ws://127.0.0.1:${port}/websocket`, {
      onMessage: (m) => {
        if (m[0] !== SUBSCRIBED) throw new Error(`idle_subs: expected SUBSCRIBED, got ${JSON.stringify(m).slice(0, 200)}`);
        if (--pending === 0) done();
      },
    });
    for (let j = 0; j < opt.topics; j++) s.send([SUBSCRIBE, j + 1, {}, `idle.s${k}.t${j}`]);
    await all;
    sessions.push(s);
  }
  return sessions;
}

function report(label, subs, { lat, ticks }, idle) {
  console.log(`IDLESUBS label=${label} subs=${subs} p50_ms=${percentile(lat, 50).toFixed(3)} p90_ms=${percentile(lat, 90).toFixed(3)} ` +
    `p99_ms=${percentile(lat, 99).toFixed(3)} calls=${lat.length} idle_cpu=${idle.toFixed(1)}% ` +
    `call_cpu_us=${((ticks / CLK_TCK) * 1e6 / lat.length).toFixed(0)}`);
}

for (const { label, bin } of bins) {
  const natsPort = await freePort(), httpPort = await freePort();
  const nats = start("nats-server", ["-a", "127.0.0.1", "-p", String(natsPort)], path.join(tmp, `nats-${label}.log`));
  await until("nats-server", () => connects(natsPort));
  const rt = start(bin, ["--http", `127.0.0.1:${httpPort}`, "--nats", `nats://127.0.0.1:${natsPort}`,
    "--max-subscriptions", String(opt.topics + 10), "--log-level", "warn", path.join(ROOT, "services")],
  path.join(tmp, `runtime-${label}.log`));
  const base = `http://127.0.0.1:${httpPort}`;
  await until("/healthz", async () => (await fetch(`${base}/healthz`)).status === 200);
  const url = `${base}/greeting_service.hello`;
  await sequential(url, rt.pid); // warm-up
  report(label, 0, await sequential(url, rt.pid), await idleCpu(rt.pid));
  const sessions = await subscribeAll(httpPort);
  report(label, opt.sessions * opt.topics, await sequential(url, rt.pid), await idleCpu(rt.pid));
  for (const s of sessions) s.close();
  await stop(rt);
  await stop(nats);
}
fs.rmSync(tmp, { recursive: true, force: true });
