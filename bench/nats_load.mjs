// bench/nats_load.mjs: a closed-loop NATS request load at one RPC, without the HTTP front: C
// workers, each with one request outstanding, for D seconds (like wrk -cC, but over the bus
// straight to the service). Every reply is checked to be an envelope without an error header.
//   node bench/nats_load.mjs --nats nats://127.0.0.1:4222 --subject thing_service.create_thing
//        [--body '[[], {"name": "bench"}]'] [--concurrency 32] [--duration 10]
//        [--timeout-ms 5000]
// Prints one line: BENCH rps=... p50_ms=... p99_ms=... max_ms=... requests=... errors=...
// (the same fields as bench/post_*.lua) and the first few failures on stderr.
import { connect } from "nats";

const opt = { nats: "nats://127.0.0.1:4222", subject: "thing_service.create_thing",
  body: '[[], {"name": "bench"}]', concurrency: 32, duration: 10, "timeout-ms": 5000 };
for (let i = 2; i < process.argv.length; i += 2) {
  const k = process.argv[i].replace(/^--/, "");
  if (!(k in opt)) { console.error(`nats_load.mjs: unknown option ${process.argv[i]}`); process.exit(2); }
  opt[k] = typeof opt[k] === "number" ? Number(process.argv[i + 1]) : process.argv[i + 1];
}

const nc = await connect({ servers: opt.nats, maxPingOut: 10 });
const body = new TextEncoder().encode(opt.body);
const latencies = [];
const failures = [];
let errors = 0;
const t0 = performance.now();
const end = t0 + opt.duration * 1000;

async function worker() {
  while (performance.now() < end) {
    const start = performance.now();
    try {
      const m = await nc.request(opt.subject, body, { timeout: opt["timeout-ms"] });
      const failed = m.headers && m.headers.get("Nats-Service-Error");
      if (failed || m.data.length === 0 || m.data[0] !== 0x5b /* [ */) {
        errors++;
        if (failures.length < 5) failures.push(failed || new TextDecoder().decode(m.data));
        continue;
      }
      latencies.push(performance.now() - start);
    } catch (err) {
      errors++;
      if (failures.length < 5) failures.push(String(err));
    }
  }
}

await Promise.all(Array.from({ length: opt.concurrency }, worker));
const seconds = (performance.now() - t0) / 1000;
await nc.close();
latencies.sort((a, b) => a - b);
const pct = (p) => (latencies.length ? latencies[Math.min(latencies.length - 1,
  Math.floor(latencies.length * p))] : 0);
for (const f of failures) console.error(`nats_load.mjs: failure: ${f}`);
console.log(`BENCH rps=${(latencies.length / seconds).toFixed(0)} p50_ms=${pct(0.5).toFixed(3)} ` +
  `p99_ms=${pct(0.99).toFixed(3)} max_ms=${pct(1).toFixed(3)} requests=${latencies.length} ` +
  `errors=${errors}`);
