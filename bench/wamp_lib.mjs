// bench/wamp_lib.mjs: a tiny WAMP v2 client on the raw `ws` package for bench/wamp_fanout.mjs and
// bench/wamp_call.mjs. Only what the benchmarks need: HELLO/WELCOME, SUBSCRIBE, PUBLISH, CALL,
// and a per-message callback; JSON (text frames) or msgpack (binary frames, npm msgpack5).
// Not a general client: no reconnects, no GOODBYE on close.
import { readFileSync } from "node:fs";
import WebSocket from "ws";
import msgpack5 from "msgpack5";

export const HELLO = 1, WELCOME = 2, ABORT = 3, GOODBYE = 6, ERROR = 8, PUBLISH = 16, PUBLISHED = 17,
  SUBSCRIBE = 32, SUBSCRIBED = 33, EVENT = 36, CALL = 48, RESULT = 50;

const mp = msgpack5();

// Parses --name value pairs into a copy of defaults (numbers stay numbers).
export function options(defaults, argv, who) {
  const opt = { ...defaults };
  for (let i = 0; i < argv.length; i += 2) {
    const k = argv[i].replace(/^--/, "");
    if (!(k in opt)) { console.error(`${who}: unknown option ${argv[i]}`); process.exit(2); }
    opt[k] = typeof opt[k] === "number" ? Number(argv[i + 1]) : argv[i + 1];
  }
  return opt;
}

// CPU ticks (utime + stime) and VmRSS (KiB) of a process, from /proc; zeros if pid is 0 or gone.
export function procStat(pid) {
  if (!pid) return { ticks: 0, rss: 0, hwm: 0 };
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" "); // f[0] is field 3 (state)
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const kib = (name) => Number((status.match(new RegExp(`^${name}:\\s+(\\d+) kB`, "m")) || [0, 0])[1]);
    return { ticks: Number(f[11]) + Number(f[12]), rss: kib("VmRSS"), hwm: kib("VmHWM") };
  } catch { return { ticks: 0, rss: 0, hwm: 0 }; }
}
export const CLK_TCK = 100;

// Machine-wide CPU ticks from /proc/stat: { idle, total }; busy share = 1 - d(idle) / d(total).
export function machineTicks() {
  const f = readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/).slice(1).map(Number);
  return { idle: f[3] + f[4], total: f.reduce((a, b) => a + b, 0) };
} // sysconf(_SC_CLK_TCK) on Linux

// Opens a session: resolves { send(msg), close(), id, ws } once WELCOME arrives; onMessage(msg)
// gets every later message (already decoded). onClose(code, reason) when the socket closes.
export function session(url, { serializer = "json", realm = "realm1", onMessage, onClose } = {}) {
  return new Promise((resolve, reject) => {
    const proto = serializer === "msgpack" ? "wamp.2.msgpack" : "wamp.2.json";
    const ws = new WebSocket(url, [proto], { perMessageDeflate: false });
    const json = serializer !== "msgpack";
    const send = json ? (m) => ws.send(JSON.stringify(m)) : (m) => ws.send(mp.encode(m).slice());
    const decode = json ? (d) => JSON.parse(d) : (d) => mp.decode(d);
    let welcomed = false;
    const s = { ws, send, id: 0, close: () => ws.terminate() };
    ws.on("open", () => send([HELLO, realm, { roles: { subscriber: {}, publisher: {}, caller: {} } }]));
    ws.on("message", (data) => {
      const m = decode(data);
      if (!welcomed) {
        if (m[0] !== WELCOME) { reject(new Error(`expected WELCOME, got ${JSON.stringify(m)}`)); ws.terminate(); return; }
        welcomed = true;
        s.id = m[1];
        resolve(s);
        return;
      }
      onMessage(m);
    });
    ws.on("error", (e) => { if (!welcomed) reject(e); });
    ws.on("close", (code, reason) => {
      if (!welcomed) reject(new Error(`closed before WELCOME: ${code} ${reason}`));
      else if (onClose) onClose(code, String(reason));
    });
  });
}

// Percentile (0..100) of a sorted numeric array.
export function percentile(sorted, p) {
  if (!sorted.length) return 0;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}
