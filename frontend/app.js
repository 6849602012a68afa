// The page: wires the forms to the WAMP client in wamp.js. No framework, no build step.
import { WampClient, WampError, isObject, wampcraAvailable } from './wamp.js';

const $ = (id) => document.getElementById(id);
const LOG_MAX = 300;

const wsUrl = `${location.protocol === 'https:' ? 'wss:' : 'ws:'}//${location.host}/websocket`;
const client = new WampClient({ url: wsUrl, realm: 'realm1' });
window.wampClient = client; // for the console (and the browser test)

$('endpoint').textContent = wsUrl;
$('reg-try').textContent = `curl -X POST ${location.origin}/browser.echo -d '[["hi"], {"from": "curl"}]'`;

// ---- the log ----------------------------------------------------------------------------------

const json = (v) => JSON.stringify(v);

function timeStamp(d) {
  const p = (n, w = 2) => String(n).padStart(w, '0');
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

// kind: event | result | error | published | invocation | info
function log(kind, title, { args, kwargs, text, fields } = {}) {
  const list = $('log');
  const now = new Date();
  const li = document.createElement('li');
  li.className = `entry kind-${kind}`;
  li.dataset.kind = kind;

  const meta = document.createElement('div');
  meta.className = 'meta';
  const time = document.createElement('time');
  time.dateTime = now.toISOString();
  time.textContent = timeStamp(now);
  const tag = document.createElement('span');
  tag.className = 'tag';
  tag.textContent = kind;
  const t = document.createElement('span');
  t.className = 'title';
  t.textContent = title;
  meta.append(time, tag, t);
  li.append(meta);

  if (text) {
    const p = document.createElement('p');
    p.className = 'text';
    p.textContent = text;
    li.append(p);
  }
  const rows = [];
  if (fields) rows.push(...fields);
  if (args !== undefined) rows.push(['args', json(args)]);
  if (kwargs !== undefined) rows.push(['kwargs', json(kwargs)]);
  if (rows.length) {
    const dl = document.createElement('dl');
    for (const [k, v] of rows) {
      const dt = document.createElement('dt');
      dt.textContent = k;
      const dd = document.createElement('dd');
      const code = document.createElement('code');
      code.textContent = v;
      dd.append(code);
      dl.append(dt, dd);
    }
    li.append(dl);
  }
  list.prepend(li);
  while (list.children.length > LOG_MAX) list.lastElementChild.remove();
  updateLogCount();
}

function updateLogCount() {
  const n = $('log').children.length;
  $('log-count').textContent = `${n} ${n === 1 ? 'entry' : 'entries'}`;
}

$('log-clear').addEventListener('click', () => {
  $('log').replaceChildren();
  updateLogCount();
});

function logError(title, err) {
  if (err instanceof WampError) {
    log('error', title, { text: err.error, args: err.args, kwargs: err.kwargs });
  } else {
    log('error', title, { text: String(err && err.message || err) });
  }
}

// ---- connection state -------------------------------------------------------------------------

let countdown = null;

function showState({ state, sessionId, retryAt, reason, attempt, authid }) {
  const box = $('conn');
  const text = $('conn-text');
  box.dataset.state = state;
  clearInterval(countdown);
  countdown = null;
  $('reconnect').hidden = state !== 'disconnected';
  if (state === 'connecting') {
    text.textContent = attempt > 0 ? `Connecting… (attempt ${attempt + 1})` : 'Connecting…';
  } else if (state === 'authenticating') {
    text.textContent = `Signing in as ${authid}…`;
  } else if (state === 'connected') {
    text.textContent = `Connected · session ${sessionId}`;
  } else if (state === 'disconnected') {
    const tick = () => {
      const s = Math.max(0, Math.ceil((retryAt - Date.now()) / 1000));
      text.textContent = `Disconnected · retrying in ${s} s`;
    };
    tick();
    countdown = setInterval(tick, 1000);
    box.title = reason || '';
  } else if (state === 'unauthenticated') {
    text.textContent = 'Sign-in required';
  } else {
    text.textContent = 'Closed';
  }
  if (state !== 'disconnected') box.title = '';
}

// ---- sign-in ------------------------------------------------------------------------------------
// The router says who we are in WELCOME (authid, authrole, authmethod, authprovider); with
// authentication off (authprovider "none") the page shows no identity and no sign-in at all.

const signin = {
  pending: null,        // 'user' | 'guest' while a sign-in started from the dialog is under way
  guestRefused: false,  // the router refused an anonymous session
  authOn: false,        // a WELCOME or a refusal said the router authenticates
};
const secure = wampcraAvailable();
if (!secure) {
  $('signin-insecure').hidden = false;
  $('signin-method').querySelector('option[value="wampcra"]').disabled = true;
  $('signin-method').querySelector('option[value="auto"]').textContent = 'Automatic (ticket here)';
}

function showWho() {
  const w = client.welcome;
  const who = $('who');
  if (w && w.authprovider !== 'none') {
    signin.authOn = true;
    const anon = w.authmethod === 'anonymous';
    $('who-text').textContent = anon ? `Guest · role ${w.authrole}` : `Signed in as ${w.authid} · role ${w.authrole} · ${w.authmethod}`;
    $('signin-open').hidden = !anon;
    $('signout').hidden = anon;
    who.hidden = false;
  } else if (client.state === 'unauthenticated') {
    $('who-text').textContent = 'Not signed in';
    $('signin-open').hidden = false;
    $('signout').hidden = true;
    who.hidden = false;
  } else if (!signin.authOn) {
    who.hidden = true;
  }
}

function signinError(message) {
  const e = $('signin-error');
  e.textContent = message || '';
  e.hidden = !message;
}

function signinBusy(on) {
  for (const id of ['signin-submit', 'signin-guest']) busy($(id), on);
  $('signin-submit').textContent = on && signin.pending === 'user' ? 'Signing in…' : 'Sign in';
}

function openSignin(why) {
  const d = $('signin');
  $('signin-why').textContent = why || 'Sign in to the router with your user name and password.';
  $('signin-guest').hidden = signin.guestRefused;
  if (!d.open) d.showModal();
  const id = $('signin-authid');
  (id.value ? $('signin-password') : id).focus();
}

function closeSignin() {
  const d = $('signin');
  signin.pending = null;
  signinBusy(false);
  signinError('');
  $('signin-password').value = ''; // the client keeps its copy in memory for reconnects
  if (d.open) d.close();
}

// What an ABORT before WELCOME means to a person.
function refusalText({ reason, message, anonymous }) {
  if (reason === 'wamp.error.authentication_failed') return 'Authentication failed: wrong user or password.';
  if (reason === 'wamp.error.no_auth_method') {
    return anonymous ? 'This router does not allow guests: sign in.'
      : `The router accepts none of the offered methods${message ? ` (${message})` : ''}.`;
  }
  return `${reason}${message ? `: ${message}` : ''}`;
}

function onSigninState(d) {
  if (d.state === 'connected') {
    if (signin.pending) closeSignin();
  } else if (d.state === 'unauthenticated') {
    signin.authOn = true;
    const r = d.refusal;
    if (r.anonymous && r.reason === 'wamp.error.no_auth_method') signin.guestRefused = true;
    const wasPending = signin.pending;
    signin.pending = null;
    signinBusy(false);
    if (wasPending || !r.anonymous) {
      signinError(refusalText(r));
      openSignin($('signin-why').textContent);
      if (wasPending === 'user' || !r.anonymous) $('signin-password').select();
    } else {
      signinError('');
      openSignin('This router needs you to sign in.');
    }
  } else if (d.state === 'disconnected' && signin.pending) {
    signinError(`Cannot reach the router (${d.reason}); trying again by itself.`);
  }
  showWho();
}

$('signin-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const v = validate([
    ['authid', $('signin-authid'), (i) => (i.value.trim() ? { value: i.value.trim() } : { error: 'Enter your user name.' })],
    ['password', $('signin-password'), (i) => (i.value ? { value: i.value } : { error: 'Enter your password.' })],
  ]);
  if (!v) return;
  const choice = $('signin-method').value;
  const methods = choice === 'auto' ? ['wampcra', 'ticket'] : [choice];
  signinError('');
  try {
    client.setAuth({ authid: v.authid, password: v.password, methods });
  } catch (e) {
    signinError(e.message);
    return;
  }
  if (!client.auth.methods.includes('wampcra')) {
    log('info', `signing in as ${v.authid} with a ticket`, { text: secure ? undefined : 'WAMP-CRA needs a secure context (https or localhost): the password goes to the router as a ticket.' });
  }
  signin.pending = 'user';
  signinBusy(true);
});

