// The frontend against a router with authentication, in a real browser (Debian's chromium driven
// by npm's playwright-core), with the real program, a real nats-server and the shipped services.
// `strict` has an auth file without an anonymous role: the page must ask to sign in, show a wrong
// password as such, sign in with wampcra (WebCrypto) and with a ticket, show not_authorized,
// sign in again by itself after a reconnect, and fall back to a ticket on a non-secure origin.
// `open` has an anonymous role: the page starts as a guest and can sign in and out.
// Screenshots of the sign-in form at 1280x800 and 390x844 land in MICROSERVICE_TEST_TMP.
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import * as h from './lib/harness.mjs';
import { autobahn } from './lib/wamp.mjs';

const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const FRONTEND = path.join(h.SOURCE_DIR, 'frontend');
// insecure.test resolves to 127.0.0.1 in the browser: a real non-secure origin (no crypto.subtle)
const INSECURE_HOST = 'insecure.test';
const LAUNCH_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  `--host-resolver-rules=MAP ${INSECURE_HOST} 127.0.0.1`];
const T = 15000; // UI waits
const PASSWORD = { alice: 'alice-pass-Ünïcode', bob: 'bob-password' };

let dir, nats, strict, open, authFile, openFile, token, browser, context, page;
const framesSent = [];      // every WebSocket frame the page sent, over all its connections
const pageProblems = [];    // console errors and uncaught exceptions in the pages

function makeSecret(password) {
  return JSON.parse(execFileSync(h.BIN, ['auth-secret', '--iterations', '1000'], { input: password + '\n' }).toString());
}

async function launch(file, name, port) {
  return h.startRuntime({
    dir, natsUrl: nats.url, http: port ?? true, name,
    servicesDir: path.join(dir, 'services'),
    args: ['--frontend', FRONTEND, '--auth', file],
  });
}

function watch(p, label) {
  p.setDefaultTimeout(T);
  p.on('console', (m) => { if (m.type() === 'error') pageProblems.push(`console (${label}): ${m.text()}`); });
  p.on('pageerror', (e) => pageProblems.push(`pageerror (${label}): ${e.message}`));
  p.on('websocket', (ws) => ws.on('framesent', (f) => framesSent.push(String(f.payload))));
  return p;
}

before(async () => {
  if (!fs.existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} is missing: the browser test needs Debian's chromium ` +
      '(scripts/setup.sh installs it: apt-get install chromium)');
  }
  dir = h.workDir('browser_auth');
  const tok = JSON.parse(execFileSync(h.BIN, ['auth-token']).toString());
  token = tok.token;
  const users = {
    alice: { role: 'admin', ...makeSecret(PASSWORD.alice), tokens: [tok.stored] },
    bob: { role: 'viewer', ...makeSecret(PASSWORD.bob) },
  };
  const roles = {
    admin: { call: ['>'], register: ['>'], publish: ['>'], subscribe: ['>'] },
    viewer: { call: ['greeting_service.hello'], register: [], publish: [], subscribe: ['websocket_test.*'] },
    guest: { call: ['greeting_service.*'], register: [], publish: [], subscribe: [] },
  };
  const bus = 'browser-auth-bus-secret-0123456789abcdef';
  authFile = path.join(dir, 'auth.json');
  fs.writeFileSync(authFile, JSON.stringify({ bus_secret: bus, users, roles }, null, 2));
  openFile = path.join(dir, 'auth-open.json');
  fs.writeFileSync(openFile, JSON.stringify({ bus_secret: bus, anonymous: 'guest', users, roles }, null, 2));

  nats = await h.startNats({ dir });
  h.servicesDir(path.join(dir, 'services'), ['greeting.lua', 'websocket_test.lua']);
  strict = await launch(authFile, 'strict');
  const { chromium } = await import('playwright-core');
  browser = await chromium.launch({ executablePath: CHROMIUM, args: LAUNCH_ARGS, headless: true });
  context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  page = watch(await context.newPage(), 'desktop');
});

after(async () => {
  if (browser) await browser.close().catch(() => {});
  await h.stopAll();
});

const dialog = (p = page) => p.locator('dialog#signin');
const button = (name, scope = page) => scope.getByRole('button', { name, exact: true });
const logEntries = (kind, p = page) => p.locator(`#log > li[data-kind="${kind}"]`);
const hellos = () => framesSent.map((f) => { try { return JSON.parse(f); } catch { return null; } })
  .filter((m) => Array.isArray(m) && m[0] === 1);

async function waitConnected(p = page) {
  await p.locator('#conn[data-state="connected"]').waitFor({ timeout: 20000 });
  const m = /session (\d+)/.exec(await p.locator('#conn').innerText());
  assert.ok(m, 'the connected state shows the session id');
  return Number(m[1]);
}

