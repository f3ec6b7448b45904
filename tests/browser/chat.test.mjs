// End-to-end test of the chat page (examples/chatroom.html) in a real headless Chromium.
//
// It starts the chatroom itself, so that it can stop and restart it for the reconnect check:
//
//   CHAT_PORT=8123 node tests/browser/chat.test.mjs      (scripts/browser-test.sh does all of this)
//
// Environment:
//   CHAT_PORT       loopback port for the chatroom (required; scripts/browser-test.sh picks a free one)
//   CHAT_SERVER     the server command, split on spaces; "--port N" is appended
//                   (default: target/debug/examples/chatroom, relative to the repository root)
//   CHAT_TLS_PORT, CHAT_TLS_CERT, CHAT_TLS_KEY
//                   for the last step, over https: a second loopback port, and the PEM certificate and key
//                   handed to a second chatroom there ("--port N --tls-cert C --tls-key K" is appended);
//                   without them that step is skipped
//   CHROMIUM        the browser binary (default: /usr/bin/chromium)
//   ARTIFACTS       where screenshots and the server log go (default: artifacts/browser)
//
// The steps share one server, one browser and two pages, so they run in order and each one
// builds on the one before: connect, rename, talk both ways, hostile and unusual text,
// one page leaves, the server restarts. The last step is on its own: a second chatroom, serving
// TLS, and two new pages on https:// whose sockets are wss://.

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
const PORT = Number(process.env.CHAT_PORT);
const SERVER = (process.env.CHAT_SERVER || 'target/debug/examples/chatroom').trim().split(/\s+/);
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const ARTIFACTS = path.resolve(ROOT, process.env.ARTIFACTS || 'artifacts/browser');
const URL = `http://127.0.0.1:${PORT}/`;
const TLS_PORT = Number(process.env.CHAT_TLS_PORT) || 0;
const TLS_ARGS = ['--tls-cert', process.env.CHAT_TLS_CERT, '--tls-key', process.env.CHAT_TLS_KEY];
const TLS_URL = `https://127.0.0.1:${TLS_PORT}/`;
const TLS_SKIP = TLS_PORT && process.env.CHAT_TLS_CERT && process.env.CHAT_TLS_KEY
  ? false : 'set CHAT_TLS_PORT, CHAT_TLS_CERT and CHAT_TLS_KEY for the https step';

// Every wait is bounded, so a bug fails the test instead of hanging it.
const WAIT = 10_000;           // one UI condition
const STEP = 45_000;           // one test step
const RECONNECT = 25_000;      // the page's backoff tops out at 10 s between attempts

// The network here is closed: without these flags Chromium stalls on connections it cannot make.
// Playwright adds --headless, --no-sandbox and a fresh temporary --user-data-dir itself.
const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

assert.ok(PORT > 0 && PORT < 65536, 'set CHAT_PORT to a free loopback port');
fs.mkdirSync(ARTIFACTS, { recursive: true });
const serverLog = fs.createWriteStream(path.join(ARTIFACTS, 'server.log'));
const tlsLog = path.join(ARTIFACTS, 'server-tls.log');

// --- the chatroom processes ------------------------------------------------------------------

let server = null;       // the plain one, on PORT
let tlsServer = null;    // the one serving TLS, on TLS_PORT, for the last step only

// Starts the chatroom on `port` with `extra` arguments after "--port N"; resolves to the process once the
// port accepts a TCP connection.
async function spawnServer(port, extra, log, logPath) {
  const [cmd, ...args] = SERVER;
  const child = spawn(cmd, [...args, '--port', String(port), ...extra], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout.pipe(log, { end: false });
  child.stderr.pipe(log, { end: false });
  let exited = null;
  const onExit = (code, signal) => { exited = `exited early (code ${code}, signal ${signal})`; };
  child.once('exit', onExit);
  child.once('error', (e) => { exited = `failed to start: ${e.message}`; });
  // Every pid this run started, for the safety net in scripts/browser-test.sh.
  fs.appendFileSync(path.join(ARTIFACTS, 'server.pid'), `${child.pid}\n`);

  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline) {
    if (exited) throw new Error(`chatroom ${exited}; see ${logPath}`);
    if (await canConnect(port)) {
      child.off('exit', onExit);
      return child;
    }
    await sleep(100);
  }
  child.kill('SIGKILL');
  throw new Error(`chatroom did not listen on port ${port} within 15 s`);
}

