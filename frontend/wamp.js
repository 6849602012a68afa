// A small WAMP v2 client over the browser's WebSocket, subprotocol wamp.2.json.
//
// Roles: publisher, subscriber, caller, callee. Keeps subscriptions and registrations across
// reconnects (re-sent after every WELCOME) and reconnects by itself with exponential backoff.
// Authentication: anonymous (no authmethods in HELLO), ticket and wampcra (WAMP-CRA, salted
// secrets as Autobahn's auth_cra derives them, computed with WebCrypto). The credentials live in
// this object only (memory), so reconnects sign in again with them; nothing is stored.
//
//   const client = new WampClient({ url, realm: 'realm1' });
//   client.addEventListener('state', (e) => console.log(e.detail)); // {state, sessionId, retryInMs, reason}
//   client.setAuth({ authid: 'alice', password: '...', methods: ['wampcra', 'ticket'] }); // or null
//   client.open();
//   await client.subscribe('topic', (args, kwargs, details) => {});
//   await client.publish('topic', [1], {a: 1}, { acknowledge: true });
//   const { args, kwargs } = await client.call('greeting_service.hello', ['Bob'], {});
//   await client.register('browser.echo', (args, kwargs, details) => ({ args, kwargs }));
//
// Errors from the router or a callee reject with a WampError {error, args, kwargs, details}.
// States: closed | connecting | authenticating | connected | disconnected | unauthenticated (the
// router refused the credentials, or anonymous: no retry until setAuth or reconnectNow).

export const MSG = Object.freeze({
  HELLO: 1, WELCOME: 2, ABORT: 3, CHALLENGE: 4, AUTHENTICATE: 5, GOODBYE: 6, ERROR: 8,
  PUBLISH: 16, PUBLISHED: 17,
  SUBSCRIBE: 32, SUBSCRIBED: 33, UNSUBSCRIBE: 34, UNSUBSCRIBED: 35, EVENT: 36,
  CALL: 48, CANCEL: 49, RESULT: 50,
  REGISTER: 64, REGISTERED: 65, UNREGISTER: 66, UNREGISTERED: 67,
  INVOCATION: 68, INTERRUPT: 69, YIELD: 70,
});

const MAX_ID = 2 ** 53;

export class WampError extends Error {
  constructor(error, args = [], kwargs = {}, details = {}) {
    const text = Array.isArray(args) && typeof args[0] === 'string' ? `${error}: ${args[0]}` : error;
    super(text);
    this.name = 'WampError';
    this.error = error;
    this.args = Array.isArray(args) ? args : [];
    this.kwargs = isObject(kwargs) ? kwargs : {};
    this.details = isObject(details) ? details : {};
  }
}

export function isObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function isId(v) {
  return Number.isInteger(v) && v >= 1 && v <= MAX_ID;
}

const SUBPROTOCOL = 'wamp.2.json';

// ABORT reasons before WELCOME that retrying with the same credentials cannot cure.
const AUTH_REFUSALS = new Set([
  'wamp.error.no_auth_method', 'wamp.error.authentication_failed', 'wamp.error.not_authorized',
  'wamp.error.authorization_failed', 'wamp.error.no_such_role', 'wamp.error.no_such_principal',
]);

// ---- WAMP-CRA with WebCrypto --------------------------------------------------------------------

// crypto.subtle exists on secure contexts only (https, and http on localhost / 127.0.0.1).
export function wampcraAvailable() {
  return globalThis.isSecureContext !== false && !!(globalThis.crypto && globalThis.crypto.subtle);
}

const utf8 = (s) => new TextEncoder().encode(s);

function base64(bytes) {
  let bin = '';
  for (const b of new Uint8Array(bytes)) bin += String.fromCharCode(b);
  return btoa(bin);
}

// base64(PBKDF2-HMAC-SHA256(secret, salt, iterations, keylen)): Autobahn's auth_cra.derive_key.
export async function deriveCraKey(secret, salt, iterations = 1000, keylen = 32) {
  const material = await crypto.subtle.importKey('raw', utf8(secret), 'PBKDF2', false, ['deriveBits']);
  const bits = await crypto.subtle.deriveBits({ name: 'PBKDF2', hash: 'SHA-256', salt: utf8(salt), iterations },
    material, keylen * 8);
  return base64(bits);
}

