// End-to-end test of the live stats page (src/metrics/stats.html, served by the library on GET /stats) in a real
// headless Chromium, against the chatroom, which has metrics on.
//
//   CHAT_PORT=8123 node tests/browser/stats.test.mjs      (scripts/browser-test.sh does all of this)
//
// Environment:
//   CHAT_PORT       loopback port for the chatroom (required; scripts/browser-test.sh picks a free one)
//   CHAT_SERVER     the server command, split on spaces; "--port N" is appended
//                   (default: target/debug/examples/chatroom, relative to the repository root)
//   CHROMIUM        the browser binary (default: /usr/bin/chromium)
//   ARTIFACTS       where screenshots and the server log go (default: artifacts/browser)
//
// The steps share one server, one browser and the pages, so they run in order, each building on the one before:
// the page connects and plots, two chat pages bring users and messages, /metrics agrees, the figures are shown as
// they should be, and the page comes back after the server restarts.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import * as shared from './page.mjs';

const { sleep, say, CHROMIUM_ARGS } = shared;

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const PORT = Number(process.env.CHAT_PORT);
const SERVER = (process.env.CHAT_SERVER || 'target/debug/examples/chatroom').trim().split(/\s+/);
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const ARTIFACTS = path.resolve(ROOT, process.env.ARTIFACTS || 'artifacts/browser');
const BASE = `http://127.0.0.1:${PORT}`;

// Every wait is bounded, so a bug fails the test instead of hanging it.
const WAIT = 10_000;           // one UI condition
const PUSHES = 8_000;          // a few of the server's once-a-second pushes
const STEP = 45_000;           // one test step
const RECONNECT = 25_000;      // the page's backoff tops out at 10 s between attempts

assert.ok(PORT > 0 && PORT < 65536, 'set CHAT_PORT to a free loopback port');
fs.mkdirSync(ARTIFACTS, { recursive: true });
const LOG = path.join(ARTIFACTS, 'server-stats.log');
fs.writeFileSync(LOG, '');     // each start of the chatroom adds to it

let server = null;
let browser = null;
const pages = {};        // name -> { page, errors, dialogs, received }

const startServer = async () => {
  server = await shared.startServer({
    command: SERVER, port: PORT, cwd: ROOT, logPath: LOG, pidsFile: path.join(ARTIFACTS, 'server.pid'),
  });
};

process.on('exit', () => { if (server) server.kill('SIGKILL'); });
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    console.error(`stopped by ${signal}`);
    process.exit(1);
  });
}

async function open(name, url, contextOptions) {
  pages[name] = await shared.openPage(browser, url, { timeout: WAIT, contextOptions });
  return pages[name].page;
}

// --- reading the page through its test hooks ---------------------------------------------------
// #status[data-state]; canvas[data-points]; the figures carry their raw number in data-value ("" while unknown).

const points = (page, id) => page.$eval(`#${id}`, (c) => Number(c.dataset.points));

const figure = (page, id) => page.$eval(`#${id}`, (e) => ({ value: e.dataset.value, text: e.textContent }));

// Waits until the figure `id` shows a number that is `equals`, or at least `min`, or above `above`.
async function waitFigure(page, id, want, timeout = PUSHES) {
  const handle = await page.waitForFunction(([id, want]) => {
    const e = document.getElementById(id);
    const v = Number(e.dataset.value);
    if (e.dataset.value === '' || !Number.isFinite(v)) return null;
    if (want.equals !== undefined && v !== want.equals) return null;
    if (want.min !== undefined && v < want.min) return null;
    if (want.above !== undefined && v <= want.above) return null;
    return { value: e.dataset.value, text: e.textContent };
  }, [id, want], { timeout });
  return handle.jsonValue();
}

// --- the test ----------------------------------------------------------------------------------

before(async () => {
  await startServer();
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: 30_000 });
}, { timeout: 60_000 });

after(async () => {
  if (browser) await browser.close().catch(() => {});
  await shared.stopServer(server);
  server = null;
}, { timeout: 30_000 });

test('the stats page loads, connects, and shows the first push without a rate', { timeout: STEP }, async () => {
  const page = await open('stats', `${BASE}/stats`, { viewport: { width: 1280, height: 900 } });
  await page.waitForSelector('#status[data-state="connected"]');
  assert.equal((await page.textContent('#status')).trim(), 'connected');

  // Links to the chat and to /metrics.
  const links = await page.$$eval('a[href]', (as) => as.map((a) => a.getAttribute('href')));
  assert.ok(links.includes('/') && links.includes('/metrics'), `links: ${links}`);

  // The first push has nothing to compare with: counts are shown at once, the rates only from the second push on.
  // (The page keeps its samples in `samples`, oldest first; what it shows is checked too if the second push has not
  // come yet.)
  const first = await (await page.waitForFunction(() => {
    if (samples.length === 0) return null;
    const v = (id) => document.getElementById(id).dataset.value;
    const shown = samples.length === 1 ? { connections: v('connections'), msgsIn: v('msgs-in'), bytesOut: v('bytes-out') } : null;
    return { sample: samples[0], shown };
  }, null, { timeout: PUSHES })).jsonValue();
  assert.ok(first.sample.connections >= 1, `the page's own socket is a connection: ${JSON.stringify(first)}`);
  for (const key of ['msgsIn', 'msgsOut', 'bytesIn', 'bytesOut']) {
    assert.equal(first.sample[key], null, `no ${key} rate from a single push`);
  }
  if (first.shown) {
    assert.ok(Number(first.shown.connections) >= 1);
    assert.equal(first.shown.msgsIn, '', 'no rate shown from a single push');
    assert.equal(first.shown.bytesOut, '', 'no rate shown from a single push');
  }
});

