// End-to-end test of the protocol inspector (examples/inspect.html, served by the chatroom on GET /inspect) in a
// real headless Chromium. The page's WebSocket, on /inspect, is a chat user whose connection the server inspects:
// it gets its handshake, and the start of each frame both ways, as JSON records, and decodes them itself.
//
//   CHAT_PORT=8123 node tests/browser/inspect.test.mjs      (scripts/browser-test.sh does all of this)
//
// Environment:
//   CHAT_PORT       loopback port for the chatroom (required; scripts/browser-test.sh picks a free one)
//   CHAT_SERVER     the server command, split on spaces; "--port N" is appended
//                   (default: target/debug/examples/chatroom, relative to the repository root)
//   CHROMIUM        the browser binary (default: /usr/bin/chromium)
//   ARTIFACTS       where screenshots and the server log go (default: artifacts/browser)
//
// Everything the page shows is checked against what this test computes itself, in Node: the accept key with
// crypto's SHA-1, the masked bytes by XOR with the key the page shows, the frame's bytes from RFC 6455 §5.2.
// Page A is the inspector, page B a plain chat page, page C a second inspector: A must never see C's frames.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import * as shared from './page.mjs';

const { sleep, CHROMIUM_ARGS } = shared;

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const PORT = Number(process.env.CHAT_PORT);
const SERVER = (process.env.CHAT_SERVER || 'target/debug/examples/chatroom').trim().split(/\s+/);
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const ARTIFACTS = path.resolve(ROOT, process.env.ARTIFACTS || 'artifacts/browser');
const BASE = `http://127.0.0.1:${PORT}`;
const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
const KEPT = 64;               // payload bytes the server keeps of each frame

// Every wait is bounded, so a bug fails the test instead of hanging it.
const WAIT = 10_000;           // one UI condition
const STEP = 45_000;           // one test step

assert.ok(PORT > 0 && PORT < 65536, 'set CHAT_PORT to a free loopback port');
fs.mkdirSync(ARTIFACTS, { recursive: true });
const LOG = path.join(ARTIFACTS, 'server-inspect.log');
fs.writeFileSync(LOG, '');

let server = null;
let browser = null;
const pages = {};        // name -> { page, errors, dialogs, received }
const said = { A: [], C: [] };   // what each inspector sent, in order

process.on('exit', () => { if (server) server.kill('SIGKILL'); });
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    console.error(`stopped by ${signal}`);
    process.exit(1);
  });
}

async function open(name, url, contextOptions = { viewport: { width: 1400, height: 1000 } }) {
  pages[name] = await shared.openPage(browser, url, { timeout: WAIT, contextOptions });
  return pages[name].page;
}

// --- in Node: what the page should show -----------------------------------------------------------

const hex = (bytes) => Buffer.from(bytes).toString('hex');
const strip = (s) => s.replace(/\s+/g, '');

function xor(bytes, key) {
  return Buffer.from(bytes.map((b, i) => b ^ key[i % 4]));
}

// A frame's header as §5.2 lays it out: FIN and opcode, MASK and the length in its shortest form, then the key.
function header(opcode, length, key) {
  const mask = key ? 0x80 : 0;
  let head;
  if (length < 126) {
    head = Buffer.from([0x80 | opcode, mask | length]);
  } else if (length < 65536) {
    head = Buffer.from([0x80 | opcode, mask | 126, length >> 8, length & 0xff]);
  } else {
    head = Buffer.alloc(10);
    head[0] = 0x80 | opcode;
    head[1] = mask | 127;
    head.writeBigUInt64BE(BigInt(length), 2);
  }
  return key ? Buffer.concat([head, key]) : head;
}

// The inspector records a page's socket received, as the server sent them (captured by Playwright, not the page).
function records(name, seen) {
  return pages[name].received
    .map((frame) => { try { return JSON.parse(frame.text); } catch { return null; } })
    .filter((msg) => msg && msg.type === 'inspect' && (!seen || msg.seen === seen));
}

// A received record decoded here: its payload unmasked, as text.
function unmaskRecord(record) {
  const bytes = Buffer.from(record.hex, 'hex');
  let off = 2;
  const len7 = bytes[1] & 0x7f;
  if (len7 === 126) off = 4;
  if (len7 === 127) off = 10;
  if (!(bytes[1] & 0x80)) return bytes.subarray(off).toString('utf8');
  const key = bytes.subarray(off, off + 4);
  return xor(bytes.subarray(off + 4), key).toString('utf8');
}