async function startServer() {
  server = await spawnServer(PORT, [], serverLog, path.join(ARTIFACTS, 'server.log'));
}

async function stopServer() {
  const child = server;
  server = null;
  await stopChild(child);
}

async function stopChild(child) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGINT');                  // Ctrl-C: the chatroom closes every client with 1001 and exits
  const killed = await Promise.race([gone.then(() => true), sleep(5_000).then(() => false)]);
  if (!killed) {
    child.kill('SIGKILL');
    await Promise.race([gone, sleep(5_000)]);
  }
}



// Whatever happens, do not leave the server behind. (Playwright closes its own browser on exit.)
process.on('exit', () => {
  for (const child of [server, tlsServer]) if (child) child.kill('SIGKILL');
});
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    console.error(`stopped by ${signal}`);
    process.exit(1);
  });
}

// --- the browser and the two pages -------------------------------------------------------------

let browser = null;
const pages = {};        // name -> { page, errors, dialogs }

async function openPage(name, contextOptions, url = URL) {
  const context = await browser.newContext(contextOptions);
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  const entry = { page, errors: [], dialogs: [] };
  page.on('pageerror', (e) => entry.errors.push(String(e)));
  page.on('dialog', (d) => { entry.dialogs.push(d.message()); d.dismiss().catch(() => {}); });
  const response = await page.goto(url, { timeout: WAIT });
  assert.equal(response.status(), 200, 'GET / answers 200');
  assert.match(response.headers()['content-type'] || '', /^text\/html/, 'GET / is HTML');
  pages[name] = entry;
  return page;
}


// --- reading the page through its test hooks -------------------------------------------------
// #state[data-state], #users[data-count], #messages > li[data-kind][data-id][data-mine]
// with .name and .text inside.

const waitState = (page, state, timeout = WAIT) =>
  page.waitForSelector(`#state[data-state="${state}"]`, { timeout });

const waitUsers = (page, count) =>
  page.waitForSelector(`#users[data-count="${count}"]`);


const count = (page, selector) => page.locator(selector).count();



// --- the test ----------------------------------------------------------------------------------

before(async () => {
  await startServer();
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    timeout: 30_000,
  });
}, { timeout: 60_000 });

after(async () => {
  if (browser) await browser.close().catch(() => {});
  await stopServer();
  await stopChild(tlsServer);
  tlsServer = null;
  serverLog.end();
}, { timeout: 30_000 });

let aliceId;
let bobId;

test('the first page connects and sees its own join', { timeout: STEP }, async () => {
  const a = await openPage('alice', { viewport: { width: 1280, height: 800 } });
  await waitState(a, 'connected');
  await waitUsers(a, 1);
  const own = await waitEntry(a, { kind: 'join', mine: true });
  aliceId = Number(own.id);
  assert.equal(own.names[0], `user-${aliceId}`, 'default name is user-N');
  assert.equal(await a.inputValue('#nick'), `user-${aliceId}`, 'the name field shows the given name');
});

test('a nickname set with /nick shows up; a bad one is refused', { timeout: STEP }, async () => {
  const a = pages.alice.page;
  await rename(a, 'alice');
  await waitEntry(a, { kind: 'nick', id: aliceId, name: `user-${aliceId}`, newName: 'alice' });

  // /nick typed into the message box works too, and a name that is too long is refused.
  await say(a, '/nick ' + 'x'.repeat(40));
  await waitEntry(a, { kind: 'error' });
});

test('a second page joins; both see the join and two users', { timeout: STEP }, async () => {
  const b = await openPage('bob', {
    viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true,
  });
  await waitState(b, 'connected');
  const own = await waitEntry(b, { kind: 'join', mine: true });
  bobId = Number(own.id);
  assert.notEqual(bobId, aliceId);
  await waitUsers(b, 2);

  const a = pages.alice.page;
  await waitUsers(a, 2);
  await waitEntry(a, { kind: 'join', id: bobId, name: `user-${bobId}`, mine: false });

  await rename(b, 'bob');
  await waitEntry(a, { kind: 'nick', id: bobId, newName: 'bob' });
  await waitEntry(b, { kind: 'nick', id: bobId, newName: 'bob' });
});