async function signIn(p, authid, password, method = 'auto') {
  const d = dialog(p);
  await d.waitFor({ state: 'visible' });
  await d.getByLabel('User').fill(authid);
  await d.getByLabel('Password').fill(password);
  await d.getByLabel('Method').selectOption(method);
  await button('Sign in', d).click();
}

async function noOverflow(p, what) {
  const overflow = await p.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `no horizontal scrolling ${what} (overflow ${overflow} px)`);
}

h.test('without an anonymous role the page shows the sign-in form', async () => {
  const res = await page.goto(strict.url('/'));
  assert.equal(res.status(), 200);
  const d = dialog();
  await d.waitFor({ state: 'visible' });
  assert.match(await d.locator('#signin-why').innerText(), /needs you to sign in/);
  assert.equal(await d.locator('#signin-error').isVisible(), false, 'no error before a sign-in was tried');
  assert.equal(await button('Continue as guest', d).isVisible(), false, 'the router refused guests: no guest button');
  assert.equal(await d.locator('#signin-insecure').isVisible(), false, '127.0.0.1 is a secure context');
  assert.equal(await page.locator('#conn').getAttribute('data-state'), 'unauthenticated');
  assert.equal(await page.locator('#who-text').innerText(), 'Not signed in');
  // the first HELLO was anonymous (no authmethods), as before authentication existed
  assert.equal(hellos()[0][2].authmethods, undefined);
  await logEntries('info').filter({ hasText: 'wamp.error.no_auth_method' }).first().waitFor();
  // the focus is in the form, and nothing retries behind it
  assert.equal(await page.evaluate(() => document.activeElement.id), 'signin-authid');
  const n = hellos().length;
  await h.sleep(1500);
  assert.equal(hellos().length, n, 'no reconnect loop while the router refuses anonymous');

  fs.mkdirSync(h.TEST_TMP, { recursive: true });
  const shot = path.join(h.TEST_TMP, 'browser-auth-signin-1280x800.png');
  await page.screenshot({ path: shot });
  assert.ok(fs.statSync(shot).size > 10000);
  await noOverflow(page, 'at 1280 px');
});

h.test('a wrong password shows "Authentication failed" in the form and the log', async () => {
  await signIn(page, 'bob', 'not-bobs-password');
  const err = dialog().locator('#signin-error');
  await err.waitFor({ state: 'visible' });
  assert.match(await err.innerText(), /Authentication failed/);
  assert.equal(await err.getAttribute('role'), 'alert');
  assert.ok(await dialog().isVisible(), 'the form stays open to try again');
  await logEntries('error').filter({ hasText: 'wamp.error.authentication_failed' }).first().waitFor();
  const hello = hellos().at(-1);
  assert.deepEqual(hello[2].authmethods, ['wampcra', 'ticket'], 'automatic prefers wampcra');
  assert.equal(hello[2].authid, 'bob');
  assert.ok(!framesSent.some((f) => f.includes('not-bobs-password')), 'wampcra never sends the password');
  const auth = framesSent.map((f) => JSON.parse(f)).filter((m) => m[0] === 5).at(-1);
  assert.match(auth[1], /^[A-Za-z0-9+/]{43}=$/, 'the AUTHENTICATE signature is a base64 HMAC-SHA256');
  // an empty field is caught before anything is sent
  const n = framesSent.length;
  await dialog().getByLabel('Password').fill('');
  await button('Sign in', dialog()).click();
  await dialog().locator('#signin-password-error').waitFor({ state: 'visible' });
  assert.equal(framesSent.length, n);
});