// --- on the page ------------------------------------------------------------------------------------

async function send(page, who, text) {
  await page.fill('#input', text);
  await page.click('#send');
  await page.waitForFunction(() => document.getElementById('input').value === '');
  said[who].push(text);
}

// What a frame panel ("received" or "sent") shows, whitespace between hex bytes taken out.
async function panel(page, name) {
  return page.evaluate((name) => {
    const text = (id) => document.getElementById(`${name}-${id}`).textContent;
    const hexEl = document.getElementById(`${name}-hex`);
    return {
      hex: text('hex').replace(/\s+/g, '').replace(/….*$/, ''),
      frameLen: Number(hexEl.dataset.frameLen),
      record: Number(hexEl.dataset.record),
      key: text('mask-key'),
      masked: text('masked').replace(/\s+/g, ''),
      unmasked: text('unmasked').replace(/\s+/g, ''),
      text: text('text'),
      opcode: text('opcode'),
      len: text('len'),
      form: text('len-form'),
      fin: text('fin'),
      mask: text('mask'),
      problems: text('problems'),
    };
  }, name);
}

const waitText = (page, name, text) =>
  page.waitForFunction(([name, text]) => document.getElementById(`${name}-text`).textContent === text, [name, text]);

// Shows, in the sent panel, the newest sent record whose summary includes `includes` (a click in the timeline).
async function showSent(page, includes) {
  const item = page.locator('#timeline li[data-seen="sent"]', { hasText: includes }).last();
  await item.waitFor();
  await item.locator('button').click();
  const index = Number(await item.getAttribute('data-index'));
  await page.waitForFunction((i) => document.getElementById('sent-hex').dataset.record === String(i), index);
  return index;
}

// Back to showing the latest record in a panel: "Show the latest" is there only while an older record is shown.
async function follow(page, name) {
  if (await page.isVisible(`#${name}-latest`)) await page.click(`#${name}-latest`);
  await page.waitForSelector(`#${name}-pin`, { state: 'hidden' });
}

// --- the test ----------------------------------------------------------------------------------

before(async () => {
  server = await shared.startServer({
    command: SERVER, port: PORT, cwd: ROOT, logPath: LOG, pidsFile: path.join(ARTIFACTS, 'server.pid'),
  });
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: 30_000 });
}, { timeout: 60_000 });

after(async () => {
  if (browser) await browser.close().catch(() => {});
  await shared.stopServer(server);
  server = null;
}, { timeout: 30_000 });

test('the inspector connects, without permessage-deflate, and shows its handshake step by step', { timeout: STEP }, async () => {
  const a = await open('A', `${BASE}/inspect`);
  await a.waitForSelector('#status[data-state="connected"]');
  assert.equal(await a.evaluate(() => socket.url), `ws://127.0.0.1:${PORT}/inspect`);
  // Chromium offers permessage-deflate; an inspected connection declines it, so that its frames are RFC 6455's own.
  assert.equal(await a.evaluate(() => socket.extensions), '', 'no extension on the inspected connection');

  await a.waitForFunction(() => document.getElementById('hs-accept').textContent !== '');
  const hs = await a.evaluate(() => Object.fromEntries(['key', 'concat', 'sha1', 'accept', 'request', 'response']
    .map((k) => [k, document.getElementById(`hs-${k}`).textContent])));
  const digest = crypto.createHash('sha1').update(hs.key + GUID).digest();
  assert.match(hs.key, /^[A-Za-z0-9+/]{22}==$/, `a 16-byte key in base64: ${hs.key}`);
  assert.equal(hs.concat, hs.key + GUID);
  assert.equal(hs.sha1, digest.toString('hex'), 'SHA-1(key + GUID), in hex');
  assert.equal(hs.accept, digest.toString('base64'), 'Sec-WebSocket-Accept = base64(SHA-1(key + GUID))');

  assert.ok(hs.request.startsWith('GET /inspect HTTP/1.1\r\n'), `the request line: ${JSON.stringify(hs.request.slice(0, 40))}`);
  assert.ok(hs.request.endsWith('\r\n\r\n'), 'the request head ends with a blank line');
  assert.match(hs.request, new RegExp(`\r\nsec-websocket-key: ${hs.key.replace(/[+/]/g, '\\$&')}\r\n`, 'i'));
  assert.match(hs.request, /\r\nsec-websocket-version: 13\r\n/i);
  assert.ok(hs.response.startsWith('HTTP/1.1 101 Switching Protocols\r\n'), `the response: ${JSON.stringify(hs.response.slice(0, 40))}`);
  assert.ok(hs.response.includes(`\r\nSec-WebSocket-Accept: ${hs.accept}\r\n`), 'the response carries the accept key');
  assert.ok(hs.response.endsWith('\r\n\r\n'), 'the response head ends with a blank line');
  assert.doesNotMatch(hs.response, /permessage-deflate/i, 'the response accepts no extension');

  // The page checked the arithmetic with the browser's own SHA-1 too.
  await a.waitForSelector('#hs-check[data-ok="true"]');

  // The records are this connection's: the first is its handshake, with the same key.
  const first = records('A')[0];
  assert.equal(first.seen, 'handshake');
  assert.equal(first.key, hs.key);
});

