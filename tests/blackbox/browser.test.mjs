// The frontend in a real browser: Debian's chromium, headless, driven by npm's playwright-core,
// against the real program (its WAMP router on /websocket), a real nats-server and the shipped
// services. Screenshots at desktop and phone widths land in MICROSERVICE_TEST_TMP.
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import * as h from './lib/harness.mjs';

const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const FRONTEND = path.join(h.SOURCE_DIR, 'frontend');
const LAUNCH_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const T = 15000; // UI waits

let dir, nats, rt, nc, browser, context, page;
const framesSent = [];      // every WebSocket frame the page sent, over all its connections
const pageProblems = [];    // console errors and uncaught exceptions in the page

async function launchRuntime(port) {
  return h.startRuntime({
    dir, natsUrl: nats.url, http: port ?? true,
    servicesDir: path.join(dir, 'services'),
    args: ['--frontend', FRONTEND],
  });
}

before(async () => {
  if (!fs.existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} is missing: the browser test needs Debian's chromium ` +
      '(scripts/setup.sh installs it: apt-get install chromium)');
  }
  dir = h.workDir('browser');
  nats = await h.startNats({ dir });
  h.servicesDir(path.join(dir, 'services'), ['greeting.lua', 'websocket_test.lua']);
  rt = await launchRuntime();
  nc = await h.natsClient(nats.url);
  const { chromium } = await import('playwright-core');
  browser = await chromium.launch({ executablePath: CHROMIUM, args: LAUNCH_ARGS, headless: true });
  context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  page = await context.newPage();
  page.setDefaultTimeout(T);
  page.on('console', (m) => { if (m.type() === 'error') pageProblems.push(`console: ${m.text()}`); });
  page.on('pageerror', (e) => pageProblems.push(`pageerror: ${e.message}`));
  page.on('websocket', (ws) => ws.on('framesent', (f) => framesSent.push(String(f.payload))));
});

after(async () => {
  if (browser) await browser.close().catch(() => {});
  if (nc) await nc.close().catch(() => {});
  await h.stopAll();
});

const section = (id) => page.locator(`section#${id}`);
const button = (name, scope = page) => scope.getByRole('button', { name, exact: true });
const logEntries = (kind) => page.locator(`#log > li[data-kind="${kind}"]`);
const connState = () => page.locator('#conn').getAttribute('data-state');

async function waitConnected(p = page) {
  await p.locator('#conn[data-state="connected"]').waitFor({ timeout: 20000 });
  const text = await p.locator('#conn').innerText();
  const m = /session (\d+)/.exec(text);
  assert.ok(m, `the connected state shows the session id: ${text}`);
  return Number(m[1]);
}

function natsNext(sub, ms = 5000) {
  return Promise.race([
    (async () => { for await (const m of sub) return m; return null; })(),
    h.sleep(ms).then(() => null),
  ]);
}

let firstSession;

h.test('the page loads from GET / and connects to /websocket with a session id', async () => {
  const res = await page.goto(rt.url('/'));
  assert.equal(res.status(), 200);
  assert.match(await page.title(), /microservice/i);
  // the state is visible while connecting or once connected
  assert.ok(['connecting', 'connected'].includes(await connState()));
  firstSession = await waitConnected();
  assert.ok(firstSession >= 1 && firstSession <= 2 ** 53);
  const endpoint = await page.locator('#endpoint').innerText();
  assert.equal(endpoint, `ws://127.0.0.1:${rt.port}/websocket`);
  assert.ok(await logEntries('info').filter({ hasText: String(firstSession) }).count() >= 1,
    'the log says connected with the session id');
  assert.equal(await page.locator('#who').isVisible(), false, 'authentication off: no identity, no sign-in');
  assert.equal(await page.locator('dialog#signin').isVisible(), false);
  const hello = JSON.parse(framesSent[0]);
  assert.equal(hello[0], 1, `the first frame is HELLO: ${framesSent[0]}`);
  assert.equal(typeof hello[1], 'string');
});

h.test('accessible controls: labelled fields, real buttons, an aria-live log', async () => {
  for (const name of ['Subscribe', 'Publish', 'Call', 'Register']) {
    const b = button(name);
    assert.equal(await b.count(), 1, `one button named ${name}`);
    assert.equal(await b.evaluate((el) => el.tagName), 'BUTTON');
  }
  const unlabelled = await page.evaluate(() => [...document.querySelectorAll('input, textarea, select')]
    .filter((el) => !el.labels || el.labels.length === 0).map((el) => el.id || el.outerHTML));
  assert.deepEqual(unlabelled, [], 'every form control has a <label for>');
  assert.equal(await page.locator('#log').getAttribute('aria-live'), 'polite');
  assert.equal(await section('subscribe').getByLabel('Topic').inputValue(), 'websocket_test.websocket_test');
  assert.equal(await section('call').getByLabel('Procedure').inputValue(), 'greeting_service.hello');
  assert.deepEqual(JSON.parse(await section('call').getByLabel(/^Args/).inputValue()), ['Bob']);
  assert.deepEqual(JSON.parse(await section('call').getByLabel(/^Kwargs/).inputValue()), { last_name: 'Ross' });
});