h.test('wampcra sign-in: WELCOME shown, calls and permitted subscriptions work', async () => {
  await signIn(page, 'bob', PASSWORD.bob);
  await dialog().waitFor({ state: 'hidden' });
  await waitConnected();
  assert.equal(await page.locator('#who-text').innerText(), 'Signed in as bob · role viewer · wampcra');
  assert.ok(await button('Sign out').isVisible());
  await logEntries('info').filter({ hasText: 'connected' }).filter({ hasText: 'wampcra' })
    .filter({ hasText: 'viewer' }).first().waitFor();
  assert.ok(!framesSent.some((f) => f.includes(PASSWORD.bob)), 'the password never went over the wire');
  const stored = await page.evaluate(() => JSON.stringify([{ ...localStorage }, { ...sessionStorage }, document.cookie]));
  assert.ok(!stored.includes(PASSWORD.bob), `nothing stored: ${stored}`);
  assert.equal(await dialog().getByLabel('Password').inputValue(), '', 'the form forgets the password');

  // the page's WebCrypto WAMP-CRA agrees with Autobahn's auth_cra (Unicode password, salt)
  const mine = await page.evaluate(async ([pw, salt, ch]) => {
    const w = await import('./wamp.js');
    const key = await w.deriveCraKey(pw, salt, 100, 32);
    return [key, await w.signCra(key, ch)];
  }, [PASSWORD.alice, 'sälz', '{"nonce":"n"}']);
  const key = autobahn.auth_cra.derive_key(PASSWORD.alice, 'sälz', 100, 32);
  assert.deepEqual(mine, [key, autobahn.auth_cra.sign(key, '{"nonce":"n"}')]);

  await button('Call').click();
  await page.locator('#call-result[data-state="ok"]', { hasText: 'Hello, Bob Ross' }).waitFor();

  await button('Subscribe').click();
  await page.locator('#sub-list li', { hasText: 'websocket_test.websocket_test' }).filter({ hasText: 'active' }).waitFor();
  // published by a service called over HTTP with alice's bearer token, with curl
  const r = await h.curl(strict.url('/websocket_test.hello_websocket'),
    ['-X', 'POST', '-H', `Authorization: Bearer ${token}`, '-d', '[["signed"], {"via": "curl"}]']);
  assert.equal(r.status, 200, r.body);
  await logEntries('event').filter({ hasText: '["signed"]' }).filter({ hasText: '{"via":"curl"}' }).first().waitFor();
});

h.test('not_authorized on call, publish, subscribe and register shows in the page', async () => {
  const call = page.locator('section#call');
  await call.getByLabel('Procedure').fill('websocket_test.hello_websocket');
  await button('Call').click();
  await page.locator('#call-result[data-state="error"]', { hasText: 'wamp.error.not_authorized' }).waitFor();
  await logEntries('error').filter({ hasText: 'call websocket_test.hello_websocket failed' })
    .filter({ hasText: 'wamp.error.not_authorized' }).first().waitFor();
  await call.getByLabel('Procedure').fill('greeting_service.hello');

  await button('Publish').click();
  await logEntries('error').filter({ hasText: 'publish websocket_test.websocket_test failed' })
    .filter({ hasText: 'wamp.error.not_authorized' }).first().waitFor();

  await page.locator('section#subscribe').getByLabel('Topic').fill('secret.topic');
  await button('Subscribe').click();
  await logEntries('error').filter({ hasText: 'subscribe secret.topic refused' })
    .filter({ hasText: 'wamp.error.not_authorized' }).first().waitFor();
  assert.equal(await page.locator('#sub-list li', { hasText: 'secret.topic' }).count(), 0);

  await button('Register').click();
  await logEntries('error').filter({ hasText: 'register browser.echo refused' })
    .filter({ hasText: 'wamp.error.not_authorized' }).first().waitFor();
  await page.locator('#reg-proc-error', { hasText: 'not_authorized' }).waitFor();
});

h.test('after a router restart the page signs in again with the credentials it holds', async () => {
  const port = strict.port;
  const before = hellos().length;
  await strict.stop('SIGTERM');
  await page.locator('#conn[data-state="disconnected"]').waitFor({ timeout: 20000 });
  strict = await launch(authFile, 'strict', port);
  await waitConnected();
  assert.equal(await page.locator('#who-text').innerText(), 'Signed in as bob · role viewer · wampcra');
  assert.equal(await dialog().isVisible(), false, 'no sign-in form: the credentials were in memory');
  const again = hellos().slice(before);
  assert.ok(again.length >= 1 && again.every((m) => m[2].authid === 'bob'), JSON.stringify(again));
  await page.locator('#sub-list li', { hasText: 'websocket_test.websocket_test' }).filter({ hasText: 'active' }).waitFor();
  const r = await h.post(strict, 'websocket_test.hello_websocket', [['back'], {}], { headers: { authorization: `Bearer ${token}` } });
  assert.equal(r.status, 200, r.text);
  await logEntries('event').filter({ hasText: '["back"]' }).first().waitFor();
});

h.test('sign out, then a ticket sign-in as another user', async () => {
  await button('Sign out').click();
  const d = dialog();
  await d.waitFor({ state: 'visible' });
  assert.match(await d.locator('#signin-why').innerText(), /needs you to sign in/);
  assert.equal(await page.locator('#who-text').innerText(), 'Not signed in');
  await logEntries('info').filter({ hasText: 'signed out (bob)' }).first().waitFor();

  await signIn(page, 'alice', PASSWORD.alice, 'ticket');
  await d.waitFor({ state: 'hidden' });
  await waitConnected();
  assert.equal(await page.locator('#who-text').innerText(), 'Signed in as alice · role admin · ticket');
  assert.deepEqual(hellos().at(-1)[2].authmethods, ['ticket']);
  await button('Call').click();
  await page.locator('#call-result[data-state="ok"]', { hasText: 'Hello, Bob Ross' }).waitFor();
  // the admin may subscribe where bob may not
  await page.locator('section#subscribe').getByLabel('Topic').fill('secret.topic');
  await button('Subscribe').click();
  await page.locator('#sub-list li', { hasText: 'secret.topic' }).filter({ hasText: 'active' }).waitFor();
});