test('a message: the frame the server received, masked, and unmasked on the page', { timeout: STEP }, async () => {
  const a = pages.A.page;
  const b = await open('B', `${BASE}/`, { viewport: { width: 900, height: 700 } });
  await b.waitForSelector('#state[data-state="connected"]');

  // A short name, so that the chat's broadcast of the message below fits in the 64 bytes kept of a frame.
  await send(a, 'A', '/nick ann');
  await a.waitForSelector('#log li[data-kind="nick"]');

  const message = 'hello inspector';
  await send(a, 'A', message);
  await waitText(a, 'received', message);
  const got = await panel(a, 'received');
  const payload = Buffer.from(message, 'utf8');

  assert.match(got.key, /^[0-9a-f]{8}$/, `the masking key, 8 hex digits: ${got.key}`);
  const key = Buffer.from(got.key, 'hex');
  const masked = xor(payload, key);
  assert.equal(got.masked, hex(masked), 'masked payload = utf8(message) XOR key, byte i with key[i % 4]');
  assert.equal(got.hex, '81' + hex([0x80 | payload.length]) + got.key + hex(masked), 'the whole frame, as received');
  assert.equal(got.hex, hex(Buffer.concat([header(1, payload.length, key), masked])));
  assert.equal(got.frameLen, 2 + 4 + payload.length, 'frame_len: the whole frame');
  assert.equal(got.unmasked, hex(payload));
  assert.equal(got.text, message);
  assert.match(got.opcode, /^0x1 \(text\)$/);
  assert.equal(got.form, '7-bit');
  assert.equal(got.len, String(payload.length));
  assert.equal(got.fin, '1');
  assert.equal(got.mask, '1');
  assert.equal(got.problems, '', 'the page found nothing amiss');

  // The page shows what the server sent: the same hex as the record on the wire.
  const wire = records('A', 'received').map((r) => r.hex);
  assert.ok(wire.includes(got.hex), 'the record came over the socket as shown');

  // The plain chat page got the message.
  await shared.waitEntry(b, { kind: 'message', name: 'ann', text: message }, WAIT);
  await shared.shot(a, ARTIFACTS, 'inspect-A.png', WAIT);
});

test('the frame the server sent back is the chat\'s broadcast, unmasked', { timeout: STEP }, async () => {
  const a = pages.A.page;
  // The broadcast as the chat page B received it: the JSON the server sent to everyone.
  const broadcast = pages.B.received.map((f) => f.text)
    .find((t) => t && t.includes('"hello inspector"') && JSON.parse(t).type === 'message');
  assert.ok(broadcast, 'page B received the broadcast');
  const json = Buffer.from(broadcast, 'utf8');
  assert.ok(json.length <= KEPT, `the broadcast (${json.length} bytes) fits in the bytes kept: ${broadcast}`);

  await showSent(a, 'hello inspector');
  const got = await panel(a, 'sent');
  assert.ok(got.hex.includes(hex(json)), `the sent frame carries the broadcast: ${got.hex}`);
  assert.equal(got.hex, hex(Buffer.concat([header(1, json.length), json])), 'header, then the JSON unmasked');
  assert.equal(got.frameLen, 2 + json.length);
  assert.equal(got.text, broadcast);
  assert.equal(got.key, 'none');
  assert.equal(got.mask, '0');
  assert.equal(got.form, '7-bit');
  assert.equal(got.problems, '');
  await follow(a, 'sent');
});