$('signin-guest').addEventListener('click', () => {
  signinError('');
  signin.pending = 'guest';
  signinBusy(true);
  client.setAuth(null);
});

$('signin-cancel').addEventListener('click', () => closeSignin());
$('signin').addEventListener('cancel', () => { signin.pending = null; signinBusy(false); });
$('signin-open').addEventListener('click', () => openSignin());
$('signout').addEventListener('click', () => {
  const who = client.welcome ? client.welcome.authid : '';
  client.setAuth(null);
  log('info', `signed out${who ? ` (${who})` : ''}`);
});

client.addEventListener('state', (e) => {
  const d = e.detail;
  showState(d);
  if (d.state === 'connected') {
    const fields = [['session', String(d.sessionId)], ['realm', d.details?.realm ?? 'realm1']];
    if (d.details && d.details.authprovider !== 'none' && d.details.authid) {
      fields.push(['authid', String(d.details.authid)], ['authrole', String(d.details.authrole)], ['authmethod', String(d.details.authmethod)]);
    }
    log('info', 'connected', { fields });
  } else if (d.state === 'disconnected') {
    log('error', 'disconnected', { text: `${d.reason}; retrying in ${(d.retryInMs / 1000).toFixed(1)} s` });
  }
  onSigninState(d);
});

client.addEventListener('notice', (e) => {
  const { level, text, data } = e.detail;
  if (level === 'error') {
    if (data instanceof WampError) logError(text, data);
    else log('error', text);
  } else {
    const fields = data ? Object.entries(data).map(([k, v]) => [k, String(v)]) : undefined;
    log('info', text, { fields });
  }
});

