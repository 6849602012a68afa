// bench/wamp_fanout.mjs: WAMP fan-out. S sessions (spread over W worker threads) subscribe TOPIC;
// one more session publishes N events [[i], {}] back to back (no acknowledge), R rounds on the
// same sessions. Per round: deliveries counted across all sessions, wall time from the first
// PUBLISH to the last EVENT, events delivered per second, lost / duplicated / out-of-order events,
// the serving process's CPU (from /proc/PID/stat) and this Node process's CPU over the round.
//   node bench/wamp_fanout.mjs --url ws://127.0.0.1:PORT/websocket --pid PID [--sessions 1000]
//        [--events 200] [--rounds 5] [--workers 2] [--serializer json|msgpack]
//        [--topic bench.fanout] [--timeout-ms 30000]
// Prints SETUP and one FANOUT line per round, then TOTAL; exit status 1 if anything was lost.
import { Worker, isMainThread, parentPort, workerData } from "node:worker_threads";
import { CLK_TCK, EVENT, machineTicks, PUBLISH, SUBSCRIBE, SUBSCRIBED, options, procStat, session } from "./wamp_lib.mjs";

const now = () => process.hrtime.bigint(); // one monotonic clock for all threads
const ms = (ns) => Number(ns) / 1e6;

if (isMainThread) await main();
else await worker(workerData);

// ---- a worker thread: its share of the subscribers ----
async function worker({ url, count, serializer, topic, events }) {
  const state = []; // per session: next expected i, counters
  let delivered = 0, lost = 0, dup = 0, disorder = 0, closed = 0, closeReasons = new Map();
  let target = Infinity, lastNs = 0n, firstNs = 0n;
  const report = () => ({ delivered, dup, disorder, closed, closeReasons: [...closeReasons],
    lastNs, firstNs });
  const sessions = [];
  const open = async (k) => {
    const st = { next: 0, count: 0, seen: 0 };
    let subscribed;
    const ok = new Promise((res) => { subscribed = res; });
    const s = await session(url, {
      serializer,
      onMessage: (m) => {
        if (m[0] === EVENT) {
          const i = m[4][0];
          if (i < st.next) dup++; else if (i > st.next) disorder++;
          st.next = i + 1;
          st.count++;
          const t = now();
          if (!firstNs) firstNs = t;
          if (++delivered >= target && !lastNs) {
            lastNs = t;
            parentPort.postMessage({ type: "done", ...report() });
          }
        } else if (m[0] === SUBSCRIBED) subscribed(m[2]);
        else console.error(`wamp_fanout: session ${k}: unexpected ${JSON.stringify(m).slice(0, 200)}`);
      },
      onClose: (code, reason) => {
        closed++;
        const key = `${code} ${reason}`;
        closeReasons.set(key, (closeReasons.get(key) || 0) + 1);
      },
    });
    s.send([SUBSCRIBE, 1, {}, topic]);
    st.sub = await ok;
    sessions.push(s);
    state.push(st);
  };
  // connect in batches so as not to flood the listen backlog
  for (let k = 0; k < count; k += 50) {
    const batch = [];
    for (let j = k; j < Math.min(count, k + 50); j++) batch.push(open(j));
    await Promise.all(batch);
  }
  parentPort.postMessage({ type: "ready", subs: [...new Set(state.map((s) => s.sub))] });
  parentPort.on("message", (m) => {
    if (m.type === "round") { // expect `events` more per session from now on
      target = delivered + count * events;
      lastNs = 0n;
      firstNs = 0n;
      if (delivered >= target) parentPort.postMessage({ type: "done", ...report() });
    } else if (m.type === "report") {
      // per session: how many it is short of the events published so far
      lost = 0;
      for (const st of state) lost += Math.max(0, m.published - st.count);
      parentPort.postMessage({ type: "report", lost, ...report() });
    } else if (m.type === "exit") {
      for (const s of sessions) s.close();
      parentPort.postMessage({ type: "bye" });
    }
  });
}