test('a long message: the length in the 16-bit form, and the frames cut after 64 payload bytes', { timeout: STEP }, async () => {
  const a = pages.A.page;
  const message = 'long: ' + 'abcdefghijklmnopqrstuvwxyz0123456789'.repeat(8);   // 294 bytes
  await send(a, 'A', message);
  await waitText(a, 'received', message.slice(0, KEPT));
  const got = await panel(a, 'received');
  const payload = Buffer.from(message, 'utf8');
  const key = Buffer.from(got.key, 'hex');
  assert.equal(got.form, '16-bit');
  assert.equal(got.len, String(payload.length));
  assert.equal(got.frameLen, 4 + 4 + payload.length, 'frame_len: the whole frame, not what was kept');
  assert.equal(got.hex, hex(Buffer.concat([header(1, payload.length, key), xor(payload.subarray(0, KEPT), key)])),
    'the header, then the first 64 payload bytes, masked');
  assert.equal(got.unmasked, hex(payload.subarray(0, KEPT)));
  assert.equal(got.problems, '');

  // Its broadcast, cut the same way.
  const broadcast = pages.B.received.map((f) => f.text).find((t) => t && t.includes(message));
  assert.ok(broadcast, 'page B received the broadcast');
  const json = Buffer.from(broadcast, 'utf8');
  await showSent(a, message.slice(0, 20));
  const sent = await panel(a, 'sent');
  assert.equal(sent.hex, hex(Buffer.concat([header(1, json.length), json.subarray(0, KEPT)])));
  assert.equal(sent.frameLen, 4 + json.length);
  assert.equal(sent.form, '16-bit');
  assert.equal(sent.text, json.subarray(0, KEPT).toString('utf8'));
  await shared.shot(a, ARTIFACTS, 'inspect-A-long.png', WAIT);
  await follow(a, 'sent');
});

test('a message over 64 KiB: the length in the 64-bit form', { timeout: STEP }, async () => {
  const a = pages.A.page;
  const message = 'big: ' + 'x'.repeat(65536 - 5);          // 65536 bytes: the chatroom's --max-message, not over it
  await send(a, 'A', message);
  await waitText(a, 'received', message.slice(0, KEPT));
  const got = await panel(a, 'received');
  const key = Buffer.from(got.key, 'hex');
  assert.equal(got.form, '64-bit');
  assert.equal(got.len, '65536');
  assert.equal(got.frameLen, 10 + 4 + 65536);
  assert.equal(got.hex, hex(Buffer.concat([header(1, 65536, key), xor(Buffer.from(message.slice(0, KEPT)), key)])));
  assert.equal(got.problems, '');
  await shared.waitEntry(pages.B.page, { kind: 'message', name: 'ann', text: message }, WAIT);
});

test('privacy: an inspector sees its own received frames only', { timeout: STEP }, async () => {
  const a = pages.A.page;
  const c = await open('C', `${BASE}/inspect`);
  await c.waitForSelector('#status[data-state="connected"]');
  const secret = 'secret from C';
  await send(c, 'C', secret);
  await waitText(c, 'received', secret);          // C's own inspector shows it

  // A is told of the message as the chat: in its log, and in a frame the server sent it.
  await a.waitForFunction((s) => [...document.querySelectorAll('#log li[data-kind="message"] .text')]
    .some((e) => e.textContent === s), secret);
  await a.locator('#timeline li[data-seen="sent"]', { hasText: secret }).last().waitFor();
  await send(a, 'A', 'after the secret');         // a frame of A's own after C's, so that nothing is still on its way
  await waitText(a, 'received', 'after the secret');

  // Every frame A's records say the server received unmasks to something A sent: never C's.
  for (const [who, other] of [['A', 'C'], ['C', 'A']]) {
    const texts = records(who, 'received').map(unmaskRecord);
    assert.ok(texts.length >= said[who].length, `${who}: a received record for each message sent`);
    for (const text of texts) {
      assert.ok(said[who].some((s) => s.startsWith(text)), `${who}'s received record is its own: ${JSON.stringify(text.slice(0, 80))}`);
      assert.ok(!said[other].some((s) => s.startsWith(text)), `${who} sees a frame ${other} sent: ${JSON.stringify(text.slice(0, 80))}`);
    }
  }
  const shownOnA = await a.$$eval('#timeline li[data-seen="received"] .summary', (es) => es.map((e) => e.textContent));
  assert.ok(shownOnA.length > 0 && shownOnA.every((s) => !s.includes(secret)), 'A\'s timeline shows no frame C sent');
  assert.notEqual((await panel(a, 'received')).text, secret);

  // Each inspector got one handshake, its own; the plain chat page gets no records at all.
  const keys = ['A', 'C'].map((who) => records(who, 'handshake').map((r) => r.key));
  assert.equal(keys[0].length, 1);
  assert.equal(keys[1].length, 1);
  assert.notEqual(keys[0][0], keys[1][0]);
  assert.deepEqual(records('B'), [], 'the chat page is not inspected');
  await shared.shot(c, ARTIFACTS, 'inspect-C.png', WAIT);
});