h.test('Subscribe, then websocket_test.hello_websocket over HTTP shows the event in the page', async () => {
  await button('Subscribe').click();
  await section('subscribe').locator('#sub-list li', { hasText: 'websocket_test.websocket_test' })
    .filter({ hasText: 'active' }).waitFor();
  const r = await h.post(rt, 'websocket_test.hello_websocket', [['websockets'], { are: 'awesome' }]);
  assert.equal(r.status, 200, r.text);
  const ev = logEntries('event').filter({ hasText: 'websocket_test.websocket_test' })
    .filter({ hasText: '["websockets"]' }).filter({ hasText: '{"are":"awesome"}' });
  await ev.first().waitFor();
  // newest first: the event is on top of the log
  assert.equal(await page.locator('#log > li').first().getAttribute('data-kind'), 'event');
  assert.match(await ev.first().locator('time').innerText(), /^\d\d:\d\d:\d\d\.\d{3}$/);
});

h.test('Call greeting_service.hello from the page shows "Hello, Bob Ross"', async () => {
  await button('Call').click();
  await page.locator('#call-result[data-state="ok"]', { hasText: 'Hello, Bob Ross' }).waitFor();
  await logEntries('result').filter({ hasText: 'greeting_service.hello' })
    .filter({ hasText: '["Hello, Bob Ross"]' }).first().waitFor();

  // an error from the service is shown, too
  const call = section('call');
  await call.getByLabel(/^Kwargs/).fill('{"nope": 1}');
  await button('Call').click();
  await page.locator('#call-result[data-state="error"]', { hasText: 'wamp.error.invalid_argument' }).waitFor();
  await logEntries('error').filter({ hasText: 'wamp.error.invalid_argument' }).first().waitFor();
  await call.getByLabel(/^Kwargs/).fill('{"last_name": "Ross"}');
});

h.test('invalid JSON in args or kwargs shows a validation message and sends nothing', async () => {
  const call = section('call');
  const args = call.getByLabel(/^Args/);
  await args.fill('["Bob"');
  const before = framesSent.length;
  await button('Call').click();
  const msg = call.locator('#call-args-error');
  await msg.waitFor({ state: 'visible' });
  assert.match(await msg.innerText(), /JSON/);
  assert.equal(await msg.getAttribute('role'), 'alert');
  assert.equal(await args.getAttribute('aria-invalid'), 'true');
  // valid JSON of the wrong shape is refused too
  await args.fill('{"a": 1}');
  await button('Call').click();
  await page.waitForFunction(() => /array/.test(document.getElementById('call-args-error').textContent));

  const pub = section('publish');
  const sub = nc.subscribe('websocket_test.websocket_test');
  await nc.flush();
  await pub.getByLabel(/^Kwargs/).fill('{"are": awesome}');
  await button('Publish').click();
  await pub.locator('#pub-kwargs-error').waitFor({ state: 'visible' });
  assert.equal(await natsNext(sub, 700), null, 'nothing was published on NATS');
  sub.unsubscribe();
  assert.deepEqual(framesSent.slice(before), [], 'no WebSocket frame left the page');

  // fixing the field clears the message
  await args.fill('["Bob"]');
  assert.equal(await call.locator('#call-args-error').isVisible(), false);
  await pub.getByLabel(/^Kwargs/).fill('{"are": "awesome"}');
});

h.test('Register browser.echo, then POST /browser.echo over HTTP reaches the page', async () => {
  const reg = section('register');
  assert.equal(await reg.getByLabel('Procedure').inputValue(), 'browser.echo');
  await button('Register').click();
  await reg.locator('#reg-list li', { hasText: 'browser.echo' }).filter({ hasText: 'registered' }).waitFor();
  const r = await h.post(rt, 'browser.echo', [['hello', 1, { x: 'y' }], { who: 'bob', n: 2 }]);
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.json, [['HELLO', 1, { x: 'Y' }], { who: 'BOB', n: 2 }]);
  await logEntries('invocation').filter({ hasText: 'browser.echo' }).filter({ hasText: '"who":"BOB"' }).first().waitFor();

  // the page's procedure as written: without upper-casing it echoes as is
  await reg.getByLabel('Upper-case strings in the reply').uncheck();
  const r2 = await h.post(rt, 'browser.echo', [['as', 'is'], {}]);
  assert.deepEqual(r2.json, [['as', 'is'], {}]);
  await reg.getByLabel('Upper-case strings in the reply').check();

  // over NATS, too
  const m = await nc.request('browser.echo', h.sc.encode('[["nats"], {}]'), { timeout: 5000 });
  assert.deepEqual(JSON.parse(h.sc.decode(m.data)), [['NATS'], {}]);
});

