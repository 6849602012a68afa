// WAMP helpers for the black-box tests: autobahn (npm) sessions and a raw `ws` client that speaks
// wamp.2.json / wamp.2.msgpack frame by frame. Every socket opened here is tracked and closed by
// closeAllWamp() (call it in `after`, before h.stopAll()).
import fs from 'node:fs';
import path from 'node:path';
import WebSocket from 'ws';
import * as h from './harness.mjs';

// autobahn binds console.warn when it loads and warns on every close; keep the test output
// readable (AUTOBAHN_WARN=1 shows them).
const consoleWarn = console.warn;
console.warn = (...a) => { if (process.env.AUTOBAHN_WARN) consoleWarn(...a); };
const { default: autobahn } = await import('autobahn');
console.warn = consoleWarn;

export { autobahn, WebSocket };

export const MAX_ID = 2 ** 53;

export const MSG = {
  HELLO: 1, WELCOME: 2, ABORT: 3, GOODBYE: 6, ERROR: 8,
  PUBLISH: 16, PUBLISHED: 17, SUBSCRIBE: 32, SUBSCRIBED: 33, UNSUBSCRIBE: 34, UNSUBSCRIBED: 35, EVENT: 36,
  CALL: 48, CANCEL: 49, RESULT: 50, REGISTER: 64, REGISTERED: 65, UNREGISTER: 66, UNREGISTERED: 67,
  INVOCATION: 68, INTERRUPT: 69, YIELD: 70,
};

export const SERIALIZERS = ['json', 'msgpack'];

export function makeSerializer(ser) {
  if (ser === 'json') return new autobahn.serializer.JSONSerializer();
  if (ser === 'msgpack') return new autobahn.serializer.MsgpackSerializer();
  throw new Error(`unknown serializer ${ser}`);
}

// The same msgpack codec autobahn uses (msgpack5, forceFloat64), for the raw client.
const msgpackSer = new autobahn.serializer.MsgpackSerializer();

export function wsUrl(rt) { return `ws://127.0.0.1:${rt.port}/websocket`; }

export const json = (v) => JSON.stringify(v);
const w_json = json;

export function isId(v) { return Number.isInteger(v) && v >= 1 && v <= MAX_ID; }

// A promise with a deadline: rejects with `what` when ms pass.
export function withTimeout(promise, ms, what = 'operation') {
  let t;
  const timer = new Promise((_, reject) => { t = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms); });
  return Promise.race([Promise.resolve(promise), timer]).finally(() => clearTimeout(t));
}

// A one-shot signal: `await s.promise`, `s.resolve(v)`.
export function signal() {
  let resolve, reject;
  const promise = new Promise((res, rej) => { resolve = res; reject = rej; });
  return { promise, resolve, reject };
}

// ---------------------------------------------------------------------------------------------
// autobahn sessions

const connections = new Set();
const raws = new Set();

// Opens an autobahn Connection with one serializer and resolves {connection, session, details}
// once the session is joined (WELCOME). Rejects if the connection closes first or on the deadline.
// authmethods, authid and onchallenge are autobahn's own options (authentication); `agent` (an
// https.Agent, e.g. with the test CA) goes to the `ws` client autobahn uses in node.
export function openSession(url, ser, { realm = 'realm1', timeout = 10000, authmethods, authid, onchallenge, agent } = {}) {
  return new Promise((resolve, reject) => {
    const connection = new autobahn.Connection({
      url,
      realm,
      ...(authmethods ? { authmethods } : {}),
      ...(authid ? { authid } : {}),
      ...(onchallenge ? { onchallenge } : {}),
      serializers: [makeSerializer(ser)],
      max_retries: 0,
      retry_if_unreachable: false,
      autoping_interval: 60000,
      // autobahn hands `agent` to `ws` only from a transport's own options
      ...(agent ? { transports: [{ type: 'websocket', url, agent }] } : {}),
    });
    connections.add(connection);
    let opened = false;
    const closed = signal();
    const t = setTimeout(() => { if (!opened) { try { connection.close(); } catch { /* */ } reject(new Error(`autobahn session to ${url} (${ser}) not open after ${timeout} ms`)); } }, timeout);
    connection.onopen = (session, details) => {
      opened = true;
      clearTimeout(t);
      resolve({ connection, session, details, closed: closed.promise, ser });
    };
    connection.onclose = (reason, details) => {
      connections.delete(connection);
      closed.resolve({ reason, details });
      if (!opened) { clearTimeout(t); reject(new Error(`autobahn connection closed before WELCOME: ${reason} ${JSON.stringify(details)}`)); }
      return true; // never retry
    };
    connection.open();
  });
}

