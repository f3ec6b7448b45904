// What the browser tests (chat.test.mjs, nodes.test.mjs, stats.test.mjs, inspect.test.mjs) do with a server and a page.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// True once something accepts TCP connections on 127.0.0.1:port.
export function canConnect(port) {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    const done = (ok) => { socket.destroy(); resolve(ok); };
    socket.setTimeout(1_000, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

export function shot(page, dir, file, timeout) {
  return page.screenshot({ path: path.join(dir, file), fullPage: false, timeout });
}

// The first entry of the page's log that matches `want` (#messages > li[data-kind][data-id][data-mine][data-earlier],
// with .name and .text inside); waits for one.
export async function waitEntry(page, want, timeout) {
  const handle = await page.waitForFunction((want) => {
    for (const li of document.querySelectorAll('#messages > li[data-kind]')) {
      const got = {
        kind: li.dataset.kind,
        id: li.dataset.id,
        mine: li.dataset.mine,
        earlier: li.dataset.earlier,
        names: [...li.querySelectorAll('.name')].map((n) => n.textContent),
        text: li.querySelector('.text')?.textContent ?? li.textContent,
      };
      if (want.kind !== undefined && got.kind !== want.kind) continue;
      if (want.id !== undefined && got.id !== String(want.id)) continue;
      if (want.mine !== undefined && got.mine !== String(want.mine)) continue;
      if (want.earlier !== undefined && got.earlier !== String(want.earlier)) continue;
      if (want.name !== undefined && got.names[0] !== want.name) continue;
      if (want.newName !== undefined && got.names[1] !== want.newName) continue;
      if (want.text !== undefined && got.text !== want.text) continue;
      if (want.includes !== undefined && !got.text.includes(want.includes)) continue;
      return got;
    }
    return null;
  }, want, { timeout });
  return handle.jsonValue();
}

// Types a message and sends it with Enter; resolves once the box is empty again (the page took it).
export async function say(page, text) {
  await page.fill('#text', text);
  await page.press('#text', 'Enter');
  await page.waitForFunction(() => document.getElementById('text').value === '');
}

export async function rename(page, name) {
  await page.fill('#nick', name);
  await page.press('#nick', 'Enter');
}

// --- what the stats and inspector tests (stats.test.mjs, inspect.test.mjs) share -----------------------------

// The network here is closed: without these flags Chromium stalls on connections it cannot make.
// Playwright adds --headless, --no-sandbox and a fresh temporary --user-data-dir itself.
export const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

// Starts `command` (an array: the program, then its arguments) with "--port N" appended, its output added to the
// end of `logPath`, and its pid appended to `pidsFile` (the safety net of scripts/browser-test.sh); resolves to the process
// once the port accepts a TCP connection, within 15 s.
export async function startServer({ command, port, cwd, logPath, pidsFile }) {
  const log = fs.createWriteStream(logPath, { flags: 'a' });
  const [cmd, ...args] = command;
  const child = spawn(cmd, [...args, '--port', String(port)], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout.pipe(log, { end: false });
  child.stderr.pipe(log, { end: false });
  child.once('close', () => log.end());     // both outputs are done
  let exited = null;
  const onExit = (code, signal) => { exited = `exited early (code ${code}, signal ${signal})`; };
  child.once('exit', onExit);
  child.once('error', (e) => { exited = `failed to start: ${e.message}`; });
  fs.appendFileSync(pidsFile, `${child.pid}\n`);

  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline) {
    if (exited) throw new Error(`${cmd} ${exited}; see ${logPath}`);
    if (await canConnect(port)) {
      child.off('exit', onExit);
      return child;
    }
    await sleep(100);
  }
  child.kill('SIGKILL');
  throw new Error(`${cmd} did not listen on port ${port} within 15 s; see ${logPath}`);
}

// Ctrl-C (a graceful stop), then SIGKILL if the process is still there 5 s later.
export async function stopServer(child) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGINT');
  const stopped = await Promise.race([gone.then(() => true), sleep(5_000).then(() => false)]);
  if (!stopped) {
    child.kill('SIGKILL');
    await Promise.race([gone, sleep(5_000)]);
  }
}

// A new page in a context of its own, at `url`; collects its script errors and dialogs, and the text of every
// WebSocket message it receives (`received`, in order: { url, text }). Fails unless the page answers 200 with HTML.
export async function openPage(browser, url, { timeout, contextOptions } = {}) {
  const context = await browser.newContext(contextOptions);
  const page = await context.newPage();
  page.setDefaultTimeout(timeout);
  const entry = { page, errors: [], dialogs: [], received: [] };
  page.on('pageerror', (e) => entry.errors.push(String(e)));
  page.on('dialog', (d) => { entry.dialogs.push(d.message()); d.dismiss().catch(() => {}); });
  page.on('websocket', (ws) => {
    ws.on('framereceived', ({ payload }) => {
      entry.received.push({ url: ws.url(), text: typeof payload === 'string' ? payload : null });
    });
  });
  const response = await page.goto(url, { timeout });
  if (response.status() !== 200 || !/^text\/html/.test(response.headers()['content-type'] || '')) {
    throw new Error(`GET ${url} answered ${response.status()} ${response.headers()['content-type']}, not 200 HTML`);
  }
  return entry;
}
