// A durable subscription made by a script ends when the script is reloaded (issue 17): with the
// services folder watched (the default), version 1 of the script handles events; once version 2 is loaded every later event is
// handled by version 2 only (version 1's handlers take no new message: one that was already on
// its way is given back at once).
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { connect } from 'nats';
import * as h from './lib/harness.mjs';

let dir, nats, nc, js;
const handled = []; // [msg_id, version]

const script = (version) => `-- written by tests/blackbox/jetstream_reload.test.mjs
local microservice = require "microservice"
local svc = { name = "jsreload", streams = { RL = { subjects = { "rl.>" } } } }
microservice.subscribe{ stream = "RL", durable = "rl" }(function(args, kwargs, meta)
  microservice.publish("rltest.handled", { meta.msg_id, "${version}" })
end)
svc.version = microservice.rpc(function() return { "${version}" } end)
return svc
`;

before(async () => {
  dir = h.workDir('jetstream_reload');
  nats = await h.startNats({ dir, jetstream: true });
  nc = await connect({ servers: nats.url });
  js = nc.jetstream();
  const sub = nc.subscribe('rltest.handled');
  (async () => { for await (const m of sub) handled.push(JSON.parse(h.sc.decode(m.data))[0]); })();
});

after(async () => {
  if (nc) await nc.close();
  await h.stopAll();
});

const publish = (id) => js.publish('rl.e', h.sc.encode('[[],{}]'), { msgID: id });

h.test('a reloaded script\'s durable subscription hands over to the new version', async () => {
  const sdir = path.join(dir, 'services');
  fs.mkdirSync(sdir);
  fs.writeFileSync(path.join(sdir, 'jsreload.lua'), script('v1'));
  const rt = await h.startRuntime({ dir, natsUrl: nats.url, servicesDir: sdir });
  // /healthz says ok only once the streams the services declare exist
  const jsm = await nc.jetstreamManager();
  assert.equal((await jsm.streams.info('RL')).config.name, 'RL');
  await publish('before');
  await h.waitFor(() => handled.some(([id]) => id === 'before'), { what: 'v1 handled an event' });
  fs.writeFileSync(path.join(sdir, 'jsreload.lua'), script('v2'));
  await h.waitFor(async () => (await h.post(rt, 'jsreload.version', [[], {}])).json?.[0]?.[0] === 'v2', { what: 'v2 loaded' });
  for (let i = 1; i <= 30; i++) await publish(`after-${i}`);
  await h.waitFor(() => handled.filter(([id]) => id.startsWith('after-')).length >= 30, { timeout: 30000, what: '30 events handled' });
  const after = handled.filter(([id]) => id.startsWith('after-'));
  assert.deepEqual([...new Set(after.map(([, v]) => v))], ['v2'], 'only v2 handles events after the reload');
  assert.equal(new Set(after.map(([id]) => id)).size, 30);
});
