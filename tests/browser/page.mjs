// What both browser tests (chat.test.mjs, nodes.test.mjs) do with a server and a page.
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
