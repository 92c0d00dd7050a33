// Signaling benchmark: Huddle (HUDDLE_BIN, a release build) and the Node socket.io
// 4.8 reference server (reference-server.mjs), side by side in one run, driven
// identically by the official socket.io client over WebSocket:
//   echo   - `echo` with an acknowledgement, at a fixed offered rate;
//   relay  - `webrtc:ice_candidate` from one member of a call to the other, at a
//            fixed offered rate (latency: emit to arrival at the target socket);
//   memory - resident memory added per held, authenticated connection.
// Server CPU is read from /proc/PID/stat (user + system) around each phase, so the
// figures are CPU time per message, not wall time, and the ratio compares like with
// like on this shared machine. Settings: ECHO_RATE, RELAY_RATE (msg/s),
// PHASE_SECONDS, PAIRS (calls, two clients each), CONNECTIONS (memory phase).

import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { io } from 'socket.io-client';

import { cpuSeconds, env, limitsOff, now, paced, percentile, rssKiB, sleep } from './common.mjs';

const ECHO_RATE = env('ECHO_RATE', 2000);
const RELAY_RATE = env('RELAY_RATE', 2000);
const SECONDS = env('PHASE_SECONDS', 10);
const PAIRS = env('PAIRS', 25);
const CONNECTIONS = env('CONNECTIONS', 5000);
const SECRET = 'bench-secret-0123456789abcdef';
const HUDDLE_BIN = process.env.HUDDLE_BIN;
if (!HUDDLE_BIN) throw new Error('set HUDDLE_BIN to a release build of huddle (run.sh does)');

function token(sub) {
  const part = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const body = `${part({ alg: 'HS256', typ: 'JWT' })}.${part({ sub, exp: Math.floor(Date.now() / 1000) + 7200 })}`;
  return `${body}.${createHmac('sha256', SECRET).update(body).digest('base64url')}`;
}

