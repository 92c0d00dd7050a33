// Test harness: runs the real `huddle` binary (HUDDLE_BIN) on a free port with a
// fresh SQLite file, and talks to it with the official socket.io client and fetch.
// Tokens are minted here with node:crypto, independently of Huddle's own signer.

import { spawn } from 'node:child_process';
import { createHmac, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { io } from 'socket.io-client';

export const SECRET = 'socketio-test-secret-0123456789';
export const CONNECTION_TIMEOUT = 1;
export const RINGING_TIMEOUT = 5;

const b64url = (data) => Buffer.from(data).toString('base64url');

/**
 * An HS256 token for `sub`, valid for `ttl` seconds (negative: already expired), with
 * the `role` claim when given (`customer` when absent).
 */
export function token(sub, { ttl = 3600, secret = SECRET, name, role } = {}) {
  const header = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const now = Math.floor(Date.now() / 1000);
  const payload = b64url(JSON.stringify({ sub, exp: now + ttl, iat: now, ...(name ? { name } : {}), ...(role ? { role } : {}) }));
  const signature = createHmac('sha256', secret).update(`${header}.${payload}`).digest('base64url');
  return `${header}.${payload}.${signature}`;
}

/** A user id no other test uses. */
export const uid = (name) => `${name}-${randomUUID().slice(0, 8)}`;

/** A folder for a server's database; `startServer` removes it unless given one. */
export const scratchDir = () => mkdtempSync(join(tmpdir(), 'huddle-sio-'));

/**
 * Starts huddle; resolves once it announces its address. With `dir`, the server
 * keeps its database there (so that another server can take it over) and `stop`
 * leaves the folder alone.
 */
export async function startServer(extraEnv = {}, { dir: keep } = {}) {
  const bin = process.env.HUDDLE_BIN;
  if (!bin) throw new Error('HUDDLE_BIN must name the huddle binary (cargo test sets it)');
  const dir = keep ?? scratchDir();
  const child = spawn(bin, [], {
    env: {
      PATH: process.env.PATH,
      HOST: '127.0.0.1',
      PORT: '0',
      SFU_HOST: '127.0.0.1',
      SFU_PORT: '0',
      TURN_HOST: '127.0.0.1',
      TURN_PORT: '0',
      DATABASE_URL: `sqlite://${join(dir, 'huddle.db')}`,
      JWT_SECRET: SECRET,
      CONNECTION_TIMEOUT: String(CONNECTION_TIMEOUT),
      RINGING_TIMEOUT: String(RINGING_TIMEOUT),
      LOG_LEVEL: 'info',
      ...extraEnv,
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let log = '';
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`huddle did not start:\n${log}`)), 30_000);
    child.stderr.on('data', (chunk) => {
      log += chunk;
      const match = /addr=(\S+)/.exec(log);
      if (match) {
        clearTimeout(timer);
        resolve(`http://${match[1]}`);
      }
    });
    child.on('exit', (code) => reject(new Error(`huddle exited with ${code}:\n${log}`)));
  });
  const sockets = new Set();
  const exited = new Promise((resolve) => {
    if (child.exitCode !== null) resolve({ code: child.exitCode, signal: null });
    else child.once('exit', (code, signal) => resolve({ code, signal }));
  });
  return {
    url,
    child,
    /** Resolves to `{ code, signal }` when the process exits. */
    exited,
    /** Everything the server has written to stderr so far. */
    log: () => log,
    /** A connected socket for `user` (with `role`); rejects with the connect_error. */
    async connect(user, { auth, role, extra = {} } = {}) {
      const socket = io(url, {
        auth: auth ?? { token: token(user, { name: `${user} name`, role }) },
        transports: ['websocket'],
        reconnection: false,
        forceNew: true,
        ...extra,
      });
      sockets.add(socket);
      await new Promise((resolve, reject) => {
        socket.once('connect', resolve);
        socket.once('connect_error', reject);
      });
      return socket;
    },
    /**
     * A REST call as `user` (with `role`), or bearing `bearer` (with `user` null; no
     * token at all when neither); resolves to { status, body, headers }.
     */
    rest(method, path, user, body, { role, bearer = null } = {}) {
      return restCall(url, method, path, body, user === null ? bearer : token(user, { role }));
    },
    async stop() {
      for (const socket of sockets) socket.disconnect();
      child.kill('SIGTERM');
      await exited;
      if (!keep) rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * `method path` on the server at `url` with a JSON `body`, bearing `bearer` (none when
 * null); resolves to { status, body, headers }.
 */
export async function restCall(url, method, path, body, bearer) {
  const response = await fetch(url + path, {
    method,
    headers: { ...(bearer !== null && { authorization: `Bearer ${bearer}` }), 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: response.status, body: await response.json(), headers: response.headers };
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Emits with an acknowledgement and resolves to the ack's payload. */
export const request = (socket, event, data) => socket.timeout(5000).emitWithAck(event, data);

/** The next `event` on `socket` whose payload passes `filter`. */
export function next(socket, event, filter = () => true, ms = 5000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.off(event, handler);
      reject(new Error(`no ${event} within ${ms} ms`));
    }, ms);
    function handler(data) {
      if (!filter(data)) return;
      clearTimeout(timer);
      socket.off(event, handler);
      resolve(data);
    }
    socket.on(event, handler);
  });
}

/** Resolves to the events named `event` that `socket` receives within `ms`. */
export async function collect(socket, event, ms) {
  const seen = [];
  const handler = (data) => seen.push(data);
  socket.on(event, handler);
  await new Promise((resolve) => setTimeout(resolve, ms));
  socket.off(event, handler);
  return seen;
}

/** Records every event `socket` receives into `seen`, in order; with `stamped`, when it arrived (`at`). */
export function record(socket, seen = [], { stamped = false } = {}) {
  socket.onAny((event, data) => seen.push({ event, data, ...(stamped && { at: Date.now() }) }));
  return seen;
}

/** The records of `event` (with a payload passing `filter`) in `seen`. */
export const of = (seen, event, filter = () => true) => seen.filter((r) => r.event === event && filter(r.data));

/** The first record of `seen` (from `record`) that `match` accepts, arrived already or arriving within `ms`. */
export async function arrival(seen, match, ms = 5000, what = 'event') {
  const deadline = Date.now() + ms;
  for (;;) {
    const hit = seen.find(match);
    if (hit) return hit;
    if (Date.now() > deadline) {
      const last = seen.slice(-8).map((r) => `${r.event} ${JSON.stringify(r.data)}`);
      throw new Error(`no ${what} within ${ms} ms; the last events:\n${last.join('\n')}`);
    }
    await sleep(20);
  }
}

/** Runs `check` (throwing while what it checks does not hold) until it passes or `ms` ran out; resolves to its result. */
export async function eventually(check, ms = 5000) {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return await check();
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await sleep(50);
    }
  }
}