client.addEventListener('change', () => {
  renderSubscriptions();
  renderRegistrations();
});

$('reconnect').addEventListener('click', () => client.reconnectNow());

// ---- form helpers -----------------------------------------------------------------------------

function setFieldError(input, message) {
  const err = $(`${input.id}-error`);
  if (message) {
    err.textContent = message;
    err.hidden = false;
    input.setAttribute('aria-invalid', 'true');
  } else {
    err.textContent = '';
    err.hidden = true;
    input.removeAttribute('aria-invalid');
  }
}

// Each validator returns {value} or {error}.
function checkUri(input, what) {
  const v = input.value.trim();
  if (!v) return { error: `Enter a ${what}.` };
  if (/\s/.test(v)) return { error: `A ${what} cannot contain spaces.` };
  return { value: v };
}

function checkJson(input, kind) {
  const text = input.value.trim();
  if (!text) return { value: kind === 'array' ? [] : {} };
  let v;
  try {
    v = JSON.parse(text);
  } catch (e) {
    return { error: `Invalid JSON: ${e.message}. ${kind === 'array' ? 'Args must be a JSON array, like ["Bob"].' : 'Kwargs must be a JSON object, like {"last_name": "Ross"}.'}` };
  }
  if (kind === 'array' && !Array.isArray(v)) return { error: 'Args must be a JSON array, like ["Bob"].' };
  if (kind === 'object' && !isObject(v)) return { error: 'Kwargs must be a JSON object, like {"last_name": "Ross"}.' };
  return { value: v };
}

// Runs the checks, shows every message, focuses the first bad field. Returns values or null.
function validate(checks) {
  const out = {};
  let first = null;
  for (const [name, input, fn] of checks) {
    const r = fn(input);
    setFieldError(input, r.error);
    if (r.error && !first) first = input;
    out[name] = r.value;
  }
  if (first) {
    first.focus();
    return null;
  }
  return out;
}

// Clear a field's message as soon as it is edited.
for (const el of document.querySelectorAll('input, textarea')) {
  el.addEventListener('input', () => { if (el.getAttribute('aria-invalid')) setFieldError(el, ''); });
}

function busy(button, on) {
  button.disabled = on;
  button.setAttribute('aria-busy', on ? 'true' : 'false');
}

// ---- Subscribe --------------------------------------------------------------------------------