export function closeSession(s) {
  try { s.connection.close(); } catch { /* already closed */ }
}

// Asserts that a promise rejects with an autobahn Error of the given URI; returns the error.
export async function expectWampError(assert, promise, uri, what = '') {
  let err;
  try {
    const v = await promise;
    assert.fail(`${what}: expected ${uri}, got a result: ${JSON.stringify(v)}`);
  } catch (e) {
    if (e && e.code === 'ERR_ASSERTION') throw e;
    err = e;
  }
  assert.equal(err && err.error, uri, `${what}: error URI (got ${JSON.stringify(err && (err.error ? { error: err.error, args: err.args, kwargs: err.kwargs } : String(err)))})`);
  assert.ok(Array.isArray(err.args), `${what}: error args is an array`);
  return err;
}

// Collects events of a subscription; `waitCount(n)` waits until n have arrived.
export function eventSink() {
  const events = [];
  const waiters = [];
  const handler = (args, kwargs, details) => {
    events.push({ args, kwargs, details });
    for (const w of [...waiters]) if (w.pred(events)) { waiters.splice(waiters.indexOf(w), 1); w.resolve(events); }
  };
  const until = (pred, ms = 5000, what = 'events') => {
    if (pred(events)) return Promise.resolve(events);
    const s = signal();
    waiters.push({ pred, resolve: s.resolve });
    return withTimeout(s.promise, ms, `${what} (have ${JSON.stringify(events.map((e) => [e.args, e.kwargs]))})`);
  };
  return { events, handler, until, waitCount: (n, ms, what) => until((ev) => ev.length >= n, ms, what || `${n} events`) };
}

// ---------------------------------------------------------------------------------------------
// The raw client

export function encode(ser, msg) {
  return ser === 'json' ? JSON.stringify(msg) : msgpackSer.serialize(msg);
}

// A raw WAMP client over `ws`. RawWamp.connect(url, ser) resolves once the WebSocket is open (no
// HELLO yet); .hello() does the HELLO/WELCOME. Messages are decoded into .messages; .next(pred)
// waits for the next one matching pred (consumed in order).
export class RawWamp {
  constructor(ws, ser) {
    this.ws = ws;
    this.ser = ser;
    this.messages = [];     // decoded WAMP messages not yet consumed by next()
    this.all = [];          // every decoded message
    this.frames = [];       // {binary, bytes} for every frame received
    this.decodeErrors = [];
    this.waiters = [];
    this.nextRequest = 1;
    this.counts = {};       // received messages per type
    this.dropEvents = false; // when true, EVENTs are counted but not kept (large volumes)
    const closed = signal();
    this.closed = closed.promise;
    this.closeInfo = null;
    ws.on('message', (data) => {
      const binary = typeof data !== 'string';
      this.frames.push({ binary, bytes: binary ? data.length : Buffer.byteLength(data) });
      let msg;
      try {
        msg = binary ? msgpackSer.unserialize(data) : JSON.parse(data);
      } catch (e) {
        this.decodeErrors.push(e.message);
        return;
      }
      if (Array.isArray(msg)) this.counts[msg[0]] = (this.counts[msg[0]] || 0) + 1;
      if (this.dropEvents && Array.isArray(msg) && msg[0] === MSG.EVENT) { this._wake(); return; }
      this.all.push(msg);
      this.messages.push(msg);
      this._wake();
    });
    ws.on('close', (code, reason) => {
      this.closeInfo = { code, reason: String(reason || '') };
      raws.delete(this);
      closed.resolve(this.closeInfo);
      this._wake();
    });
    ws.on('error', (e) => { this.lastError = e; });
  }