/** Spawns a server and resolves to { pid, url, stop } once `pattern` gives its address. */
function launch(command, args, extraEnv, pattern) {
  const child = spawn(command, args, { env: { ...process.env, ...extraEnv }, stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  return new Promise((resolve, reject) => {
    const onData = (chunk) => {
      log += chunk;
      const match = pattern.exec(log);
      if (match) {
        child.stdout.off('data', onData);
        child.stderr.off('data', onData);
        child.stdout.resume();
        child.stderr.resume();
        resolve({
          pid: child.pid,
          url: match[1],
          stop: () => new Promise((done) => { child.once('exit', done); child.kill('SIGTERM'); }),
        });
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.once('exit', (code) => reject(new Error(`${command} exited with ${code}:\n${log}`)));
  });
}

function connect(url, user) {
  const socket = io(url, { auth: { token: token(user) }, transports: ['websocket'], reconnection: false, forceNew: true });
  return new Promise((resolve, reject) => {
    socket.once('connect', () => resolve(socket));
    socket.once('connect_error', reject);
  });
}

/** Runs `phase` against `server` after a warm-up; returns CPU per message and latencies. */
async function measure(server, rate, phase) {
  await phase(rate, Math.min(2, SECONDS), () => {});
  const latencies = [];
  const cpuBefore = cpuSeconds(server.pid);
  const sent = await phase(rate, SECONDS, (ms) => latencies.push(ms));
  await sleep(500); // let the last answers arrive
  const cpu = cpuSeconds(server.pid) - cpuBefore;
  latencies.sort((a, b) => a - b);
  return {
    sent,
    lost: sent - latencies.length,
    cpuMicros: (cpu * 1e6) / sent,
    p50: percentile(latencies, 50),
    p99: percentile(latencies, 99),
  };
}

function echoPhase(clients) {
  return (rate, seconds, record) =>
    paced(rate, seconds, (i) => {
      const t = now();
      clients[i % clients.length].emit('echo', { seq: i }, () => record(now() - t));
    });
}

function relayPhase(pairs) {
  const inbox = new Map();
  for (const { b } of pairs) {
    b.socket.on('webrtc:ice_candidate', (data) => inbox.get(b.socket)?.(now() - data.candidate.t));
  }
  return (rate, seconds, record) => {
    for (const { b } of pairs) inbox.set(b.socket, record);
    return paced(rate, seconds, (i) => {
      const { callId, a, b } = pairs[i % pairs.length];
      a.socket.emit('webrtc:ice_candidate', {
        callId,
        targetUserId: b.user,
        candidate: { candidate: `candidate:${i} 1 udp 2122260223 127.0.0.1 ${40000 + (i % 20000)} typ host`, sdpMid: '0', t: now() },
      });
    });
  };
}

/** KiB of server RSS per connection held. */
async function memoryPerConnection(server) {
  await sleep(1000);
  const before = rssKiB(server.pid);
  const sockets = [];
  for (let i = 0; i < CONNECTIONS; i += 250) {
    const batch = [];
    for (let j = i; j < Math.min(CONNECTIONS, i + 250); j++) batch.push(connect(server.url, `idle-${j}`));
    sockets.push(...(await Promise.all(batch)));
  }
  await sleep(2000);
  const after = rssKiB(server.pid);
  for (const socket of sockets) socket.disconnect();
  await sleep(1000);
  return (after - before) / CONNECTIONS;
}

async function main() {
  const dir = mkdtempSync(join(tmpdir(), 'huddle-bench-'));
  const huddle = await launch(HUDDLE_BIN, [], {
    HOST: '127.0.0.1', PORT: '0', JWT_SECRET: SECRET, LOG_LEVEL: 'info',
    DATABASE_URL: `sqlite://${join(dir, 'bench.db')}`,
    ...limitsOff(CONNECTIONS),
  }, /addr=(\S+)/);
  huddle.url = `http://${huddle.url}`;

  // The calls: started and answered over Huddle's REST API; the reference gets the
  // same membership.
  const calls = {};
  const rest = async (path, user, body) => {
    const response = await fetch(huddle.url + path, {
      method: 'POST',
      headers: { authorization: `Bearer ${token(user)}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    const json = await response.json();
    if (!json.success) throw new Error(`${path}: ${JSON.stringify(json)}`);
    return json.data;
  };
  for (let i = 0; i < PAIRS; i++) {
    const [a, b] = [`caller-${i}`, `callee-${i}`];
    const { call } = await rest('/api/v1/calls/start', a, { type: 'video', participantIds: [b] });
    await rest(`/api/v1/calls/${call.id}/join`, b, {});
    calls[call.id] = [a, b];
  }
  const callsFile = join(dir, 'calls.json');
  writeFileSync(callsFile, JSON.stringify(calls));
  const reference = await launch('node', [new URL('./reference-server.mjs', import.meta.url).pathname],
    { JWT_SECRET: SECRET, CALLS_FILE: callsFile }, /listening (\d+)/);
  reference.url = `http://127.0.0.1:${reference.url}`;

  const results = {};
  for (const [name, server] of [['huddle', huddle], ['node', reference]]) {
    const pairs = [];
    for (const [callId, [a, b]] of Object.entries(calls)) {
      pairs.push({ callId, a: { user: a, socket: await connect(server.url, a) }, b: { user: b, socket: await connect(server.url, b) } });
    }
    const clients = pairs.flatMap(({ a, b }) => [a.socket, b.socket]);
    results[name] = {
      echo: await measure(server, ECHO_RATE, echoPhase(clients)),
      relay: await measure(server, RELAY_RATE, relayPhase(pairs)),
    };
    results[name].memory = await memoryPerConnection(server);
    for (const socket of clients) socket.disconnect();
    results[name].rss = rssKiB(server.pid);
  }
  await huddle.stop();
  await reference.stop();
  rmSync(dir, { recursive: true, force: true });

  const h = results.huddle;
  const n = results.node;
  const row = (label, hv, nv, digits = 2) =>
    console.log(`${label.padEnd(34)}${hv.toFixed(digits).padStart(10)}${nv.toFixed(digits).padStart(10)}${(hv / nv).toFixed(2).padStart(12)}`);
  console.log(`\nsignaling benchmark: ${PAIRS} calls (${PAIRS * 2} clients), ${SECONDS}s per phase, ` +
    `echo ${ECHO_RATE}/s, relay ${RELAY_RATE}/s, ${CONNECTIONS} held connections; socket.io-client over WebSocket`);
  console.log(`${''.padEnd(34)}${'huddle'.padStart(10)}${'node'.padStart(10)}${'huddle/node'.padStart(12)}`);
  for (const phase of ['echo', 'relay']) {
    row(`${phase}: server CPU us/message`, h[phase].cpuMicros, n[phase].cpuMicros);
    row(`${phase}: latency p50 ms`, h[phase].p50, n[phase].p50, 3);
    row(`${phase}: latency p99 ms`, h[phase].p99, n[phase].p99, 3);
    console.log(`${`${phase}: sent / lost`.padEnd(34)}${`${h[phase].sent}/${h[phase].lost}`.padStart(10)}${`${n[phase].sent}/${n[phase].lost}`.padStart(10)}`);
  }
  row('memory: RSS KiB per connection', h.memory, n.memory);
  console.log('\ntargets: CPU/message <= 0.35x node, memory/connection <= 0.5x node, p99 no worse');
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