h.test('Publish from the page reaches a NATS subscriber (and the page itself)', async () => {
  const pub = section('publish');
  await pub.getByLabel(/^Args/).fill('["from the page", 42]');
  await pub.getByLabel(/^Kwargs/).fill('{"are": "awesome", "n": 1}');
  const sub = nc.subscribe('websocket_test.websocket_test');
  await nc.flush();
  await button('Publish').click();
  const m = await natsNext(sub, 5000);
  sub.unsubscribe();
  assert.ok(m, 'the publication arrived at the NATS subscriber');
  assert.deepEqual(JSON.parse(h.sc.decode(m.data)), [['from the page', 42], { are: 'awesome', n: 1 }]);
  await logEntries('published').filter({ hasText: '["from the page",42]' }).first().waitFor();
  // "Deliver to this page too" is checked: exclude_me false, so the page gets its own event
  await logEntries('event').filter({ hasText: '["from the page",42]' }).filter({ hasText: '"n":1' }).first().waitFor();
});

h.test('screenshots at desktop (1280x800) and phone (390x844) widths, no horizontal overflow', async () => {
  fs.mkdirSync(h.TEST_TMP, { recursive: true });
  const desktop = path.join(h.TEST_TMP, 'browser-desktop-1280x800.png');
  await page.setViewportSize({ width: 1280, height: 800 });
  await page.screenshot({ path: desktop });
  const overflowDesktop = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflowDesktop <= 0, `no horizontal scrolling at 1280 px (overflow ${overflowDesktop} px)`);

  const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2 });
  try {
    const p = await phone.newPage();
    p.on('pageerror', (e) => pageProblems.push(`pageerror (phone): ${e.message}`));
    await p.goto(rt.url('/'));
    await waitConnected(p);
    await p.getByRole('button', { name: 'Call', exact: true }).click();
    await p.locator('#call-result[data-state="ok"]', { hasText: 'Hello, Bob Ross' }).waitFor({ timeout: T });
    const overflow = await p.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `no horizontal scrolling at 390 px (overflow ${overflow} px)`);
    // every button is big enough to tap
    const small = await p.evaluate(() => [...document.querySelectorAll('button')]
      .filter((b) => b.offsetParent && b.getBoundingClientRect().height < 24).map((b) => b.textContent));
    assert.deepEqual(small, []);
    await p.evaluate(() => window.scrollTo(0, 0));
    await p.screenshot({ path: path.join(h.TEST_TMP, 'browser-phone-390x844.png') });
    await p.screenshot({ path: path.join(h.TEST_TMP, 'browser-phone-390x844-full.png'), fullPage: true });
  } finally {
    await phone.close();
  }
  assert.ok(fs.statSync(desktop).size > 10000);
});

h.test('the page reconnects by itself and subscribes and registers again', async () => {
  const port = rt.port;
  await rt.stop('SIGTERM');
  await page.locator('#conn[data-state="disconnected"]', { hasText: /retrying/i }).waitFor({ timeout: 20000 });
  rt = await launchRuntime(port);
  const session = await waitConnected();
  assert.notEqual(session, firstSession, 'a new session after reconnecting');
  await section('subscribe').locator('#sub-list li', { hasText: 'websocket_test.websocket_test' })
    .filter({ hasText: 'active' }).waitFor();
  await section('register').locator('#reg-list li', { hasText: 'browser.echo' }).filter({ hasText: 'registered' }).waitFor();

  const r = await h.post(rt, 'websocket_test.hello_websocket', [['again'], { after: 'reconnect' }]);
  assert.equal(r.status, 200, r.text);
  await logEntries('event').filter({ hasText: '["again"]' }).filter({ hasText: '{"after":"reconnect"}' }).first().waitFor();
  const e = await h.post(rt, 'browser.echo', [['back'], {}]);
  assert.equal(e.status, 200, e.text);
  assert.deepEqual(e.json, [['BACK'], {}]);
});

h.test('no errors in the page console', async () => {
  // A refused WebSocket while the server was down is logged by chromium itself; anything else is ours.
  const ours = pageProblems.filter((p) => !/WebSocket connection to .* failed/.test(p));
  assert.deepEqual(ours, []);
});
