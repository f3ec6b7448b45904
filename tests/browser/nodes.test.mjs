// End-to-end test of the chat page across two chatroom nodes joined through Redis, in a real headless Chromium:
// page A on node 1, page B on node 2, chatting both ways; a third page opened later on node 2 shows what was
// said as history.
//
// It starts its own redis-server (no persistence) and the two nodes, and stops them at the end:
//
//   CHAT_PORTS=8123,8124 REDIS_PORT=8125 node tests/browser/nodes.test.mjs   (scripts/browser-test.sh does all of this)
//
// Environment:
//   CHAT_PORTS      two free loopback ports, for node 1 and node 2 (required)
//   REDIS_PORT      a free loopback port for redis-server (required)
//   NODES_SERVER    the chatroom command, built with --features redis, split on spaces; "--port N --redis URL"
//                   is appended (default: target/debug/examples/chatroom, relative to the repository root)
//   REDIS_SERVER    the redis-server binary (default: redis-server)
//   CHROMIUM        the browser binary (default: /usr/bin/chromium)
//   ARTIFACTS       where screenshots and the logs go (default: artifacts/browser)
//
// The steps share the nodes, one browser and the pages, so they run in order, each building on the one before.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import * as shared from './page.mjs';

const { sleep, canConnect, say, rename } = shared;

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const PORTS = (process.env.CHAT_PORTS || '').split(',').map(Number);
const REDIS_PORT = Number(process.env.REDIS_PORT);
const SERVER = (process.env.NODES_SERVER || 'target/debug/examples/chatroom').trim().split(/\s+/);
const REDIS_SERVER = process.env.REDIS_SERVER || 'redis-server';
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const ARTIFACTS = path.resolve(ROOT, process.env.ARTIFACTS || 'artifacts/browser');
const url = (node) => `http://127.0.0.1:${PORTS[node - 1]}/`;

// Every wait is bounded, so a bug fails the test instead of hanging it.
const WAIT = 10_000;           // one UI condition
const COUNT = 15_000;          // a user count: a node learns the others' counts from Redis every second or two,
                               // and every page is told the count again every 5 s
const STEP = 60_000;           // one test step

const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

assert.equal(PORTS.length, 2, 'set CHAT_PORTS to two free loopback ports, "P1,P2"');
for (const port of [...PORTS, REDIS_PORT]) assert.ok(port > 0 && port < 65536, `bad port ${port}`);
fs.mkdirSync(ARTIFACTS, { recursive: true });
const PIDS_FILE = path.join(ARTIFACTS, 'nodes.pids');

// --- the processes: redis-server and two chatroom nodes ----------------------------------------

const children = [];     // { name, child, log }



// Starts `cmd args`, logging to ARTIFACTS/<name>.log; ready once `port` accepts a TCP connection and, if given,
// `ready` has appeared in its output.
async function start(name, cmd, args, port, ready) {
  const log = fs.createWriteStream(path.join(ARTIFACTS, `${name}.log`));
  const child = spawn(cmd, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  let exited = null;
  child.stdout.on('data', (d) => { output += d; log.write(d); });
  child.stderr.on('data', (d) => { output += d; log.write(d); });
  child.once('exit', (code, signal) => { exited = `exited (code ${code}, signal ${signal})`; });
  child.once('error', (e) => { exited = `failed to start: ${e.message}`; });
  children.push({ name, child, log });
  fs.appendFileSync(PIDS_FILE, `${child.pid}\n`);

  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline) {
    if (exited) throw new Error(`${name} ${exited}; see ${path.join(ARTIFACTS, `${name}.log`)}`);
    if ((!ready || output.includes(ready)) && await canConnect(port)) return;
    await sleep(100);
  }
  throw new Error(`${name} was not ready on port ${port} within 15 s`);
}

// Stops every process, newest first (the nodes before Redis): SIGINT (a graceful stop), SIGKILL after 5 s.
async function stopAll() {
  while (children.length > 0) {
    const { child, log } = children.pop();
    if (child.exitCode === null && child.signalCode === null) {
      const gone = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGINT');
      const stopped = await Promise.race([gone.then(() => true), sleep(5_000).then(() => false)]);
      if (!stopped) {
        child.kill('SIGKILL');
        await Promise.race([gone, sleep(5_000)]);
      }
    }
    log.end();
  }
}

