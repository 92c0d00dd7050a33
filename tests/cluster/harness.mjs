// Cluster harness: several real `huddle` nodes (HUDDLE_BIN) sharing one PostgreSQL
// database and one Redis, all on loopback, as in cluster mode (see README, "Cluster
// mode"). Each suite gets its own redis-server on a free port and its own fresh
// database; both are removed when the suite ends, pass or fail. Nothing is skipped: a
// missing redis-server, PostgreSQL, node or Chromium fails the suite.
//
// Tokens, waits and checks come from the single-node harnesses (../socketio,
// ../browser); this file only adds what a cluster needs.

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { io } from 'socket.io-client';

import { restCall, sleep, token } from '../socketio/harness.mjs';

export { collect, next, of, record, request, sleep, token, uid } from '../socketio/harness.mjs';

export const SECRET = 'cluster-test-secret-0123456789';
export const TURN_SECRET = 'cluster-turn-secret-0123456789';

// Whatever a suite started is killed when its process exits, even on a crash; the
// orderly teardown (database dropped, folders removed) is `Cluster.stop`, run by
// `after`.
const children = new Set();
process.on('exit', () => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
});

/** A TCP port nobody listens on right now. */
export async function freePort() {
  const server = net.createServer();
  await new Promise((resolve, reject) => server.listen(0, '127.0.0.1', resolve).once('error', reject));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** Spawns `command`, failing loudly (not skipping) when it is not installed. */
function launch(command, args, options, needed) {
  const child = spawn(command, args, options);
  children.add(child);
  child.once('exit', () => children.delete(child));
  child.once('error', (e) => {
    if (e.code === 'ENOENT') console.error(`${command} is required ${needed}: ${e.message}`);
  });
  return child;
}

const exitOf = (child) =>
  child.exitCode !== null || child.signalCode !== null
    ? Promise.resolve({ code: child.exitCode, signal: child.signalCode })
    : new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));

/** Resolves when `child` writes a line matching `pattern` to `stream`; rejects if it exits first. */
function waitFor(child, stream, pattern, what, ms = 30_000) {
  return new Promise((resolve, reject) => {
    let seen = '';
    const timer = setTimeout(() => reject(new Error(`${what} did not start within ${ms} ms:\n${seen}`)), ms);
    child[stream].on('data', (chunk) => {
      seen += chunk;
      const match = pattern.exec(seen);
      if (match) {
        clearTimeout(timer);
        resolve(match);
      }
    });
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`${what} could not be started: ${e.message}`));
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`${what} exited (${code ?? signal}) before it was ready:\n${seen}`));
    });
  });
}

// ---- what sockets receive ------------------------------------------------------

/** How long a duplicate has to turn up before a notice counts as delivered once. */
export const SETTLE = 1500;

/** Fails if any socket of `who` received the same notice (name and payload) twice. */
export function assertNoDuplicates(who) {
  for (const [name, seen] of Object.entries(who)) {
    const counts = new Map();
    for (const { event, data } of seen) {
      const key = `${event} ${JSON.stringify(data)}`;
      counts.set(key, (counts.get(key) ?? 0) + 1);
    }
    const twice = [...counts].filter(([, n]) => n > 1);
    assert.deepEqual(twice, [], `${name} received notices more than once`);
  }
}

// ---- Redis --------------------------------------------------------------------------

/** A redis-server of the suite's own, on a free port, without persistence. */
export class Redis {
  static async start() {
    const redis = new Redis(await freePort(), mkdtempSync(join(tmpdir(), 'huddle-redis-')));
    await redis.run();
    return redis;
  }

  constructor(port, dir) {
    this.port = port;
    this.dir = dir;
    this.url = `redis://127.0.0.1:${port}`;
  }

  async run() {
    const args = ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', this.dir];
    this.child = launch('redis-server', args, { stdio: ['ignore', 'pipe', 'pipe'] }, 'for the cluster suites (Debian: apt-get install -y redis-server)');
    await waitFor(this.child, 'stdout', /Ready to accept connections/, `redis-server on port ${this.port}`);
  }

  /** Kills redis-server (SIGKILL, or `signal`) and waits until it is gone. */
  async kill(signal = 'SIGKILL') {
    if (!this.child) return;
    const child = this.child;
    this.child = null;
    child.kill(signal);
    await exitOf(child);
  }

  /** Starts redis-server again on the same port (empty: it keeps nothing). */
  async restart() {
    await this.kill();
    await this.run();
  }

  /** `redis-cli -p PORT ...args`, its output trimmed. */
  cli(...args) {
    const out = spawnSync('redis-cli', ['-p', String(this.port), ...args], { encoding: 'utf8' });
    if (out.error) throw new Error(`redis-cli is required for the cluster suites: ${out.error.message}`);
    if (out.status !== 0) throw new Error(`redis-cli ${args.join(' ')}: ${out.stderr}`);
    return out.stdout.trim();
  }