test('each link to the source opens the file at its function', { timeout: STEP }, async () => {
  const a = pages.A.page;
  const links = await a.$$eval('a.src', (as) => [...new Set(as.map((x) => `${x.dataset.file} ${x.dataset.fn}`))]);
  assert.ok(links.length >= 8, `links: ${links}`);
  for (const link of links) {
    const [file, fn] = link.split(' ');
    const name = fn.split('::').pop();
    // Served as text, for a new tab.
    const response = await fetch(`${BASE}/source/${file}`, { signal: AbortSignal.timeout(WAIT) });
    assert.equal(response.status, 200, `GET /source/${file}`);
    assert.match(response.headers.get('content-type') || '', /^text\/plain/);
    const source = await response.text();

    // And in the page's viewer, at the line of `fn name`.
    await a.locator(`a.src[data-file="${file}"][data-fn="${fn}"]`).first().click();
    await a.waitForSelector('#viewer[open][data-state="ready"]');
    const hit = await a.evaluate(() => {
      const li = document.querySelector('#viewer-code li.hit');
      const list = document.getElementById('viewer-code');
      const box = li.getBoundingClientRect();
      const view = list.getBoundingClientRect();
      return { text: li.textContent, line: [...list.children].indexOf(li), visible: box.top >= view.top && box.bottom <= view.bottom };
    });
    assert.match(hit.text, new RegExp(`\\bfn ${name}\\b`), `${link}: the line found is ${JSON.stringify(hit.text)}`);
    assert.ok(hit.visible, `${link}: scrolled to the line`);
    assert.equal(source.split('\n')[hit.line], hit.text, `${link}: the viewer shows the file as served`);
    if (fn.includes('::')) {
      // A method: inside that type's impl block, after its `impl` line.
      const owner = fn.split('::')[0];
      const impl = source.split('\n').findIndex((l) => new RegExp(`^\\s*impl\\b[^{]*\\b${owner}\\b`).test(l));
      assert.ok(impl >= 0 && impl < hit.line, `${link}: after impl ${owner} (line ${impl + 1}), found at ${hit.line + 1}`);
    }
    if (link === 'src/frame.rs decode_header') await shared.shot(a, ARTIFACTS, 'inspect-source.png', WAIT);
    await a.click('#viewer-close');
    await a.waitForSelector('#viewer:not([open])', { state: 'attached' });
  }
});

test('on a phone the inspector fits the width', { timeout: STEP }, async () => {
  const page = await open('phone', `${BASE}/inspect`, {
    viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true,
  });
  await page.waitForSelector('#status[data-state="connected"]');
  await page.fill('#input', 'from a phone');
  await page.click('#send');
  await waitText(page, 'received', 'from a phone');
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  assert.ok(overflow <= 0, `no horizontal scrolling: ${overflow}px too wide`);
  await page.locator('#received').scrollIntoViewIfNeeded();
  await shared.shot(page, ARTIFACTS, 'inspect-phone.png', WAIT);

  for (const [name, entry] of Object.entries(pages)) {
    assert.deepEqual(entry.errors, [], `no script errors on ${name}'s page`);
    assert.deepEqual(entry.dialogs, [], `no dialogs on ${name}'s page`);
  }
});
