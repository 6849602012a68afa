// bench/wamp_call.mjs: WAMP CALL round trips. S sessions (spread over W worker threads), each
// keeping O calls outstanding, call PROCEDURE with ["Bob"], {"last_name": "Ross"} for D seconds;
// every RESULT is checked against "Hello, Bob Ross" and its round trip timed.
//   node bench/wamp_call.mjs --url ws://127.0.0.1:PORT/websocket --pid PID [--sessions 64]
//        [--outstanding 1] [--workers 2] [--duration 10] [--serializer json|msgpack]
//        [--procedure greeting_service.hello]
// Prints one line: WAMPCALL calls_per_s=... p50_ms=... p99_ms=... max_ms=... calls=... errors=...
// server_cpu=...% server_us_per_call=... node_cpu=...% machine_busy=...% (CPU from /proc/PID/stat, process.cpuUsage and
// /proc/stat over the run).
// Exit status 1 if any call failed.
import { Worker, isMainThread, parentPort, workerData } from "node:worker_threads";
import { CALL, CLK_TCK, machineTicks, ERROR, RESULT, options, percentile, procStat, session } from "./wamp_lib.mjs";

const EXPECT = "Hello, Bob Ross";

if (isMainThread) await main();
else await worker(workerData);

async function worker({ url, count, outstanding, serializer, procedure }) {
  let running = false, calls = 0, errors = 0, closed = 0;
  const lat = [], firstErrors = [];
  const sessions = [];
  for (let k = 0; k < count; k++) {
    const sent = new Map(); // request id -> hrtime of the CALL
    let next = 1;
    const fire = (s) => {
      const id = next++;
      sent.set(id, process.hrtime.bigint());
      s.send([CALL, id, {}, procedure, ["Bob"], { last_name: "Ross" }]);
    };
    const s = await session(url, {
      serializer,
      onMessage: (m) => {
        const t0 = sent.get(m[m[0] === ERROR ? 2 : 1]);
        if (t0 === undefined) { errors++; return; }
        sent.delete(m[m[0] === ERROR ? 2 : 1]);
        if (m[0] === RESULT && m[3] && m[3][0] === EXPECT) {
          calls++;
          lat.push(Number(process.hrtime.bigint() - t0) / 1e6);
        } else {
          errors++;
          if (firstErrors.length < 3) firstErrors.push(JSON.stringify(m).slice(0, 200));
        }
        if (running) fire(s);
      },
      onClose: () => { closed++; },
    });
    s.fire = () => fire(s);
    s.sent = sent;
    sessions.push(s);
  }
  parentPort.postMessage({ type: "ready" });
  parentPort.on("message", (m) => {
    if (m.type === "start") {
      running = true;
      for (const s of sessions) for (let i = 0; i < outstanding; i++) s.fire();
    } else if (m.type === "stop") {
      running = false;
      // what is still outstanding at the end is not counted (like wrk)
      parentPort.postMessage({ type: "result", calls, errors, closed, firstErrors,
        lat: Float64Array.from(lat) });
      for (const s of sessions) s.close();
    }
  });
}

async function main() {
  const opt = options({ url: "", pid: 0, sessions: 64, outstanding: 1, workers: 2, duration: 10,
    serializer: "json", procedure: "greeting_service.hello" }, process.argv.slice(2), "wamp_call.mjs");
  if (!opt.url) { console.error("wamp_call.mjs: --url is required"); process.exit(2); }
  const workers = [];
  const waiters = [];
  const each = (type) => Promise.all(workers.map((_, w) => new Promise((res) => waiters[w].push({ type, res }))));
  for (let w = 0; w < opt.workers; w++) {
    const count = Math.floor(opt.sessions / opt.workers) + (w < opt.sessions % opt.workers ? 1 : 0);
    const wk = new Worker(new URL(import.meta.url), { workerData: { url: opt.url, count,
      outstanding: opt.outstanding, serializer: opt.serializer, procedure: opt.procedure } });
    waiters.push([]);
    wk.on("message", (m) => {
      const q = waiters[w], i = q.findIndex((x) => x.type === m.type);
      if (i >= 0) q.splice(i, 1)[0].res(m);
    });
    wk.on("error", (e) => { console.error(`wamp_call: worker ${w}: ${e.stack || e}`); process.exit(1); });
    workers.push(wk);
  }
  await each("ready");
  const cpu0 = procStat(opt.pid), node0 = process.cpuUsage(), sys0 = machineTicks();
  const t0 = process.hrtime.bigint();
  for (const wk of workers) wk.postMessage({ type: "start" });
  await new Promise((res) => setTimeout(res, opt.duration * 1000));
  const results = each("result");
  for (const wk of workers) wk.postMessage({ type: "stop" });
  const rs = await results;
  const wallS = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu1 = procStat(opt.pid), node1 = process.cpuUsage(), sys1 = machineTicks();
  const lat = Float64Array.from(rs.flatMap((r) => Array.from(r.lat))).sort();
  const calls = rs.reduce((a, r) => a + r.calls, 0), errors = rs.reduce((a, r) => a + r.errors, 0);
  const closed = rs.reduce((a, r) => a + r.closed, 0);
  for (const r of rs) for (const e of r.firstErrors) console.error(`wamp_call.mjs: error: ${e}`);
  console.log(`WAMPCALL calls_per_s=${(calls / wallS).toFixed(0)} p50_ms=${percentile(lat, 50).toFixed(3)}` +
    ` p99_ms=${percentile(lat, 99).toFixed(3)} max_ms=${(lat.length ? lat[lat.length - 1] : 0).toFixed(3)}` +
    ` calls=${calls} errors=${errors} closed_sessions=${closed} sessions=${opt.sessions}` +
    ` outstanding=${opt.sessions * opt.outstanding} workers=${opt.workers} serializer=${opt.serializer}` +
    ` server_cpu=${((cpu1.ticks - cpu0.ticks) / CLK_TCK / wallS * 100).toFixed(0)}%` +
    ` server_us_per_call=${((cpu1.ticks - cpu0.ticks) / CLK_TCK / Math.max(1, calls) * 1e6).toFixed(1)}` +
    ` node_cpu=${((node1.user - node0.user + node1.system - node0.system) / 1e6 / wallS * 100).toFixed(0)}%` +
    ` machine_busy=${((1 - (sys1.idle - sys0.idle) / Math.max(1, sys1.total - sys0.total)) * 100).toFixed(0)}%` +
    ` server_rss_kib=${cpu1.rss}`);
  await Promise.all(workers.map((wk) => wk.terminate()));
  process.exit(errors || closed ? 1 : 0);
}