test('messages go both ways with names', { timeout: STEP }, async () => {
  const a = pages.alice.page;
  const b = pages.bob.page;

  await say(a, 'Hello Bob, can you read me?');
  await waitEntry(b, { kind: 'message', id: aliceId, name: 'alice', text: 'Hello Bob, can you read me?', mine: false });
  await waitEntry(a, { kind: 'message', id: aliceId, name: 'alice', text: 'Hello Bob, can you read me?', mine: true });

  await say(b, 'Loud and clear, Alice.');
  await waitEntry(a, { kind: 'message', id: bobId, name: 'bob', text: 'Loud and clear, Alice.', mine: false });
  await waitEntry(b, { kind: 'message', id: bobId, name: 'bob', text: 'Loud and clear, Alice.', mine: true });

  // Every message carries a time.
  const times = await a.locator('#messages li[data-kind="message"] time').allTextContents();
  assert.ok(times.length >= 2 && times.every((t) => /\d/.test(t)), `times shown: ${times}`);
});

test('the page\'s connection negotiates permessage-deflate, and long messages go through it', { timeout: STEP }, async () => {
  // Chromium offers the extension on every WebSocket; the chatroom accepts it (RFC 7692), so both pages' sockets
  // report it, and a message long enough to be compressed (over the 128-byte threshold, both ways) arrives intact.
  const a = pages.alice.page;
  const b = pages.bob.page;
  for (const page of [a, b]) {
    const extensions = await page.evaluate(() => socket.extensions);
    assert.match(extensions, /^permessage-deflate\b/, `negotiated: ${extensions}`);
    assert.match(extensions, /server_no_context_takeover/, `negotiated: ${extensions}`);
  }
  const long = 'compressed both ways: ' + 'the quick brown fox jumps over the lazy dog, '.repeat(20) + 'the end';
  await say(a, long);
  await waitEntry(b, { kind: 'message', id: aliceId, name: 'alice', text: long, mine: false });
  await waitEntry(a, { kind: 'message', id: aliceId, name: 'alice', text: long, mine: true });
});

test('HTML in a message shows as text and never runs', { timeout: STEP }, async () => {
  const a = pages.alice.page;
  const b = pages.bob.page;
  const xss = '<img src=x onerror=alert(1)>';
  await say(b, xss);
  await waitEntry(a, { kind: 'message', id: bobId, text: xss });
  await waitEntry(b, { kind: 'message', id: bobId, text: xss });

  // Also through a nickname, which ends up in notices and message headers.
  await rename(b, '<b>bob</b>');
  await waitEntry(a, { kind: 'nick', id: bobId, newName: '<b>bob</b>' });
  await rename(b, 'bob');
  await waitEntry(a, { kind: 'nick', id: bobId, name: '<b>bob</b>', newName: 'bob' });

  await sleep(300); // give a broken page the chance to fire onerror
  for (const page of [a, b]) {
    assert.equal(await count(page, '#messages img'), 0, 'no <img> element was created');
    assert.equal(await count(page, '#messages b'), 0, 'no <b> element was created');
  }
  assert.deepEqual(pages.alice.dialogs, [], 'no alert on the first page');
  assert.deepEqual(pages.bob.dialogs, [], 'no alert on the second page');
  await shot(a, 'desktop-1280.png');
  await shot(b, 'phone-390.png');
});

test('Unicode and emoji arrive intact; long messages wrap', { timeout: STEP }, async () => {
  const a = pages.alice.page;
  const b = pages.bob.page;
  const unicode = 'Grüße · 你好，世界 · Привет · مرحبا · 👋🏽 🎉 👩‍💻';
  await say(a, unicode);
  await waitEntry(b, { kind: 'message', id: aliceId, text: unicode });

  const longWord = 'a'.repeat(600);
  const longText = 'A long line: ' + 'the quick brown fox jumps over the lazy dog '.repeat(12) + longWord;
  await say(b, longText);
  await waitEntry(a, { kind: 'message', id: bobId, text: longText });
  await waitEntry(b, { kind: 'message', id: bobId, text: longText });

  // Nothing sticks out sideways: no horizontal scrolling in the list or the page.
  for (const page of [a, b]) {
    const overflow = await page.evaluate(() => {
      const list = document.getElementById('messages');
      const doc = document.documentElement;
      return { list: list.scrollWidth - list.clientWidth, page: doc.scrollWidth - doc.clientWidth };
    });
    assert.ok(overflow.list <= 0 && overflow.page <= 0, `no horizontal overflow: ${JSON.stringify(overflow)}`);
  }

  // A short message after the long one, so the screenshots end on a readable line.
  await say(a, 'That one wrapped nicely 👍');
  await waitEntry(b, { kind: 'message', id: aliceId, text: 'That one wrapped nicely 👍' });
  await shot(a, 'desktop-1280-long.png');
  await shot(b, 'phone-390-long.png');
});