  static connect(url, ser, { protocols, timeout = 10000 } = {}) {
    const protos = protocols !== undefined ? protocols : [`wamp.2.${ser}`];
    return new Promise((resolve, reject) => {
      const ws = protos === null ? new WebSocket(url, { perMessageDeflate: false })
        : new WebSocket(url, protos, { perMessageDeflate: false, maxPayload: 256 * 1024 * 1024 });
      const raw = new RawWamp(ws, ser);
      raws.add(raw);
      const t = setTimeout(() => { ws.terminate(); reject(new Error(`raw ws to ${url} not open after ${timeout} ms`)); }, timeout);
      ws.once('open', () => { clearTimeout(t); resolve(raw); });
      ws.once('unexpected-response', (req, res) => {
        clearTimeout(t);
        let body = '';
        res.on('data', (d) => { body += d; });
        res.on('end', () => {
          const e = new Error(`upgrade refused: HTTP ${res.statusCode}`);
          e.statusCode = res.statusCode; e.body = body; e.headers = res.headers;
          reject(e);
        });
        res.on('error', () => { /* ignore */ });
      });
      ws.once('error', (e) => { clearTimeout(t); reject(e); });
    });
  }

  // Opens and says HELLO; resolves with the WELCOME message.
  static async session(url, ser, opts = {}) {
    const raw = await RawWamp.connect(url, ser, opts);
    raw.welcome = await raw.hello(opts.realm);
    return raw;
  }

  async hello(realm = 'realm1', details = { roles: { publisher: {}, subscriber: {}, caller: {}, callee: {} } }) {
    this.send([MSG.HELLO, realm, details]);
    const m = await this.next(null, 10000, 'WELCOME');
    if (m[0] !== MSG.WELCOME) throw new Error(`expected WELCOME, got ${JSON.stringify(m)}`);
    this.sessionId = m[1];
    return m;
  }

  req() { return this.nextRequest++; }

  send(msg) { this.ws.send(encode(this.ser, msg), { binary: this.ser !== 'json' }); }

  sendRaw(data, binary) { this.ws.send(data, { binary }); }

  // Resolves when `n` messages of `type` have been received in all (counted even if dropped).
  waitCount(type, n, ms = 10000, what = `${n} messages of type ${type}`) {
    return h.waitFor(() => {
      if ((this.counts[type] || 0) >= n) return true;
      if (this.closeInfo) throw Object.assign(new Error(`socket closed (${w_json(this.closeInfo)}) with ${this.counts[type] || 0} of ${what}`), { fatal: true });
      return false;
    }, { timeout: ms, interval: 5, what });
  }

  _wake() {
    for (const w of [...this.waiters]) {
      const i = this.messages.findIndex(w.pred);
      if (i >= 0) {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        const [m] = this.messages.splice(i, 1);
        w.resolve(m);
      } else if (this.closeInfo) {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        w.reject(new Error(`socket closed (${JSON.stringify(this.closeInfo)}) while waiting for ${w.what}; got ${JSON.stringify(this.all).slice(0, 500)}`));
      }
    }
  }

  // The next message matching pred (default: any), removed from the queue.
  next(pred, ms = 5000, what = 'a message') {
    const p = typeof pred === 'function' ? pred : pred == null ? () => true
      : (m) => m[0] === pred;
    const i = this.messages.findIndex(p);
    if (i >= 0) return Promise.resolve(this.messages.splice(i, 1)[0]);
    if (this.closeInfo) return Promise.reject(new Error(`socket closed (${JSON.stringify(this.closeInfo)}) before ${what}; got ${JSON.stringify(this.all).slice(0, 500)}`));
    const s = signal();
    this.waiters.push({ pred: p, resolve: s.resolve, reject: s.reject, what });
    return withTimeout(s.promise, ms, `${what} (received so far: ${JSON.stringify(this.all).slice(0, 500)})`);
  }