h.test('phone (390x844): the sign-in form fits and its buttons are big enough', async () => {
  const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2 });
  try {
    const p = watch(await phone.newPage(), 'phone');
    await p.goto(strict.url('/'));
    const d = dialog(p);
    await d.waitFor({ state: 'visible' });
    await noOverflow(p, 'at 390 px');
    const box = await d.boundingBox();
    assert.ok(box.x >= 0 && box.x + box.width <= 390, `the form is inside the screen: ${JSON.stringify(box)}`);
    const small = await p.evaluate(() => [...document.querySelectorAll('dialog button')]
      .filter((b) => b.offsetParent && b.getBoundingClientRect().height < 24).map((b) => b.textContent));
    assert.deepEqual(small, []);
    await p.screenshot({ path: path.join(h.TEST_TMP, 'browser-auth-signin-phone-390x844.png') });
    await signIn(p, 'bob', 'wrong');
    await d.locator('#signin-error', { hasText: 'Authentication failed' }).waitFor();
    await p.screenshot({ path: path.join(h.TEST_TMP, 'browser-auth-signin-error-phone-390x844.png') });
    await signIn(p, 'bob', PASSWORD.bob);
    await waitConnected(p);
    await noOverflow(p, 'at 390 px when signed in');
    await p.screenshot({ path: path.join(h.TEST_TMP, 'browser-auth-signed-in-phone-390x844.png') });
  } finally {
    await phone.close();
  }
});

h.test('on a non-secure origin the form says WAMP-CRA is unavailable and signs in with a ticket', async () => {
  const c = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  try {
    const p = watch(await c.newPage(), 'insecure');
    await p.goto(`http://${INSECURE_HOST}:${strict.port}/`);
    assert.equal(await p.evaluate(() => window.isSecureContext), false);
    const d = dialog(p);
    await d.waitFor({ state: 'visible' });
    await d.locator('#signin-insecure').waitFor({ state: 'visible' });
    assert.match(await d.locator('#signin-insecure').innerText(), /WAMP-CRA is not available/);
    assert.equal(await d.locator('option[value="wampcra"]').isDisabled(), true);
    await p.screenshot({ path: path.join(h.TEST_TMP, 'browser-auth-signin-insecure-1280x800.png') });
    const before = hellos().length;
    await signIn(p, 'bob', PASSWORD.bob);
    await waitConnected(p);
    assert.equal(await p.locator('#who-text').innerText(), 'Signed in as bob · role viewer · ticket');
    assert.deepEqual(hellos().slice(before).at(-1)[2].authmethods, ['ticket']);
    await logEntries('info', p).filter({ hasText: 'WAMP-CRA needs a secure context' }).first().waitFor();
  } finally {
    await c.close();
  }
});

h.test('with an anonymous role the page starts as a guest, and signs in and out', async () => {
  open = await launch(openFile, 'open');
  const c = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  try {
    const p = watch(await c.newPage(), 'open');
    await p.goto(open.url('/'));
    await waitConnected(p);
    assert.equal(await dialog(p).isVisible(), false);
    assert.equal(await p.locator('#who-text').innerText(), 'Guest · role guest');
    await button('Call', p).click();
    await p.locator('#call-result[data-state="ok"]', { hasText: 'Hello, Bob Ross' }).waitFor();

    await button('Sign in', p.locator('#who')).click();
    const d = dialog(p);
    await d.waitFor({ state: 'visible' });
    assert.ok(await button('Continue as guest', d).isVisible());
    await signIn(p, 'bob', PASSWORD.bob, 'wampcra');
    await d.waitFor({ state: 'hidden' });
    await p.locator('#who-text', { hasText: 'Signed in as bob · role viewer · wampcra' }).waitFor();

    await button('Sign out', p).click();
    await p.locator('#who-text', { hasText: 'Guest · role guest' }).waitFor();
    assert.equal(await d.isVisible(), false, 'a guest session follows the sign-out, no form');
  } finally {
    await c.close();
  }
});

h.test('no errors in the page console', async () => {
  // A refused WebSocket while the server was down is logged by chromium itself; anything else is ours.
  const ours = pageProblems.filter((p) => !/WebSocket connection to .* failed/.test(p));
  assert.deepEqual(ours, []);
});