process.on('exit', () => {
  for (const { child } of children) {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
});
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    console.error(`stopped by ${signal}`);
    process.exit(1);
  });
}

// --- the browser and the pages -------------------------------------------------------------------

let browser = null;
const pages = {};        // name -> { page, errors }

async function openPage(name, node, contextOptions) {
  const context = await browser.newContext(contextOptions);
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  const entry = { page, errors: [] };
  page.on('pageerror', (e) => entry.errors.push(String(e)));
  page.on('dialog', (d) => { entry.errors.push(`dialog: ${d.message()}`); d.dismiss().catch(() => {}); });
  const response = await page.goto(url(node), { timeout: WAIT });
  assert.equal(response.status(), 200, `GET / on node ${node} answers 200`);
  pages[name] = entry;
  return page;
}


// #state[data-state], #users[data-count], #messages > li[data-kind][data-id][data-mine][data-earlier],
// with .name and .text inside (as tests/browser/chat.test.mjs reads them).
const waitState = (page, state) => page.waitForSelector(`#state[data-state="${state}"]`, { timeout: WAIT });
const waitUsers = (page, n) => page.waitForSelector(`#users[data-count="${n}"]`, { timeout: COUNT });


// The chat messages a page shows, in order: "id: text", those shown as earlier (history) or live.
function messages(page, earlier) {
  return page.$$eval(`#messages > li[data-kind="message"][data-earlier="${earlier}"]`,
    (lis) => lis.map((li) => `${li.dataset.id}: ${li.querySelector('.text').textContent}`));
}



// --- the test ----------------------------------------------------------------------------------

before(async () => {
  fs.writeFileSync(PIDS_FILE, '');
  await start('redis', REDIS_SERVER, ['--port', String(REDIS_PORT), '--bind', '127.0.0.1', '--save', '',
    '--appendonly', 'no'], REDIS_PORT);
  const [cmd, ...args] = SERVER;
  for (const node of [1, 2]) {
    await start(`node${node}`, cmd, [...args, '--port', String(PORTS[node - 1]),
      '--redis', `redis://127.0.0.1:${REDIS_PORT}`], PORTS[node - 1], 'chatroom on ');
  }
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: 30_000 });
}, { timeout: 90_000 });

after(async () => {
  if (browser) await browser.close().catch(() => {});
  await stopAll();
}, { timeout: 60_000 });

let aliceId;
let bobId;

test('page A on node 1 and page B on node 2 connect; each sees the other arrive', { timeout: STEP }, async () => {
  const a = await openPage('alice', 1, { viewport: { width: 1280, height: 800 } });
  await waitState(a, 'connected');
  aliceId = (await waitEntry(a, { kind: 'join', mine: true })).id;
  assert.equal(await a.locator('#messages li[data-earlier="true"]').count(), 0, 'a fresh Redis: no history yet');

  const b = await openPage('bob', 2, { viewport: { width: 1280, height: 800 } });
  await waitState(b, 'connected');
  bobId = (await waitEntry(b, { kind: 'join', mine: true })).id;
  assert.notEqual(bobId, aliceId, 'user ids are unique across nodes');

  // A, on node 1, hears of B's join on node 2, as somebody else's.
  await waitEntry(a, { kind: 'join', id: bobId, name: `user-${bobId}`, mine: false });
  // B came second, so it cannot see A's join; it sees A in the count of both nodes, and A's rename.
  await waitUsers(a, 2);
  await waitUsers(b, 2);
  await rename(a, 'alice');
  await waitEntry(b, { kind: 'nick', id: aliceId, newName: 'alice', mine: false });
  await waitEntry(a, { kind: 'nick', id: aliceId, newName: 'alice', mine: true });
  await rename(b, 'bob');
  await waitEntry(a, { kind: 'nick', id: bobId, newName: 'bob', mine: false });
  await waitEntry(b, { kind: 'nick', id: bobId, newName: 'bob', mine: true });
});