// ---- the main thread: setup, publisher, figures ----
async function main() {
  const opt = options({ url: "", pid: 0, sessions: 1000, events: 200, rounds: 5, workers: 2,
    serializer: "json", topic: "bench.fanout", "timeout-ms": 30000 }, process.argv.slice(2),
  "wamp_fanout.mjs");
  if (!opt.url) { console.error("wamp_fanout.mjs: --url is required"); process.exit(2); }

  const rssIdle = procStat(opt.pid).rss;
  const tSetup = now();
  const workers = [];
  const inbox = []; // per worker: queue of resolvers waiting for a message of a type
  const wait = (w, type) => new Promise((res) => inbox[w].push({ type, res }));
  const each = (type) => Promise.all(workers.map((_, w) => wait(w, type)));
  for (let w = 0; w < opt.workers; w++) {
    const count = Math.floor(opt.sessions / opt.workers) + (w < opt.sessions % opt.workers ? 1 : 0);
    const wk = new Worker(new URL(import.meta.url), { workerData: { url: opt.url, count,
      serializer: opt.serializer, topic: opt.topic, events: opt.events } });
    inbox.push([]);
    wk.on("message", (m) => {
      const q = inbox[w], i = q.findIndex((x) => x.type === m.type);
      if (i >= 0) q.splice(i, 1)[0].res(m);
    });
    wk.on("error", (e) => { console.error(`wamp_fanout: worker ${w}: ${e.stack || e}`); process.exit(1); });
    workers.push(wk);
  }
  const ready = await each("ready");
  const setupMs = ms(now() - tSetup);
  const subIds = new Set(ready.flatMap((r) => r.subs));
  const rssSessions = procStat(opt.pid).rss;

  let pubClosed = null;
  const pub = await session(opt.url, { serializer: opt.serializer, onMessage: (m) => {
    console.error(`wamp_fanout: publisher got ${JSON.stringify(m).slice(0, 200)}`);
  }, onClose: (code, reason) => { pubClosed = `${code} ${reason}`; } });
  console.log(`SETUP sessions=${opt.sessions} workers=${opt.workers} serializer=${opt.serializer}` +
    ` setup_ms=${setupMs.toFixed(0)} subscription_ids=${subIds.size}` +
    ` rss_idle_kib=${rssIdle} rss_sessions_kib=${rssSessions}` +
    ` per_session_kib=${((rssSessions - rssIdle) / opt.sessions).toFixed(1)}`);

  let published = 0, totalDelivered = 0, totalNs = 0n, failed = false;
  for (let r = 1; r <= opt.rounds; r++) {
    const done = each("done"); // before "round": a worker may answer at once
    for (const wk of workers) wk.postMessage({ type: "round" });
    const cpu0 = procStat(opt.pid), node0 = process.cpuUsage(), sys0 = machineTicks();
    const t0 = now();
    for (let k = 0; k < opt.events; k++) pub.send([PUBLISH, published + k + 1, {}, opt.topic, [published + k], {}]);
    const tSent = now();
    published += opt.events;
    const timer = new Promise((res) => setTimeout(() => res(null), opt["timeout-ms"]));
    const got = await Promise.race([done, timer]);
    const cpu1 = procStat(opt.pid), node1 = process.cpuUsage(), sys1 = machineTicks();
    for (const wk of workers) wk.postMessage({ type: "report", published });
    const reps = await each("report");
    const lost = reps.reduce((a, x) => a + x.lost, 0);
    const delivered = reps.reduce((a, x) => a + x.delivered, 0) - totalDelivered;
    totalDelivered += delivered;
    const expected = opt.sessions * opt.events;
    const end = got ? got.reduce((a, x) => (x.lastNs > a ? x.lastNs : a), 0n) : now();
    const wallNs = end - t0;
    totalNs += wallNs;
    const wallS = Number(wallNs) / 1e9;
    const first = reps.reduce((a, x) => (x.firstNs && (!a || x.firstNs < a) ? x.firstNs : a), 0n);
    const closed = reps.reduce((a, x) => a + x.closed, 0);
    const reasons = reps.flatMap((x) => x.closeReasons).map(([k, n]) => `${n}x"${k}"`).join(",");
    const dup = reps.reduce((a, x) => a + x.dup, 0), disorder = reps.reduce((a, x) => a + x.disorder, 0);
    const nodeCpu = (node1.user - node0.user + node1.system - node0.system) / 1e6 / wallS;
    const busy = 1 - (sys1.idle - sys0.idle) / Math.max(1, sys1.total - sys0.total);
    console.log(`FANOUT round=${r} events=${opt.events} expected=${expected} delivered=${delivered}` +
      ` lost=${lost} dup=${dup} disorder=${disorder} closed_sessions=${closed}` +
      ` wall_ms=${(wallS * 1e3).toFixed(1)} publish_ms=${ms(tSent - t0).toFixed(1)}` +
      ` first_event_ms=${first ? ms(first - t0).toFixed(1) : "-"}` +
      ` events_per_s=${(delivered / wallS).toFixed(0)}` +
      ` server_cpu=${((cpu1.ticks - cpu0.ticks) / CLK_TCK / wallS * 100).toFixed(0)}%` +
      ` server_us_per_event=${((cpu1.ticks - cpu0.ticks) / CLK_TCK / Math.max(1, delivered) * 1e6).toFixed(1)}` +
      ` node_cpu=${(nodeCpu * 100).toFixed(0)}% machine_busy=${(busy * 100).toFixed(0)}%` +
      ` server_rss_kib=${cpu1.rss}` + (got ? "" : " TIMEOUT") + (reasons ? ` close_reasons=${reasons}` : ""));
    if (!got || lost || closed || pubClosed) { failed = true; break; }
  }
  const rssEnd = procStat(opt.pid);
  console.log(`TOTAL published=${published} delivered=${totalDelivered}` +
    ` expected=${published * opt.sessions} events_per_s=${(totalDelivered / (Number(totalNs) / 1e9)).toFixed(0)}` +
    ` server_rss_kib=${rssEnd.rss} server_hwm_kib=${rssEnd.hwm}` + (pubClosed ? ` publisher_closed="${pubClosed}"` : ""));
  pub.close();
  for (const wk of workers) wk.postMessage({ type: "exit" });
  await each("bye");
  await Promise.all(workers.map((wk) => wk.terminate()));
  process.exit(failed ? 1 : 0);
}
