// A page on another site, in headless Chromium, calling Huddle: REST with a token
// (which makes Chromium send a preflight) and Socket.IO over polling and over
// WebSocket, with the socket.io client Huddle serves. One small site answers at two
// origins, http://127.0.0.1:P (in CORS_ORIGINS) and http://localhost:P (not), so the
// same page is let in from one and refused from the other, by the browser's own CORS
// checks and by Huddle's refusal of the WebSocket (which CORS does not cover).

import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { after, before, describe, test } from 'node:test';

import { launchChromium, startServer } from './harness.mjs';

let site;
let server;
let browser;
before(async () => {
  site = createServer((request, response) => {
    response.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    response.end('<!doctype html><title>another site</title>');
  });
  await new Promise((resolve) => site.listen(0, '127.0.0.1', resolve));
  browser = await launchChromium();
  server = await startServer({ CORS_ORIGINS: `http://127.0.0.1:${site.address().port}` });
});
after(async () => {
  await browser?.close();
  await server?.stop();
  await new Promise((resolve) => (site ? site.close(resolve) : resolve()));
});

/** A demo token for `userId` (DEMO_TOKENS is on in the harness). */
async function tokenFor(userId) {
  const response = await fetch(server.url + '/demo/token', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ userId }),
  });
  return (await response.json()).data.token;
}

/** Opens the site at `host` and does, on its page, what another site's app would. */
async function fromThePageAt(host) {
  const context = await browser.newContext();
  try {
    const page = await context.newPage();
    await page.goto(`http://${host}:${site.address().port}/`);
    await page.addScriptTag({ url: server.url + '/demo/socket.io.min.js' });
    const token = await tokenFor(`visitor-${host}`);
    return await page.evaluate(async ({ huddle, token }) => {
      const rest = await fetch(huddle + '/api/v1/calls/active', { headers: { authorization: `Bearer ${token}` } })
        .then(async (r) => `${r.status} ${(await r.json()).success}`)
        .catch((e) => `refused: ${e.message}`);
      const socket = (transport) =>
        new Promise((resolve) => {
          const s = io(huddle, { auth: { token }, transports: [transport], reconnection: false, forceNew: true });
          s.once('connect', () => {
            s.disconnect();
            resolve('connected');
          });
          s.once('connect_error', (e) => resolve(`refused: ${e.message}`));
        });
      return { origin: location.origin, rest, polling: await socket('polling'), websocket: await socket('websocket') };
    }, { huddle: server.url, token });
  } finally {
    await context.close();
  }
}

describe('a page on another site', () => {
  test('calls the REST API and connects over polling and WebSocket when its origin is listed', async () => {
    const seen = await fromThePageAt('127.0.0.1');
    assert.deepEqual(seen, {
      origin: `http://127.0.0.1:${site.address().port}`,
      rest: '200 true',
      polling: 'connected',
      websocket: 'connected',
    });
  });

  test('is refused everywhere when its origin is not listed', async () => {
    const seen = await fromThePageAt('localhost');
    assert.deepEqual(seen, {
      origin: `http://localhost:${site.address().port}`,
      rest: 'refused: Failed to fetch',
      polling: 'refused: xhr poll error',
      websocket: 'refused: websocket error',
    });
  });
});