test('the plots grow by a point a second', { timeout: STEP }, async () => {
  const page = pages.stats.page;
  const before = await points(page, 'plot-users');
  await sleep(3_000);
  // Pushes come once a second; allow for one late one.
  await page.waitForFunction((n) => Number(document.getElementById('plot-users').dataset.points) >= n,
    before + 2, { timeout: PUSHES });
  const after = await points(page, 'plot-users');
  assert.ok(after >= before + 2 && after <= before + 5, `points ${before} -> ${after} over about 3 s`);
  // The rates have a value now, and their plots a point for each push but the first.
  assert.ok(await points(page, 'plot-messages') >= 1, 'the messages plot draws');
  assert.ok(await points(page, 'plot-bytes') >= 1, 'the bytes plot draws');
  const out = await waitFigure(page, 'msgs-out', { above: 0 });        // the pushes themselves go out
  assert.match(out.text, /\/s$/, `messages out shown as a rate: ${out.text}`);
  const bytesOut = await waitFigure(page, 'bytes-out', { above: 0 });
  assert.match(bytesOut.text, /^\d+(\.\d+)? (B|KiB|MiB|GiB)\/s$/, `bytes out human-readable: ${bytesOut.text}`);
});

test('two chat pages show as two users; their messages as messages in', { timeout: STEP }, async () => {
  const page = pages.stats.page;
  const a = await open('alice', `${BASE}/`, { viewport: { width: 800, height: 600 } });
  const b = await open('bob', `${BASE}/`, { viewport: { width: 800, height: 600 } });
  for (const chat of [a, b]) await chat.waitForSelector('#state[data-state="connected"]');

  const users = await waitFigure(page, 'users', { equals: 2 });
  assert.equal(users.text, '2');
  const connections = await waitFigure(page, 'connections', { min: 3 });   // two chats and this page's socket
  assert.ok(Number(connections.value) >= 3);

  // A burst of messages, some in each second, until the page shows them as a rate.
  let sent = 0;
  const deadline = Date.now() + PUSHES;
  let seen = null;
  while (!seen && Date.now() < deadline) {
    await say(a, `from alice ${sent}`);
    await say(b, `from bob ${sent}`);
    sent += 2;
    seen = await page.$eval('#msgs-in', (e) => (Number(e.dataset.value) > 0 ? { value: e.dataset.value, text: e.textContent } : null));
    if (!seen) await sleep(150);
  }
  assert.ok(seen, `#msgs-in showed no rate while ${sent} messages were sent`);
  assert.match(seen.text, /^[\d,]+(\.\d)?(k|M)?\/s$/, `messages in shown as a rate: ${seen.text}`);
  await waitFigure(page, 'bytes-in', { above: 0 });
  pages.stats.sent = sent;

  await page.waitForFunction(() => Number(document.getElementById('plot-messages').dataset.points) >= 2);
  await sleep(1_200);    // one more push, so that the lines show the burst
  await shared.shot(page, ARTIFACTS, 'stats.png', WAIT);
});

test('GET /metrics counts the messages', { timeout: STEP }, async () => {
  const response = await fetch(`${BASE}/metrics`, { signal: AbortSignal.timeout(WAIT) });
  assert.equal(response.status, 200);
  assert.match(response.headers.get('content-type') || '', /^text\/plain/);
  const text = await response.text();
  assert.match(text, /^# HELP wsloop_/, 'Prometheus text format');
  assert.ok(text.includes('wsloop_messages_received_total'), 'wsloop_messages_received_total is there');
  // Every loop's count, added up: at least the chat messages sent above.
  const received = text.split('\n')
    .filter((line) => /^wsloop_messages_received_total(\{[^}]*\})? /.test(line))
    .reduce((sum, line) => sum + Number(line.split(' ').pop()), 0);
  assert.ok(received >= pages.stats.sent, `wsloop_messages_received_total ${received} >= ${pages.stats.sent} sent`);
});