// base64(HMAC-SHA256(key, challenge)), the key being the bytes of its string (auth_cra.sign).
export async function signCra(key, challenge) {
  const k = await crypto.subtle.importKey('raw', utf8(key), { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
  return base64(await crypto.subtle.sign('HMAC', k, utf8(challenge)));
}

// The AUTHENTICATE signature for a wampcra CHALLENGE's extra: salted when the router sends a salt.
async function craSignature(password, extra) {
  if (!isObject(extra) || typeof extra.challenge !== 'string') throw new Error('wampcra CHALLENGE without a challenge string');
  let key = password;
  if (extra.salt !== undefined) {
    const iterations = extra.iterations ?? 1000;
    const keylen = extra.keylen ?? 32;
    if (typeof extra.salt !== 'string') throw new Error('wampcra salt is not a string');
    if (!Number.isInteger(iterations) || iterations < 1 || iterations > 10000000) throw new Error(`wampcra iterations ${iterations} out of range`);
    if (!Number.isInteger(keylen) || keylen < 1 || keylen > 64) throw new Error(`wampcra keylen ${keylen} out of range`);
    key = await deriveCraKey(password, extra.salt, iterations, keylen);
  }
  return signCra(key, extra.challenge);
}

export class WampClient extends EventTarget {
  constructor({ url, realm = 'realm1', minDelayMs = 500, maxDelayMs = 15000, WebSocketImpl, auth = null } = {}) {
    super();
    this.url = url;
    this.realm = realm;
    this.minDelayMs = minDelayMs;
    this.maxDelayMs = maxDelayMs;
    this.WebSocketImpl = WebSocketImpl || globalThis.WebSocket;
    this.state = 'closed';      // see the states above
    this.sessionId = null;
    this.welcome = null;        // WELCOME details of the current session (authid, authrole, ...)
    this.auth = null;           // {authid, password, methods} or null: anonymous
    this.refusal = null;        // {reason, message, anonymous} of an ABORT before WELCOME
    this.switching = false;     // setAuth() closed the socket: connect again at once
    if (auth) this.setAuth(auth, { connect: false });
    this.ws = null;
    this.attempt = 0;           // failed attempts since the last WELCOME
    this.retryTimer = null;
    this.retryAt = 0;
    this.wanted = false;        // open() called and close() not since
    this.nextRequest = 1;
    this.pending = new Map();   // request id -> {kind, resolve, reject, ...}
    this.subscriptions = [];    // {topic, options, handler, id|null, active}
    this.registrations = [];    // {procedure, options, fn, id|null, active}
    this.invocations = new Map(); // invocation request id -> {interrupted}
  }

  // ---- lifecycle ----------------------------------------------------------------------------

  open() {
    this.wanted = true;
    if (this.ws || this.retryTimer) return;
    this._connect();
  }

  // Leaves with GOODBYE and stops reconnecting.
  close(reason = 'wamp.close.close_realm') {
    this.wanted = false;
    this.switching = false;
    this._clearRetry();
    if (this.ws) this._leave(reason);
    else this._setState('closed', { reason: 'closed' });
  }

  // GOODBYE when in a session, else just the close; the socket's onclose does the rest.
  _leave(reason) {
    const ws = this.ws;
    if (this.state === 'connected') {
      this.closingByUs = true;
      this._send([MSG.GOODBYE, {}, reason]);
      setTimeout(() => { if (ws.readyState <= 1) ws.close(1000); }, 1000);
    } else {
      ws.close(1000);
    }
  }

  // Credentials for this and every later session: {authid, password, methods} (methods: any of
  // 'wampcra', 'ticket', in order of preference; wampcra is dropped where WebCrypto is missing),
  // or null for anonymous. Leaves the current session, if any, and connects again at once.
  setAuth(auth, { connect = true } = {}) {
    if (auth) {
      if (typeof auth.authid !== 'string' || !auth.authid) throw new Error('an authid is needed to sign in');
      if (typeof auth.password !== 'string') throw new Error('a password is needed to sign in');
      const wanted = auth.methods && auth.methods.length ? auth.methods : ['wampcra', 'ticket'];
      const methods = wanted.filter((m) => (m === 'ticket' || m === 'wampcra') && (m !== 'wampcra' || wampcraAvailable()));
      if (!methods.length) {
        throw new Error(wanted.includes('wampcra')
          ? 'WAMP-CRA needs WebCrypto, which the browser offers on secure contexts only (https, or http on localhost)'
          : `no supported authentication method in ${JSON.stringify(wanted)}`);
      }
      this.auth = { authid: auth.authid, password: auth.password, methods };
    } else {
      this.auth = null;
    }
    if (!connect) return;
    this.wanted = true;
    this._clearRetry();
    this.attempt = 0;
    if (this.ws) {
      this.switching = true;
      this._leave('wamp.close.close_realm');
    } else {
      this._connect();
    }
  }

  // Skip the backoff wait and try now.
  reconnectNow() {
    this.wanted = true;
    if (this.ws) return;
    this._clearRetry();
    this._connect();
  }

  _clearRetry() {
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.retryAt = 0;
  }

  _setState(state, extra = {}) {
    this.state = state;
    this.dispatchEvent(new CustomEvent('state', {
      detail: { state, sessionId: this.sessionId, attempt: this.attempt, ...extra },
    }));
  }

  _changed() {
    this.dispatchEvent(new CustomEvent('change'));
  }

  _notice(level, text, data) {
    this.dispatchEvent(new CustomEvent('notice', { detail: { level, text, data } }));
  }

  _connect() {
    this.retryTimer = null;
    this.sessionId = null;
    this.welcome = null;
    this.refusal = null;
    this.nextRequest = 1;
    this._setState('connecting');
    let ws;
    try {
      ws = new this.WebSocketImpl(this.url, [SUBPROTOCOL]);
    } catch (e) {
      this._lost(`cannot open ${this.url}: ${e.message}`);
      return;
    }
    this.ws = ws;
    this.closingByUs = false;
    this.abortReason = null;
    ws.onopen = () => {
      if (ws !== this.ws) return;
      if (ws.protocol !== SUBPROTOCOL) {
        this.abortReason = `the server did not agree on ${SUBPROTOCOL} (got "${ws.protocol}")`;
        ws.close(1002);
        return;
      }
      const details = {
        agent: 'microservice-frontend',
        roles: {
          publisher: { features: { publisher_exclusion: true } },
          subscriber: { features: { pattern_based_subscription: true, publisher_identification: true } },
          caller: { features: { progressive_call_results: true, call_canceling: true, call_timeout: true } },
          callee: { features: { progressive_call_results: true } },
        },
      };
      if (this.auth) {
        details.authmethods = this.auth.methods;
        details.authid = this.auth.authid;
      }
      this._send([MSG.HELLO, this.realm, details]);
    };
    ws.onmessage = (ev) => {
      if (ws !== this.ws) return;
      if (typeof ev.data !== 'string') {
        this._violation('binary frame on wamp.2.json');
        return;
      }
      let msg;
      try { msg = JSON.parse(ev.data); } catch {
        this._violation('invalid JSON from the router');
        return;
      }
      if (!Array.isArray(msg) || !Number.isInteger(msg[0])) {
        this._violation('a message that is not a WAMP array');
        return;
      }
      try {
        this._dispatch(msg);
      } catch (e) {
        this._violation(`bad message ${JSON.stringify(msg).slice(0, 200)}: ${e.message}`);
      }
    };
    ws.onerror = () => { /* onclose follows with the code */ };
    ws.onclose = (ev) => {
      if (ws !== this.ws) return;
      const why = this.abortReason || (ev.reason ? `${ev.code} ${ev.reason}` : `code ${ev.code}`);
      this._lost(why);
    };
  }

  _violation(text) {
    this._notice('error', `protocol violation: ${text}`);
    this.abortReason = `protocol violation: ${text}`;
    if (this.state === 'connected') this._send([MSG.ABORT, { message: text }, 'wamp.error.protocol_violation']);
    this.ws.close(1002);
  }

  // The socket is gone: fail what was pending, then retry unless close() was called.
  _lost(reason) {
    this.ws = null;
    const hadSession = this.sessionId !== null;
    this.sessionId = null;
    this.welcome = null;
    const err = new WampError('wamp.error.connection_lost', [`connection lost: ${reason}`]);
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
    this.invocations.clear();
    for (const s of this.subscriptions) s.id = null;
    for (const r of this.registrations) r.id = null;
    this._changed();
    if (!this.wanted) {
      this._setState('closed', { reason });
      return;
    }
    if (this.switching) { // setAuth: the new credentials, now
      this.switching = false;
      this._connect();
      return;
    }
    if (this.refusal) { // the same credentials would be refused again: wait for setAuth
      const refusal = this.refusal;
      this.refusal = null;
      this.attempt = 0;
      this._setState('unauthenticated', { reason, refusal });
      return;
    }
    if (!hadSession) this.attempt++;
    else this.attempt = 1;
    const base = Math.min(this.maxDelayMs, this.minDelayMs * 2 ** Math.min(this.attempt - 1, 20));
    const delay = Math.round(base * (0.5 + Math.random() * 0.5));
    this.retryAt = Date.now() + delay;
    this.retryTimer = setTimeout(() => this._connect(), delay);
    this._setState('disconnected', { reason, retryInMs: delay, retryAt: this.retryAt });
  }

  _send(msg) {
    if (!this.ws || this.ws.readyState !== 1) return false;
    this.ws.send(JSON.stringify(msg));
    return true;
  }

  _request(kind, build, extra = {}) {
    if (this.state !== 'connected') {
      return Promise.reject(new WampError('wamp.error.not_connected', ['not connected to the router']));
    }
    const id = this.nextRequest;
    this.nextRequest = this.nextRequest >= MAX_ID ? 1 : this.nextRequest + 1;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { kind, resolve, reject, ...extra });
      this._send(build(id));
    });
  }

  // ---- incoming -----------------------------------------------------------------------------

  _dispatch(msg) {
    const code = msg[0];
    if (this.state !== 'connected') {
      if (code === MSG.CHALLENGE) {
        this._challenge(msg);
        return;
      }
      if (code === MSG.WELCOME) {
        if (!isId(msg[1])) throw new Error('WELCOME without a valid session id');
        this.sessionId = msg[1];
        this.welcome = isObject(msg[2]) ? msg[2] : {};
        this.attempt = 0;
        this._setState('connected', { details: this.welcome });
        this._restore();
        return;
      }
      if (code === MSG.ABORT) {
        const reason = typeof msg[2] === 'string' ? msg[2] : 'ABORT';
        const text = isObject(msg[1]) && msg[1].message ? `${reason}: ${msg[1].message}` : reason;
        this.abortReason = `router refused the session: ${text}`;
        if (AUTH_REFUSALS.has(reason)) {
          this.refusal = { reason, message: isObject(msg[1]) && typeof msg[1].message === 'string' ? msg[1].message : '', anonymous: !this.auth };
        }
        if (!this.auth && reason === 'wamp.error.no_auth_method') {
          this.abortReason = `the router wants a sign-in: ${text}`; // no guests here: not a fault
          this._notice('info', this.abortReason);
        } else {
          this._notice('error', this.abortReason);
        }
        this.ws.close(1000);
        return;
      }
      throw new Error(`message ${code} before WELCOME`);
    }

    switch (code) {
      case MSG.ABORT: {
        const reason = typeof msg[2] === 'string' ? msg[2] : 'ABORT';
        const text = isObject(msg[1]) && msg[1].message ? `${reason}: ${msg[1].message}` : reason;
        this.abortReason = `aborted by the router: ${text}`;
        this._notice('error', this.abortReason);
        this.ws.close(1000);
        return;
      }
      case MSG.GOODBYE: {
        if (!this.closingByUs) this._send([MSG.GOODBYE, {}, 'wamp.close.goodbye_and_out']);
        this.abortReason = `goodbye: ${msg[2]}`;
        this.ws.close(1000);
        return;
      }
      case MSG.ERROR: {
        const [, type, req, details, uri, args, kwargs] = msg;
        const p = this.pending.get(req);
        if (!p) return; // e.g. a CANCELed call answered twice
        this.pending.delete(req);
        void type;
        p.reject(new WampError(typeof uri === 'string' ? uri : 'wamp.error.unknown', args, kwargs, details));
        return;
      }
      case MSG.PUBLISHED: return this._settle(msg[1], { publication: msg[2] });
      case MSG.SUBSCRIBED: return this._settle(msg[1], { id: msg[2] });
      case MSG.UNSUBSCRIBED: return this._settle(msg[1], {});
      case MSG.REGISTERED: return this._settle(msg[1], { id: msg[2] });
      case MSG.UNREGISTERED: return this._settle(msg[1], {});
      case MSG.RESULT: {
        const [, req, details, args, kwargs] = msg;
        const p = this.pending.get(req);
        if (!p) return;
        const res = { args: Array.isArray(args) ? args : [], kwargs: isObject(kwargs) ? kwargs : {}, details: isObject(details) ? details : {} };
        if (res.details.progress) {
          if (p.onProgress) p.onProgress(res);
          return;
        }
        this.pending.delete(req);
        p.resolve(res);
        return;
      }
      case MSG.EVENT: {
        const [, subId, pubId, details, args, kwargs] = msg;
        const subs = this.subscriptions.filter((s) => s.id === subId);
        for (const s of subs) {
          try {
            s.handler(Array.isArray(args) ? args : [], isObject(kwargs) ? kwargs : {},
              { ...(isObject(details) ? details : {}), publication: pubId, subscription: subId, topic: (details && details.topic) || s.topic });
          } catch (e) {
            this._notice('error', `event handler for ${s.topic} failed: ${e.message}`);
          }
        }
        return;
      }
      case MSG.INVOCATION: return this._invoke(msg);
      case MSG.INTERRUPT: {
        const inv = this.invocations.get(msg[1]);
        if (inv) {
          inv.interrupted = true;
          this.invocations.delete(msg[1]);
          this._send([MSG.ERROR, MSG.INVOCATION, msg[1], {}, 'wamp.error.canceled', ['canceled by the caller'], {}]);
        }
        return;
      }
      default:
        throw new Error(`unexpected message code ${code}`);
    }
  }

  // CHALLENGE before WELCOME: answer with AUTHENTICATE, or leave when it asks what we did not offer.
  _challenge(msg) {
    const [, method, extra] = msg;
    if (this.state === 'authenticating') throw new Error('a second CHALLENGE');
    if (!this.auth || !this.auth.methods.includes(method)) {
      this.abortReason = `the router asked for ${method} authentication, which this page did not offer`;
      this._notice('error', this.abortReason);
      this._send([MSG.ABORT, { message: this.abortReason }, 'wamp.error.authentication_failed']);
      this.ws.close(1000);
      return;
    }
    const ws = this.ws;
    this._setState('authenticating', { authid: this.auth.authid, authmethod: method });
    const answer = method === 'ticket' ? Promise.resolve(this.auth.password) : craSignature(this.auth.password, extra);
    answer.then((signature) => {
      if (ws === this.ws && this.state === 'authenticating') this._send([MSG.AUTHENTICATE, signature, {}]);
    }, (e) => {
      if (ws !== this.ws) return;
      this.abortReason = `cannot answer the ${method} challenge: ${e.message}`;
      this._notice('error', this.abortReason);
      this._send([MSG.ABORT, { message: e.message }, 'wamp.error.authentication_failed']);
      this.refusal = { reason: 'wamp.error.authentication_failed', message: e.message, anonymous: false };
      ws.close(1000);
    });
  }

  _settle(req, value) {
    const p = this.pending.get(req);
    if (!p) return;
    this.pending.delete(req);
    p.resolve(value);
  }

  _invoke(msg) {
    const [, req, regId, details, args, kwargs] = msg;
    const reg = this.registrations.find((r) => r.id === regId);
    if (!reg) {
      this._send([MSG.ERROR, MSG.INVOCATION, req, {}, 'wamp.error.no_such_registration', ['no such registration'], {}]);
      return;
    }
    const inv = { interrupted: false };
    this.invocations.set(req, inv);
    const ws = this.ws;
    const a = Array.isArray(args) ? args : [];
    const kw = isObject(kwargs) ? kwargs : {};
    Promise.resolve()
      .then(() => reg.fn(a, kw, { ...(isObject(details) ? details : {}), procedure: reg.procedure, request: req }))
      .then((out) => {
        if (inv.interrupted || ws !== this.ws) return;
        this.invocations.delete(req);
        let ra = [], rk = {};
        if (Array.isArray(out)) ra = out;
        else if (isObject(out) && ('args' in out || 'kwargs' in out)) {
          ra = Array.isArray(out.args) ? out.args : (out.args === undefined ? [] : [out.args]);
          rk = isObject(out.kwargs) ? out.kwargs : {};
        } else if (out !== undefined) ra = [out];
        this._send([MSG.YIELD, req, {}, ra, rk]);
        reg.onResult?.({ request: req, args: a, kwargs: kw, result: { args: ra, kwargs: rk } });
      }, (err) => {
        if (inv.interrupted || ws !== this.ws) return;
        this.invocations.delete(req);
        const e = err instanceof WampError ? err
          : new WampError('wamp.error.runtime_error', [String(err && err.message || err)]);
        const d = Number.isInteger(e.details.code) ? { code: e.details.code } : {};
        this._send([MSG.ERROR, MSG.INVOCATION, req, d, e.error, e.args, e.kwargs]);
        reg.onResult?.({ request: req, args: a, kwargs: kw, error: e });
      });
  }

  // After WELCOME: subscribe and register again everything the page asked for.
  _restore() {
    for (const s of this.subscriptions) this._subscribeOne(s).catch(() => {});
    for (const r of this.registrations) this._registerOne(r).catch(() => {});
  }

  // ---- outgoing -----------------------------------------------------------------------------

  _subscribeOne(s) {
    const p = this._request('subscribe', (id) => [MSG.SUBSCRIBE, id, s.options, s.topic]);
    return p.then(({ id }) => {
      if (!this.subscriptions.includes(s)) {
        // unsubscribed while the request was on its way
        if (!this.subscriptions.some((o) => o.id === id)) this._request('unsubscribe', (r) => [MSG.UNSUBSCRIBE, r, id]).catch(() => {});
        return s;
      }
      s.id = id;
      this._changed();
      this._notice('info', `subscribed to ${s.topic}`, { subscription: id });
      return s;
    }, (err) => {
      if (err.error !== 'wamp.error.connection_lost' && err.error !== 'wamp.error.not_connected') {
        this.subscriptions = this.subscriptions.filter((o) => o !== s);
        this._changed();
        this._notice('error', `subscribe ${s.topic} refused: ${err.message}`, err);
      }
      throw err;
    });
  }

  // Resolves once subscribed; the subscription is kept and renewed after every reconnect.
  // Called while disconnected, it waits for the next session.
  subscribe(topic, handler, options = {}) {
    const s = { topic, options, handler, id: null };
    this.subscriptions.push(s);
    this._changed();
    if (this.state === 'connected') return this._subscribeOne(s);
    return Promise.resolve(s);
  }

  async unsubscribe(s) {
    this.subscriptions = this.subscriptions.filter((o) => o !== s);
    const id = s.id;
    s.id = null;
    this._changed();
    // The router hands out one subscription id per topic: keep it while another handler uses it.
    if (id === null || this.subscriptions.some((o) => o.id === id) || this.state !== 'connected') return;
    await this._request('unsubscribe', (r) => [MSG.UNSUBSCRIBE, r, id]);
  }

  // Resolves with {publication} when options.acknowledge, else once sent.
  publish(topic, args = [], kwargs = {}, options = {}) {
    if (this.state !== 'connected') {
      return Promise.reject(new WampError('wamp.error.not_connected', ['not connected to the router']));
    }
    if (options.acknowledge) {
      return this._request('publish', (id) => [MSG.PUBLISH, id, options, topic, args, kwargs]);
    }
    const id = this.nextRequest;
    this.nextRequest = this.nextRequest >= MAX_ID ? 1 : this.nextRequest + 1;
    this._send([MSG.PUBLISH, id, options, topic, args, kwargs]);
    return Promise.resolve({});
  }

  // Resolves with {args, kwargs, details}; options.onProgress receives progressive results.
  call(procedure, args = [], kwargs = {}, options = {}) {
    const { onProgress, ...wire } = options;
    if (onProgress) wire.receive_progress = true;
    return this._request('call', (id) => [MSG.CALL, id, wire, procedure, args, kwargs], { onProgress });
  }

  // fn(args, kwargs, details) returns (or resolves to) {args, kwargs}, an args array, or a single
  // value; throwing a WampError answers with that error.
  register(procedure, fn, options = {}, onResult) {
    const { ...wire } = options;
    const r = { procedure, options: wire, fn, id: null, onResult };
    this.registrations.push(r);
    this._changed();
    if (this.state === 'connected') return this._registerOne(r);
    return Promise.resolve(r);
  }

  _registerOne(r) {
    return this._request('register', (id) => [MSG.REGISTER, id, r.options, r.procedure]).then(({ id }) => {
      if (!this.registrations.includes(r)) {
        this._request('unregister', (q) => [MSG.UNREGISTER, q, id]).catch(() => {});
        return r;
      }
      r.id = id;
      this._changed();
      this._notice('info', `registered ${r.procedure}`, { registration: id });
      return r;
    }, (err) => {
      if (err.error !== 'wamp.error.connection_lost' && err.error !== 'wamp.error.not_connected') {
        this.registrations = this.registrations.filter((o) => o !== r);
        this._changed();
        this._notice('error', `register ${r.procedure} refused: ${err.message}`, err);
      }
      throw err;
    });
  }

  async unregister(r) {
    this.registrations = this.registrations.filter((o) => o !== r);
    const id = r.id;
    r.id = null;
    this._changed();
    if (id === null || this.state !== 'connected') return;
    await this._request('unregister', (q) => [MSG.UNREGISTER, q, id]);
  }
}