  // Sends msg and waits for the reply of type `replyType` (or ERROR) carrying the same request id.
  async request(msg, replyType, ms = 5000) {
    const id = msg[1];
    this.send(msg);
    return this.next((m) => (m[0] === replyType && m[1] === id) || (m[0] === MSG.ERROR && m[1] === msg[0] && m[2] === id), ms, `reply ${replyType} to ${JSON.stringify(msg).slice(0, 200)}`);
  }

  async subscribe(topic, options = {}) {
    const m = await this.request([MSG.SUBSCRIBE, this.req(), options, topic], MSG.SUBSCRIBED);
    if (m[0] !== MSG.SUBSCRIBED) throw new Error(`SUBSCRIBE ${topic} refused: ${JSON.stringify(m)}`);
    return m[2];
  }

  async register(procedure, options = {}) {
    const m = await this.request([MSG.REGISTER, this.req(), options, procedure], MSG.REGISTERED);
    if (m[0] !== MSG.REGISTERED) throw new Error(`REGISTER ${procedure} refused: ${JSON.stringify(m)}`);
    return m[2];
  }

  // Waits for the close; resolves {code, reason}.
  waitClosed(ms = 5000, what = 'the router to close the socket') {
    return withTimeout(this.closed, ms, `${what} (received: ${JSON.stringify(this.all).slice(0, 300)})`);
  }

  terminate() { try { this.ws.terminate(); } catch { /* */ } }
}

export async function closeAllWamp() {
  for (const c of [...connections]) { try { c.close(); } catch { /* */ } }
  for (const r of [...raws]) r.terminate();
  connections.clear();
  raws.clear();
}

// ---------------------------------------------------------------------------------------------
// Processes

export const WAMP_SERVICES = path.join(h.SOURCE_DIR, 'tests', 'blackbox', 'services_wamp');

// A services dir with the example services, tests/blackbox/services/testsvc.lua and the WAMP test
// service tests/blackbox/services_wamp/wamp_test.lua.
export function wampServicesDir(dir) {
  const sdir = h.servicesDir(dir, ['greeting.lua', 'websocket_test.lua', 'testsvc.lua']);
  for (const f of fs.readdirSync(WAMP_SERVICES)) {
    if (f.endsWith('.lua')) fs.symlinkSync(path.join(WAMP_SERVICES, f), path.join(sdir, f));
  }
  return sdir;
}

// Resident set size and its peak (kB) of a pid, from /proc.
export function memoryKb(pid) {
  const text = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const get = (k) => Number((new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(text) || [])[1]);
  return { rss: get('VmRSS'), hwm: get('VmHWM') };
}

// True when GET /websocket with wamp.2.json upgrades and answers HELLO with WELCOME.
export async function routerWorks(rt) {
  try {
    const r = await RawWamp.session(wsUrl(rt), 'json', { timeout: 3000 });
    r.terminate();
    return true;
  } catch {
    return false;
  }
}

// The router answers SUBSCRIBED before nats-server has confirmed the NATS subscription, so a
// publication from another NATS connection (another process, a plain client) may race it. Calls
// publish() until seen() is true: use a probe payload and filter it out afterwards.
export async function untilDelivered(publish, seen, { timeout = 5000, interval = 100, what = 'a probe publication' } = {}) {
  return h.waitFor(async () => {
    if (await seen()) return true;
    await publish();
    return false;
  }, { timeout, interval, what });
}

// Likewise REGISTERED does not wait for the NATS queue subscription: calls `call()` until it stops
// failing with wamp.error.no_such_procedure (for callers on another NATS connection).
export async function untilCallable(call, { timeout = 5000, what = 'the procedure to be callable' } = {}) {
  return h.waitFor(async () => {
    try { await call(); return true; } catch (e) {
      if (e && e.error === 'wamp.error.no_such_procedure') return false;
      throw Object.assign(new Error(`probe call failed: ${e && (e.error || e.message)}`), { fatal: true });
    }
  }, { timeout, interval: 50, what });
}