test('the figures: human-readable, p99 in µs or ms, a counter reset gives no negative rate', { timeout: STEP }, async () => {
  // A page of its own, fed pushes by hand (besides the server's own) through the page's addPush.
  const page = await open('fed', `${BASE}/stats`, { viewport: { width: 1280, height: 900 } });
  await page.waitForSelector('#status[data-state="connected"]');
  const shown = await page.evaluate(() => {
    const read = () => Object.fromEntries(['users', 'msgs-in', 'msgs-out', 'bytes-in', 'bytes-out', 'queued', 'dropped', 'p99']
      .map((id) => [id, { value: document.getElementById(id).dataset.value, text: document.getElementById(id).textContent }]));
    const t = Date.now() + 60_000;      // after the server's own pushes, so the plots do not start over
    const push = (dt, totals, extra) => addPush({
      type: 'stats', time: t + dt, loops: 1, connections: 3, users: 2, queued: 0, dropped_slow: 0, turn_p99: 0.000025,
      messages_in: totals[0], messages_out: totals[1], bytes_in: totals[2], bytes_out: totals[3], ...extra,
    });
    push(0, [100, 200, 10_000, 20_000]);
    push(2000, [110, 240, 10_000 + 3 * 1024, 20_000 + 5 * 1024 * 1024], { turn_p99: 0.0025, queued: 1536 });
    const rates = read();
    push(3000, [5, 7, 100, 200], { turn_p99: null, dropped_slow: 3 });          // the server restarted
    const reset = read();
    push(4000, [15, 17, 100, 1224], { turn_p99: '+Inf' });
    const again = read();
    return { rates, reset, again };
  });
  // Rates: the difference over the 2 s between the pushes.
  assert.equal(shown.rates['msgs-in'].value, '5');
  assert.equal(shown.rates['msgs-in'].text, '5.0/s');
  assert.equal(shown.rates['msgs-out'].text, '20/s');
  assert.equal(shown.rates['bytes-in'].text, '1.50 KiB/s');
  assert.equal(shown.rates['bytes-out'].text, '2.50 MiB/s');
  assert.equal(shown.rates.queued.text, '1.50 KiB');
  assert.equal(shown.rates.p99.text, '≤ 2.5 ms');
  // Totals that went down: no rate (never a negative one) until the next push.
  for (const id of ['msgs-in', 'msgs-out', 'bytes-in', 'bytes-out']) {
    assert.equal(shown.reset[id].value, '', `${id} after a reset: ${JSON.stringify(shown.reset[id])}`);
  }
  assert.equal(shown.reset.p99.text, 'no turn');
  assert.equal(shown.reset.dropped.text, '3');
  assert.equal(shown.again['msgs-in'].text, '10/s');
  assert.equal(shown.again['bytes-out'].text, '1.00 KiB/s');
  assert.equal(shown.again.p99.text, '> 1 s');

  // A real push shows p99 in µs or ms (or "no turn"), never in seconds for a loop this idle.
  const page2 = pages.stats.page;
  const p99 = await figure(page2, 'p99');
  assert.match(p99.text, /^(≤ \d+(\.\d+)? (µs|ms)|no turn)$/, `p99 shown: ${p99.text}`);
  await pages.fed.page.context().close();
  delete pages.fed;
});

test('on a phone the page fits the width', { timeout: STEP }, async () => {
  const page = await open('phone', `${BASE}/stats`, {
    viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true,
  });
  await page.waitForSelector('#status[data-state="connected"]');
  await page.waitForFunction(() => Number(document.getElementById('plot-users').dataset.points) >= 2, null, { timeout: PUSHES });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  assert.ok(overflow <= 0, `no horizontal scrolling: ${overflow}px too wide`);
  await shared.shot(page, ARTIFACTS, 'stats-phone.png', WAIT);
  await page.context().close();
  delete pages.phone;
});

test('the page shows the lost server and reconnects when it is back', { timeout: 90_000 }, async () => {
  const page = pages.stats.page;
  await shared.stopServer(server);
  server = null;
  await page.waitForSelector('#status[data-state="disconnected"]');
  assert.match(await page.textContent('#status'), /^disconnected/);
  await sleep(1_500);        // let a reconnect attempt or two fail against the closed port
  await startServer();
  await page.waitForSelector('#status[data-state="connected"]', { timeout: RECONNECT });
  // The new server's totals start from zero: the page starts its rates over, and they are never negative.
  const before = await points(page, 'plot-users');
  await page.waitForFunction((n) => Number(document.getElementById('plot-users').dataset.points) >= n + 2,
    before, { timeout: PUSHES });
  for (const id of ['msgs-in', 'msgs-out', 'bytes-in', 'bytes-out']) {
    const { value } = await figure(page, id);
    assert.ok(value !== '' && Number(value) >= 0, `${id} after the restart: ${value}`);
  }
  // Chat pages came back too (they reconnect on their own).
  await waitFigure(page, 'users', { equals: 2 }, RECONNECT);
  await shared.shot(page, ARTIFACTS, 'stats-reconnected.png', WAIT);
  for (const [name, entry] of Object.entries(pages)) {
    assert.deepEqual(entry.errors, [], `no script errors on ${name}'s page`);
    assert.deepEqual(entry.dialogs, [], `no dialogs on ${name}'s page`);
  }
});