function renderSubscriptions() {
  const list = $('sub-list');
  list.replaceChildren();
  if (!client.subscriptions.length) {
    const li = document.createElement('li');
    li.className = 'empty';
    li.textContent = 'None yet.';
    list.append(li);
    return;
  }
  for (const s of client.subscriptions) {
    const li = document.createElement('li');
    const name = document.createElement('code');
    name.textContent = s.topic;
    const badge = document.createElement('span');
    badge.className = `badge ${s.id !== null ? 'ok' : 'wait'}`;
    badge.textContent = (s.options.match && s.options.match !== 'exact' ? `${s.options.match} · ` : '') +
      (s.id !== null ? 'active' : 'pending');
    const b = document.createElement('button');
    b.type = 'button';
    b.className = 'small secondary';
    b.textContent = 'Unsubscribe';
    b.setAttribute('aria-label', `Unsubscribe from ${s.topic}`);
    b.addEventListener('click', () => {
      client.unsubscribe(s).then(
        () => log('info', `unsubscribed from ${s.topic}`),
        (err) => logError(`unsubscribe ${s.topic} failed`, err));
    });
    const actions = document.createElement('span');
    actions.className = 'row-actions';
    actions.append(badge, b);
    li.append(name, actions);
    list.append(li);
  }
}

$('sub-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const v = validate([['topic', $('sub-topic'), (i) => checkUri(i, 'topic')]]);
  if (!v) return;
  const match = $('sub-match').value;
  if (client.subscriptions.some((s) => s.topic === v.topic && (s.options.match || 'exact') === match)) {
    setFieldError($('sub-topic'), `Already subscribed to ${v.topic}.`);
    return;
  }
  const options = match === 'exact' ? {} : { match };
  const btn = $('sub-btn');
  busy(btn, true);
  try {
    await client.subscribe(v.topic, (args, kwargs, details) => {
      const fields = [['publication', String(details.publication)]];
      if (details.publisher) fields.push(['publisher', String(details.publisher)]);
      log('event', details.topic || v.topic, { fields, args, kwargs });
    }, options);
    if (client.state !== 'connected') log('info', `will subscribe to ${v.topic} once connected`);
  } catch (err) {
    if (!(err instanceof WampError && /connection_lost|not_connected/.test(err.error))) {
      setFieldError($('sub-topic'), err.message);
    }
  } finally {
    busy(btn, false);
  }
});

// ---- Publish ----------------------------------------------------------------------------------

$('pub-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const v = validate([
    ['topic', $('pub-topic'), (i) => checkUri(i, 'topic')],
    ['args', $('pub-args'), (i) => checkJson(i, 'array')],
    ['kwargs', $('pub-kwargs'), (i) => checkJson(i, 'object')],
  ]);
  if (!v) return;
  const options = { acknowledge: true };
  if ($('pub-self').checked) options.exclude_me = false;
  const btn = $('pub-btn');
  busy(btn, true);
  try {
    const { publication } = await client.publish(v.topic, v.args, v.kwargs, options);
    log('published', v.topic, { fields: [['publication', String(publication)]], args: v.args, kwargs: v.kwargs });
  } catch (err) {
    logError(`publish ${v.topic} failed`, err);
  } finally {
    busy(btn, false);
  }
});

// ---- Call -------------------------------------------------------------------------------------

function showResult(state, headline, detail) {
  const out = $('call-result');
  out.dataset.state = state;
  out.replaceChildren();
  const strong = document.createElement('strong');
  strong.className = 'headline';
  strong.textContent = headline;
  out.append(strong);
  if (detail) {
    const code = document.createElement('code');
    code.className = 'detail';
    code.textContent = detail;
    out.append(code);
  }
}

