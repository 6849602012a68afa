// bench/concurrent.mjs: fires N NATS requests at once at a sleeping RPC and reports how many got
// the right reply and the wall time from the first send to the last reply, while sampling the
// serving process's memory (VmRSS, VmHWM from /proc/PID/status).
//   node bench/concurrent.mjs --nats nats://127.0.0.1:4222 --pid PID [--n 10000]
//        [--subject bench_service.sleep_1s] [--expect '[["ok"],{}]'] [--timeout-ms 30000]
// Prints one line: CONCURRENT n=... ok=... failed=... wall_ms=... rss_before_kib=...
// rss_peak_kib=... hwm_kib=... (and the first few failures on stderr).
import { readFileSync } from "node:fs";
import { connect } from "nats";

const opt = { nats: "nats://127.0.0.1:4222", pid: 0, n: 10000, subject: "bench_service.sleep_1s",
  expect: '[["ok"],{}]', "timeout-ms": 30000 };
for (let i = 2; i < process.argv.length; i += 2) {
  const k = process.argv[i].replace(/^--/, "");
  if (!(k in opt)) { console.error(`concurrent.mjs: unknown option ${process.argv[i]}`); process.exit(2); }
  opt[k] = typeof opt[k] === "number" ? Number(process.argv[i + 1]) : process.argv[i + 1];
}

function mem(pid) {
  if (!pid) return { rss: 0, hwm: 0 };
  try {
    const s = readFileSync(`/proc/${pid}/status`, "utf8");
    const kib = (name) => Number((s.match(new RegExp(`^${name}:\\s+(\\d+) kB`, "m")) || [0, 0])[1]);
    return { rss: kib("VmRSS"), hwm: kib("VmHWM") };
  } catch { return { rss: 0, hwm: 0 }; }
}

const nc = await connect({ servers: opt.nats, maxPingOut: 10 });
const enc = new TextEncoder(), dec = new TextDecoder();
const body = enc.encode('[[], {}]');
const expect = JSON.stringify(JSON.parse(opt.expect));

const before = mem(opt.pid);
let rssPeak = before.rss;
const sampler = setInterval(() => { rssPeak = Math.max(rssPeak, mem(opt.pid).rss); }, 20);

let ok = 0, failed = 0;
const failures = [];
const t0 = performance.now();
let last = t0;
const calls = [];
for (let i = 0; i < opt.n; i++) {
  calls.push(nc.request(opt.subject, body, { timeout: opt["timeout-ms"] }).then(
    (m) => {
      last = performance.now();
      const got = dec.decode(m.data);
      let same = false;
      try { same = JSON.stringify(JSON.parse(got)) === expect; } catch { /* not JSON */ }
      if (same) ok++; else { failed++; if (failures.length < 5) failures.push(got); }
    },
    (err) => { last = performance.now(); failed++; if (failures.length < 5) failures.push(String(err)); }));
}
const sent = performance.now();
await Promise.all(calls);
clearInterval(sampler);
const after = mem(opt.pid);
rssPeak = Math.max(rssPeak, after.rss);
await nc.close();

for (const f of failures) console.error(`concurrent.mjs: failure: ${f}`);
console.log(`CONCURRENT n=${opt.n} ok=${ok} failed=${failed} wall_ms=${(last - t0).toFixed(0)} ` +
  `send_ms=${(sent - t0).toFixed(0)} rss_before_kib=${before.rss} rss_peak_kib=${rssPeak} ` +
  `hwm_kib=${after.hwm}`);
process.exit(failed ? 1 : 0);