test('closing a page is seen as a leave by the other', { timeout: STEP }, async () => {
  const a = pages.alice.page;
  const b = pages.bob;
  assert.deepEqual(b.errors, [], 'no script errors on the second page');
  await b.page.context().close();
  delete pages.bob;
  await waitEntry(a, { kind: 'leave', id: bobId, name: 'bob' });
  await waitUsers(a, 1);
});

test('the page shows the lost server and reconnects when it is back', { timeout: 90_000 }, async () => {
  const a = pages.alice.page;
  await stopServer();
  await waitState(a, 'closed');
  // Ctrl-C is a graceful stop: the server says goodbye with close code 1001 ("going away").
  await waitEntry(a, { kind: 'status', includes: 'Disconnected from the server (code 1001)' });
  assert.equal(await a.isDisabled('#send'), true, 'cannot send while closed');
  await shot(a, 'desktop-closed.png');

  await sleep(1_500); // let a reconnect attempt or two fail against the closed port
  await startServer();
  await waitState(a, 'connected', RECONNECT);
  await waitEntry(a, { kind: 'status', includes: 'Reconnected' });
  await waitUsers(a, 1);

  // The page asks for its chosen name again, so it is still "alice".
  const own = await a.waitForFunction(() => {
    const joins = [...document.querySelectorAll('#messages li[data-kind="join"][data-mine="true"]')];
    return joins.length >= 2 ? joins[joins.length - 1].dataset.id : null;
  }, null, { timeout: WAIT });
  const newId = Number(await own.jsonValue());
  await waitEntry(a, { kind: 'nick', id: newId, newName: 'alice' });
  await say(a, 'Back again.');
  await waitEntry(a, { kind: 'message', id: newId, name: 'alice', text: 'Back again.', mine: true });
  await shot(a, 'desktop-reconnected.png');

  assert.deepEqual(pages.alice.errors, [], 'no script errors on the first page');
});

test('over https the page opens wss://, and two pages chat both ways', { timeout: STEP, skip: TLS_SKIP }, async () => {
  const log = fs.createWriteStream(tlsLog);
  try {
    tlsServer = await spawnServer(TLS_PORT, TLS_ARGS, log, tlsLog);
    // The certificate is self-signed, made for this run: these contexts take it as it is. (Chromium still checks
    // it first, so server-tls.log shows a few handshakes it ended with a CertificateUnknown alert: expected.)
    const secure = { viewport: { width: 1280, height: 800 }, ignoreHTTPSErrors: true };
    const a = await openPage('carol', secure, TLS_URL);
    const b = await openPage('dave', secure, TLS_URL);
    const ids = {};
    for (const [name, page] of [['carol', a], ['dave', b]]) {
      await waitState(page, 'connected');
      ids[name] = Number((await waitEntry(page, { kind: 'join', mine: true })).id);
      // The page chose its scheme from location.protocol; the socket it opened is the proof.
      const seen = await page.evaluate(() => ({ protocol: location.protocol, url: socket.url }));
      assert.deepEqual(seen, { protocol: 'https:', url: `wss://127.0.0.1:${TLS_PORT}/` }, `${name}'s page`);
    }
    await waitUsers(a, 2);

    await say(a, 'Sent over TLS.');
    await waitEntry(b, { kind: 'message', id: ids.carol, text: 'Sent over TLS.', mine: false });
    await say(b, 'Read over TLS, and answered.');
    await waitEntry(a, { kind: 'message', id: ids.dave, text: 'Read over TLS, and answered.', mine: false });
    await shot(a, 'desktop-https.png');
    for (const name of ['carol', 'dave']) {
      assert.deepEqual(pages[name].errors, [], `no script errors on ${name}'s page`);
      await pages[name].page.context().close();
      delete pages[name];
    }
  } finally {
    await stopChild(tlsServer);
    tlsServer = null;
    log.end();
  }
});

function shot(page, file) {
  return shared.shot(page, ARTIFACTS, file, WAIT);
}

function waitEntry(page, want) {
  return shared.waitEntry(page, want, WAIT);
}