  async stop() {
    await this.kill('SIGTERM');
    rmSync(this.dir, { recursive: true, force: true });
  }
}

// ---- PostgreSQL ---------------------------------------------------------------------

/** The PostgreSQL server the suites use: TEST_DATABASE_URL's, else local trust auth. */
const PG_SERVER = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432';

function psql(database, sql) {
  const url = new URL(PG_SERVER);
  url.pathname = `/${database}`;
  const out = spawnSync('psql', ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', url.href, '-c', sql], { encoding: 'utf8' });
  if (out.error) throw new Error(`psql (PostgreSQL's client) is required for the cluster suites: ${out.error.message}`);
  if (out.status !== 0) throw new Error(`PostgreSQL at ${PG_SERVER} is required for the cluster suites; ${sql}: ${out.stderr}`);
  return out.stdout;
}

/** A fresh, empty database on PG_SERVER, for one suite. */
export class Database {
  static create() {
    const name = `huddle_cluster_${randomBytes(6).toString('hex')}`;
    psql('postgres', `CREATE DATABASE ${name}`);
    return new Database(name);
  }

  constructor(name) {
    this.name = name;
    const url = new URL(PG_SERVER);
    url.pathname = `/${name}`;
    this.url = url.href;
  }

  /** Runs `sql` in this database; resolves to psql's output. */
  query(sql) {
    return psql(this.name, sql);
  }

  drop() {
    psql('postgres', `DROP DATABASE IF EXISTS ${this.name} WITH (FORCE)`);
  }
}

// ---- Huddle nodes -------------------------------------------------------------------

/** One huddle node of the cluster; `restart` starts it again (on new ports). */
export class Node {
  constructor(id, env) {
    this.id = id;
    this.env = env;
    this.logText = '';
    this.exits = []; // { code, signal } of every run that ended
  }

  async start() {
    const bin = process.env.HUDDLE_BIN;
    if (!bin) throw new Error('HUDDLE_BIN must name the huddle binary (cargo test sets it)');
    const child = launch(bin, [], { env: this.env, stdio: ['ignore', 'ignore', 'pipe'] }, '(HUDDLE_BIN)');
    this.child = child;
    this.logText += `----- node ${this.id} starts\n`;
    child.stderr.on('data', (chunk) => (this.logText += chunk));
    this.exited = exitOf(child).then((exit) => {
      this.exits.push(exit);
      this.logText += `----- node ${this.id} exited: ${JSON.stringify(exit)}\n`;
      return exit;
    });
    const [, addr] = await waitFor(child, 'stderr', /\baddr=(\S+)/, `huddle node ${this.id}`);
    this.port = Number(addr.split(':').pop());
    this.url = `http://${addr}`;
    return this;
  }

  get alive() {
    return !!this.child && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Sends `signal` (SIGKILL: as kill -9) and resolves to the exit `{ code, signal }`. */
  async kill(signal = 'SIGKILL') {
    if (!this.alive) return this.exits.at(-1);
    this.child.kill(signal);
    return this.exited;
  }

  async restart() {
    await this.kill();
    return this.start();
  }

  log() {
    return this.logText;
  }
}

// ---- the cluster --------------------------------------------------------------------

/**
 * A cluster for one suite: Redis, a database and nodes `ids` (NODE_ID each), started
 * one after another so that only the first one migrates the fresh database. The suite
 * stops it in `after` (pass or fail); if starting fails, what was started is removed.
 * With `redis: false`, the nodes are single processes sharing the database (to check
 * the harness without cluster mode).
 */
export async function startCluster(options = {}) {
  const cluster = new Cluster();
  try {
    await cluster.start(options);
  } catch (e) {
    await cluster.stop().catch((teardown) => console.error(teardown.message));
    throw e;
  }
  return cluster;
}

export class Cluster {
  constructor() {
    this.nodes = new Map();
    this.sockets = new Set();
    this.proxies = [];
  }

  async start({ ids = ['a', 'b', 'c'], env = {}, redis = true }) {
    this.db = Database.create();
    if (redis) this.redis = await Redis.start();
    for (const id of ids) {
      const node = new Node(id, {
        PATH: process.env.PATH,
        HOST: '127.0.0.1',
        PORT: '0',
        SFU_HOST: '127.0.0.1',
        SFU_PORT: '0',
        SFU_PUBLIC_IP: '127.0.0.1',
        TURN_HOST: '127.0.0.1',
        TURN_PORT: '0',
        DATABASE_URL: this.db.url,
        JWT_SECRET: SECRET,
        TURN_SECRET,
        DEMO_TOKENS: 'true',
        LOG_LEVEL: process.env.CLUSTER_LOG_LEVEL ?? 'info',
        ...(redis && { REDIS_URL: this.redis.url, NODE_ID: id }),
        ...env,
      });
      this.nodes.set(id, node);
      await node.start();
    }
  }

  node(id) {
    const node = this.nodes.get(id);
    if (!node) throw new Error(`no node ${id}`);
    return node;
  }

  /** The nodes still running. */
  live() {
    return [...this.nodes.values()].filter((n) => n.alive);
  }

  /** The id of the node owning `callId`'s SFU room (its Redis lease), or null. */
  owner(callId) {
    return this.redis.cli('get', `huddle:room:${callId}`) || null;
  }

  /** Node `id`'s media (SFU) address `ip:port` as the registry has it, or null while it has no entry. */
  media(id) {
    const entry = this.redis.cli('get', `huddle:node:${id}`);
    return entry ? JSON.parse(entry).media : null;
  }

  /** Resolves to the owner of `callId`'s media once there is one. */
  async ownerOf(callId, ms = 10_000) {
    const deadline = Date.now() + ms;
    for (;;) {
      const owner = this.owner(callId);
      if (owner) return owner;
      if (Date.now() > deadline) throw new Error(`no node owns call ${callId}'s media after ${ms} ms\n${this.logs()}`);
      await sleep(100);
    }
  }

  /**
   * A connected socket for `user` (with `role`) on node `id` (websocket, no
   * reconnection, unless `extra` says).
   */
  async connect(id, user, { role, extra = {} } = {}) {
    const socket = io(this.node(id).url, {
      auth: { token: token(user, { secret: SECRET, name: `${user} name`, role }) },
      transports: ['websocket'],
      reconnection: false,
      forceNew: true,
      ...extra,
    });
    socket.nodeId = id;
    this.sockets.add(socket);
    await new Promise((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('connect_error', reject);
    });
    return socket;
  }

  /** A REST call as `user` (with `role`) to node `id`; resolves to { status, body, headers }. */
  rest(id, method, path, user, body, { role } = {}) {
    return restCall(this.node(id).url, method, path, body, token(user, { secret: SECRET, role }));
  }

  /** Node `id` as a single server: `connect(user, options)` and `rest(method, path, user, body, options)`. */
  at(id) {
    return {
      id,
      connect: (user, options) => this.connect(id, user, options),
      rest: (method, path, user, body, options) => this.rest(id, method, path, user, body, options),
    };
  }

  /**
   * A stand-in for a load balancer in front of the cluster, for one client: a TCP
   * proxy on loopback forwarding every new connection to node `id` while it runs, else
   * to another live node. Connections already open stay where they are (and die with
   * their node). Clients may use Engine.IO's polling as well as WebSocket here only
   * because each client has a proxy of its own: a real load balancer shared by many
   * clients needs sticky sessions (e.g. by the `sid` query parameter or a cookie) so
   * that every polling request of a session reaches the node holding it.
   */
  async proxy(id) {
    const open = new Set();
    const server = net.createServer((client) => {
      const target = this.nodes.get(id)?.alive ? this.nodes.get(id) : this.live()[0];
      if (!target) return client.destroy();
      const upstream = net.connect(target.port, '127.0.0.1');
      for (const [from, to] of [[client, upstream], [upstream, client]]) {
        open.add(from);
        from.pipe(to);
        from.on('error', () => to.destroy());
        from.on('close', () => {
          open.delete(from);
          to.destroy();
        });
      }
    });
    await new Promise((resolve, reject) => server.listen(0, '127.0.0.1', resolve).once('error', reject));
    const proxy = {
      url: `http://127.0.0.1:${server.address().port}`,
      close: () => {
        for (const socket of open) socket.destroy();
        return new Promise((resolve) => server.close(resolve));
      },
    };
    this.proxies.push(proxy);
    return proxy;
  }

  /** Every node's log, for failure messages. */
  logs() {
    return [...this.nodes.values()].map((n) => `===== node ${n.id}\n${n.log().split('\n').slice(-40).join('\n')}`).join('\n');
  }

  /** Stops everything this cluster started, and drops its database, pass or fail. */
  async stop() {
    const failures = [];
    const attempt = async (what, body) => {
      try {
        await body();
      } catch (e) {
        failures.push(`${what}: ${e.message}`);
      }
    };
    for (const socket of this.sockets) socket.disconnect();
    for (const proxy of this.proxies) await attempt('proxy', () => proxy.close());
    const stopped = async (node) => {
      const late = setTimeout(() => node.kill('SIGKILL'), 20_000);
      await node.kill('SIGTERM');
      clearTimeout(late);
    };
    await Promise.all([...this.nodes.values()].map((node) => attempt(`node ${node.id}`, () => stopped(node))));
    if (this.redis) await attempt('redis', () => this.redis.stop());
    if (this.db) await attempt('database', () => this.db.drop());
    if (failures.length) throw new Error(`cluster teardown: ${failures.join('; ')}`);
  }
}