test('A says something and B sees it; B answers and A sees it', { timeout: STEP }, async () => {
  const a = pages.alice.page;
  const b = pages.bob.page;
  await say(a, 'Hello from node 1, Bob.');
  await waitEntry(b, { kind: 'message', id: aliceId, name: 'alice', text: 'Hello from node 1, Bob.', mine: false });
  // A's own message comes back to it through Redis too.
  await waitEntry(a, { kind: 'message', id: aliceId, name: 'alice', text: 'Hello from node 1, Bob.', mine: true });

  await say(b, 'Node 2 hears you, Alice. 👋');
  await waitEntry(a, { kind: 'message', id: bobId, name: 'bob', text: 'Node 2 hears you, Alice. 👋', mine: false });
  await waitEntry(b, { kind: 'message', id: bobId, name: 'bob', text: 'Node 2 hears you, Alice. 👋', mine: true });
});

test('both pages show the same messages in the same order, even when both type at once', { timeout: STEP }, async () => {
  const a = pages.alice.page;
  const b = pages.bob.page;
  // Both send five messages without waiting for each other: their order is Redis's, the same for both pages.
  for (let i = 1; i <= 5; i++) {
    await Promise.all([say(a, `A${i} from node 1`), say(b, `B${i} from node 2`)]);
  }
  await waitEntry(a, { kind: 'message', id: bobId, text: 'B5 from node 2' });
  await waitEntry(a, { kind: 'message', id: aliceId, text: 'A5 from node 1' });
  await waitEntry(b, { kind: 'message', id: bobId, text: 'B5 from node 2' });
  await waitEntry(b, { kind: 'message', id: aliceId, text: 'A5 from node 1' });

  const seenByA = await messages(a, false);
  const seenByB = await messages(b, false);
  assert.equal(seenByA.length, 12, `A shows 12 messages: ${JSON.stringify(seenByA)}`);
  assert.deepEqual(seenByB, seenByA, 'B shows the same messages in the same order as A');
  // Each sender's messages keep the order they were typed in.
  for (const [id, prefix] of [[aliceId, 'A'], [bobId, 'B']]) {
    const own = seenByA.filter((m) => m.startsWith(`${id}: ${prefix}`));
    assert.deepEqual(own, [1, 2, 3, 4, 5].map((i) => `${id}: ${prefix}${i} from node ${prefix === 'A' ? 1 : 2}`));
  }
  await shot(a, 'nodes-a-node1.png');
  await shot(b, 'nodes-b-node2.png');
});

test('a third page, opened later on node 2, shows the earlier messages as history', { timeout: STEP }, async () => {
  const a = pages.alice.page;
  const b = pages.bob.page;
  const c = await openPage('carol', 2, { viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
  await waitState(c, 'connected');
  const carolId = (await waitEntry(c, { kind: 'join', mine: true })).id;
  await waitEntry(c, { kind: 'status', includes: 'Earlier messages are above this line.' });
  await c.waitForSelector('#messages li[data-earlier="true"]', { timeout: WAIT });

  // The history is what A and B saw, in their order, dimmed, with the names of the time.
  const history = await messages(c, true);
  assert.deepEqual(history, await messages(a, false), 'C\'s history is the conversation so far, in the same order');
  const opacity = await c.$eval('#messages li[data-earlier="true"]', (li) => Number(getComputedStyle(li).opacity));
  assert.ok(opacity < 1, `earlier messages are dimmed (opacity ${opacity})`);
  await waitEntry(c, { kind: 'message', earlier: true, id: aliceId, name: 'alice', text: 'Hello from node 1, Bob.', mine: false });

  // A (node 1) and B (node 2) hear of C's join; C's own message reaches both.
  await waitEntry(a, { kind: 'join', id: carolId, mine: false });
  await waitEntry(b, { kind: 'join', id: carolId, mine: false });
  await say(c, 'Carol here, late but caught up.');
  await waitEntry(a, { kind: 'message', id: carolId, text: 'Carol here, late but caught up.', mine: false });
  await waitEntry(b, { kind: 'message', id: carolId, text: 'Carol here, late but caught up.', mine: false });
  await waitEntry(c, { kind: 'message', id: carolId, text: 'Carol here, late but caught up.', mine: true, earlier: false });
  await shot(c, 'nodes-c-history.png');

  for (const name of ['alice', 'bob', 'carol']) {
    assert.deepEqual(pages[name].errors, [], `no script errors or dialogs on ${name}'s page`);
  }
});

function shot(page, file) {
  return shared.shot(page, ARTIFACTS, file, WAIT);
}

function waitEntry(page, want) {
  return shared.waitEntry(page, want, WAIT);
}