$('call-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const v = validate([
    ['procedure', $('call-proc'), (i) => checkUri(i, 'procedure')],
    ['args', $('call-args'), (i) => checkJson(i, 'array')],
    ['kwargs', $('call-kwargs'), (i) => checkJson(i, 'object')],
    ['timeout', $('call-timeout'), (i) => {
      const t = i.value.trim();
      if (!t) return { value: undefined };
      const n = Number(t);
      return Number.isInteger(n) && n > 0 ? { value: n } : { error: 'Timeout must be a whole number of milliseconds.' };
    }],
  ]);
  if (!v) return;
  const options = {};
  if (v.timeout) options.timeout = v.timeout;
  const btn = $('call-btn');
  busy(btn, true);
  showResult('pending', `Calling ${v.procedure}…`);
  const t0 = performance.now();
  try {
    const res = await client.call(v.procedure, v.args, v.kwargs, {
      ...options,
      onProgress: (p) => log('result', `${v.procedure} (progress)`, { args: p.args, kwargs: p.kwargs }),
    });
    const ms = Math.round(performance.now() - t0);
    const headline = res.args.length === 1 && typeof res.args[0] === 'string' ? res.args[0] : json(res.args);
    showResult('ok', headline, `${json([res.args, res.kwargs])} · ${ms} ms`);
    log('result', v.procedure, { fields: [['time', `${ms} ms`]], args: res.args, kwargs: res.kwargs });
  } catch (err) {
    const msg = err instanceof WampError ? err.error : 'error';
    const text = err instanceof WampError && typeof err.args[0] === 'string' ? err.args[0] : String(err.message || err);
    showResult('error', `${msg}: ${text}`, err instanceof WampError ? json([err.args, err.kwargs]) : undefined);
    logError(`call ${v.procedure} failed`, err);
  } finally {
    busy(btn, false);
  }
});

// ---- Register ---------------------------------------------------------------------------------

function upper(v) {
  if (typeof v === 'string') return v.toUpperCase();
  if (Array.isArray(v)) return v.map(upper);
  if (isObject(v)) return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, upper(x)]));
  return v;
}

// The procedure the page implements: echo args and kwargs back, strings upper-cased if asked.
function echo(args, kwargs) {
  const up = $('reg-upper').checked;
  return { args: up ? upper(args) : args, kwargs: up ? upper(kwargs) : kwargs };
}

function renderRegistrations() {
  const list = $('reg-list');
  list.replaceChildren();
  if (!client.registrations.length) {
    const li = document.createElement('li');
    li.className = 'empty';
    li.textContent = 'None yet.';
    list.append(li);
    return;
  }
  for (const r of client.registrations) {
    const li = document.createElement('li');
    const name = document.createElement('code');
    name.textContent = r.procedure;
    const badge = document.createElement('span');
    badge.className = `badge ${r.id !== null ? 'ok' : 'wait'}`;
    badge.textContent = r.id !== null ? 'registered' : 'pending';
    const b = document.createElement('button');
    b.type = 'button';
    b.className = 'small secondary';
    b.textContent = 'Unregister';
    b.setAttribute('aria-label', `Unregister ${r.procedure}`);
    b.addEventListener('click', () => {
      client.unregister(r).then(
        () => log('info', `unregistered ${r.procedure}`),
        (err) => logError(`unregister ${r.procedure} failed`, err));
    });
    const actions = document.createElement('span');
    actions.className = 'row-actions';
    actions.append(badge, b);
    li.append(name, actions);
    list.append(li);
  }
}

$('reg-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const v = validate([['procedure', $('reg-proc'), (i) => checkUri(i, 'procedure')]]);
  if (!v) return;
  if (client.registrations.some((r) => r.procedure === v.procedure)) {
    setFieldError($('reg-proc'), `${v.procedure} is already registered by this page.`);
    return;
  }
  const btn = $('reg-btn');
  busy(btn, true);
  try {
    await client.register(v.procedure, echo, {}, ({ args, kwargs, result, error }) => {
      const fields = [['called with', json([args, kwargs])]];
      if (error) log('error', `${v.procedure} invocation failed`, { fields, text: error.message });
      else log('invocation', v.procedure, { fields: [...fields, ['returned', json([result.args, result.kwargs])]] });
    });
    if (client.state !== 'connected') log('info', `will register ${v.procedure} once connected`);
  } catch (err) {
    if (!(err instanceof WampError && /connection_lost|not_connected/.test(err.error))) {
      setFieldError($('reg-proc'), err.message);
    }
  } finally {
    busy(btn, false);
  }
});

// ---- start ------------------------------------------------------------------------------------

renderSubscriptions();
renderRegistrations();
updateLogCount();
client.open();
window.addEventListener('pagehide', () => client.close());
window.addEventListener('pageshow', (e) => { if (e.persisted) client.open(); });
