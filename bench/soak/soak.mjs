// Soak: drives a huddle binary on 127.0.0.1 for a bounded time and reports whether it
// leaks or loses anything.
//
//   node soak.mjs --seconds 600 [--bin target/release/huddle] [--rate 1] [--rooms 2]
//                 [--sample 5] [--server-env KEY=VALUE ...] [--no-turn] [--json FILE]
//                 [--log FILE] [--rss-check | --no-rss-check]
//
// Load, all at once until the deadline (each loop checks the clock before every step
// and every wait has a timeout, so the run ends within --seconds + ~45 s):
//   rest     calls started, joined, declined, read, updated and ended over REST, by
//            fresh users each time (1-3 invitees, p2p and sfu calls);
//   sio      the same over Socket.IO with the official client: invite, ring, accept,
//            webrtc:ice_candidate relays checked at the target, a call:toggle_audio
//            burst, quality_update, echo, end; every socket connects and leaves;
//   steady   long-lived calls whose members exchange `echo` and relays all run long;
//   churn    short-lived sockets (several per user at times), plus refused tokens;
//   sfu      rooms of 2-4 participants (npm @roamhq/wrtc, libwebrtc) that publish
//            Opus audio + VP8 video and subscribe through the built-in SFU per the
//            README's protocol, one leaving and a newcomer joining mid-call.
// Every client event is sent with an acknowledgement: lost = sent - answered (ok or
// error). The server's VmRSS is sampled every --sample seconds.
//
// A socket sends its first event the moment `connect` fires, as clients may.
//
// Targets (exit 1 when one is missed, 2 when the run could not be made):
//   0 acks lost, 0 relays or notices lost, 0 HTTP 5xx, 0 unexpected refusals,
//   0 disconnects not asked for by the client, every subscriber received media from
//   every publisher it overlapped with, nothing left (calls, rooms, participants)
//   after the drain, no panic, a clean exit on SIGTERM, and RSS growth over the
//   second half < 5 % (checked only when --seconds >= 300: shorter runs are
//   dominated by allocator and cache warm-up; --rss-check / --no-rss-check override).
//
// The server's environment: HOST/ports/database/secret are set here; any RATE_LIMIT_*
// variable of this process, SOAK_SERVER_ENV="K=V K=V" and --server-env K=V are passed
// on (later wins), e.g. to raise rate limits. SOAK_PID_FILE, if set, gets the server's
// pid, for a caller to stop it should this process die without doing so.

import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { isDeepStrictEqual } from 'node:util';

import wrtc from '@roamhq/wrtc';
import { io } from 'socket.io-client';

// ---- settings ------------------------------------------------------------------------

function parseArgs(argv) {
  const o = { seconds: 600, rate: 1, rooms: 2, sample: 5, serverEnv: {}, turn: true, rssCheck: undefined };
  for (const [key, value] of Object.entries(process.env)) if (key.startsWith('RATE_LIMIT_')) o.serverEnv[key] = value;
  for (const pair of (process.env.SOAK_SERVER_ENV ?? '').split(/\s+/).filter(Boolean)) addEnv(o.serverEnv, pair);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) usage(`${a} needs a value`);
      return argv[++i];
    };
    const number = () => {
      const n = Number(value());
      if (!Number.isFinite(n) || n < 0) usage(`${a} needs a non-negative number`);
      return n;
    };
    if (a === '--seconds') o.seconds = number();
    else if (a === '--rate') o.rate = number();
    else if (a === '--rooms') o.rooms = Math.floor(number());
    else if (a === '--sample') o.sample = Math.max(1, number());
    else if (a === '--bin') o.bin = value();
    else if (a === '--json') o.json = value();
    else if (a === '--log') o.log = value();
    else if (a === '--server-env') addEnv(o.serverEnv, value());
    else if (a === '--no-turn') o.turn = false;
    else if (a === '--rss-check') o.rssCheck = true;
    else if (a === '--no-rss-check') o.rssCheck = false;
    else if (a === '--help' || a === '-h') usage();
    else usage(`unknown argument ${a}`);
  }
  o.bin = o.bin ?? process.env.HUDDLE_BIN;
  if (!o.bin) usage('name the server with --bin or HUDDLE_BIN');
  o.bin = resolve(o.bin);
  if (o.seconds < 20) usage('--seconds must be at least 20');
  if (o.rate <= 0) usage('--rate must be positive');
  o.rssCheck = o.rssCheck ?? o.seconds >= 300;
  return o;
}

function addEnv(env, pair) {
  const at = pair.indexOf('=');
  if (at < 1) usage(`server env must be KEY=VALUE, not ${pair}`);
  env[pair.slice(0, at)] = pair.slice(at + 1);
}

function usage(error) {
  const lines = readFileSync(new URL(import.meta.url), 'utf8').split('\n');
  const text = lines.slice(0, lines.findIndex((l) => !l.startsWith('//'))).join('\n');
  if (error) console.error(`soak: ${error}`);
  console.error(text);
  process.exit(2);
}

const opts = parseArgs(process.argv.slice(2));
const SECRET = 'soak-secret-0123456789abcdef-0123';
const ACK_TIMEOUT_MS = 10_000;
const NOTICE_TIMEOUT_MS = 10_000;
const REST_TIMEOUT_MS = 10_000;
const WARMUP_S = Math.min(60, Math.max(10, Math.round(opts.seconds * 0.1)));
const ROOM_HOLD_MS = Math.min(30_000, Math.max(8_000, opts.seconds * 1000 * 0.12));
const MEDIA_OVERLAP_MS = 6_000; // a subscriber must get media from a publisher it overlapped this long
const SFU = 'sfu';

const sleep = (ms) => new Promise((r) => setTimeout(r, Math.max(0, ms)));
let t0 = Date.now(); // reset to the start of the load
const elapsed = () => (Date.now() - t0) / 1000;
let loadEnd = Infinity; // set when the server is up
const running = () => Date.now() < loadEnd;
/** Sleeps `ms`, cut short at the end of the load. */
const pause = (ms) => sleep(Math.min(ms, loadEnd - Date.now()));

// ---- what is counted -----------------------------------------------------------------

const stats = {
  acks: { sent: 0, ok: 0, errors: 0, lost: 0, allowedErrors: 0, byEvent: {}, unexpected: {}, lostSamples: [] },
  relays: { sent: 0, delivered: 0 },
  notices: { awaited: 0, missed: 0, samples: [] },
  rest: { requests: 0, byStatus: {}, fiveXX: 0, unexpected: 0, failed: 0, samples: [] },
  sockets: { connects: 0, connectErrors: 0, refusedAsExpected: 0, clientDisconnects: 0, serverDisconnects: 0, reasons: {} },
  calls: { restStarted: 0, sioStarted: 0, joined: 0, ended: 0, notEnded: 0 },
  sfu: {
    rooms: 0, participants: 0, offers: 0, subscribeOffers: 0, connected: 0, failedConnections: 0,
    packets: { audio: 0, video: 0 }, pairsChecked: 0, pairsWithoutMedia: 0, missing: [],
  },
  echoMismatch: 0,
};

function note(list, text) {
  if (list.length < 12) list.push(`${elapsed().toFixed(1)}s ${text}`);
}

// ---- tokens, server ------------------------------------------------------------------

function token(sub, extra = {}) {
  const part = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const now = Math.floor(Date.now() / 1000);
  const body = `${part({ alg: 'HS256', typ: 'JWT' })}.${part({ sub, name: `${sub} soak`, iat: now, exp: now + 4 * 3600, ...extra })}`;
  return `${body}.${createHmac('sha256', SECRET).update(body).digest('base64url')}`;
}

const workDir = mkdtempSync(join(tmpdir(), 'huddle-soak-'));
const logPath = resolve(opts.log ?? join(workDir, 'huddle.log'));
let server = null; // { child, pid, url }

async function startServer() {
  const env = {
    PATH: process.env.PATH,
    HOST: '127.0.0.1',
    PORT: '0',
    SFU_HOST: '127.0.0.1',
    SFU_PORT: '0',
    TURN_HOST: '127.0.0.1',
    TURN_PORT: '0',
    DATABASE_URL: `sqlite://${join(workDir, 'huddle.db')}`,
    JWT_SECRET: SECRET,
    LOG_LEVEL: 'info',
    ...opts.serverEnv,
  };
  const logFd = openSync(logPath, 'w');
  const child = spawn(opts.bin, [], { env, stdio: ['ignore', logFd, logFd] });
  closeSync(logFd);
  let exited = null;
  child.once('exit', (code, signal) => (exited = { code, signal }));
  child.once('error', (e) => (exited = { error: e.message }));
  const until = Date.now() + 60_000;
  while (Date.now() < until) {
    if (exited) throw new Error(`huddle exited at start (${JSON.stringify(exited)}):\n${readFileSync(logPath, 'utf8')}`);
    const match = /addr=(\S+)/.exec(readFileSync(logPath, 'utf8'));
    if (match) {
      server = { child, pid: child.pid, url: `http://${match[1]}`, exited: () => exited };
      // For whoever started this process: the server to stop if this process dies hard.
      if (process.env.SOAK_PID_FILE) writeFileSync(process.env.SOAK_PID_FILE, `${child.pid}\n`);
      return;
    }
    await sleep(100);
  }
  child.kill('SIGKILL');
  throw new Error(`huddle did not announce its address within 60 s:\n${readFileSync(logPath, 'utf8')}`);
}

function killServer() {
  if (server && !server.exited()) {
    try {
      server.child.kill('SIGKILL');
    } catch {}
  }
}
process.on('exit', killServer);
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(signal, () => {
    console.error(`soak: ${signal}: stopping`);
    killServer();
    process.exit(2);
  });
}

function rssKiB(pid) {
  try {
    const line = readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').find((l) => l.startsWith('VmRSS:'));
    return Number(line.split(/\s+/)[1]);
  } catch {
    return NaN;
  }
}

/** Gauges of interest from the server's Prometheus text. */
async function gauges() {
  try {
    const res = await fetch(`${server.url}/metrics`, { signal: AbortSignal.timeout(5000) });
    const text = await res.text();
    const sum = (name) =>
      text
        .split('\n')
        .filter((l) => l.startsWith(name) && (l[name.length] === ' ' || l[name.length] === '{'))
        .reduce((s, l) => s + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
    return {
      activeCalls: sum('huddle_active_calls'),
      participants: sum('huddle_participants_connected'),
      sfuRooms: sum('huddle_sfu_rooms'),
      turnAllocations: sum('huddle_turn_allocations'),
      dropped: sum('huddle_sfu_datagrams_dropped_total'),
    };
  } catch (e) {
    return { error: e.message };
  }
}

// ---- REST ----------------------------------------------------------------------------

/** A REST request as `user`; counts its status. Resolves to { status, body } (status 0: no answer). */
async function rest(method, path, user, body) {
  stats.rest.requests++;
  let status = 0;
  let json = null;
  try {
    const res = await fetch(server.url + path, {
      method,
      headers: { authorization: `Bearer ${token(user)}`, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(REST_TIMEOUT_MS),
    });
    status = res.status;
    json = await res.json().catch(() => null);
  } catch (e) {
    stats.rest.failed++;
    note(stats.rest.samples, `${method} ${path}: no answer (${e.message})`);
    return { status: 0, body: null };
  }
  stats.rest.byStatus[status] = (stats.rest.byStatus[status] ?? 0) + 1;
  if (status >= 500) {
    stats.rest.fiveXX++;
    note(stats.rest.samples, `${method} ${path} -> ${status} ${JSON.stringify(json)}`);
  } else if (status < 200 || status >= 300) {
    stats.rest.unexpected++;
    note(stats.rest.samples, `${method} ${path} -> ${status} ${JSON.stringify(json)}`);
  }
  return { status, body: json };
}

const ok = (r) => r.status >= 200 && r.status < 300 && r.body?.success === true;

// ---- Socket.IO -----------------------------------------------------------------------

const openSockets = new Set();
let shuttingDown = false;

/** A connected socket for `user` (null when refused or timed out; counted). */
const connect = (user, options) => open(user, options);

function open(user, { auth, expectRefusal = false } = {}) {
  const socket = io(server.url, {
    auth: auth ?? { token: token(user) },
    transports: ['websocket'],
    reconnection: false,
    forceNew: true,
    timeout: 10_000,
  });
  socket.user = user;
  return new Promise((resolve) => {
    const done = (value) => {
      socket.off('connect', onConnect);
      socket.off('connect_error', onError);
      resolve(value);
    };
    const onConnect = () => {
      if (expectRefusal) {
        stats.sockets.connectErrors++;
        note(stats.notices.samples, `a socket with a bad token was let in (${user})`);
        socket.disconnect();
        return done(null);
      }
      stats.sockets.connects++;
      socket.connectedAt = Date.now();
      openSockets.add(socket);
      socket.on('disconnect', (reason) => {
        openSockets.delete(socket);
        if (reason === 'io client disconnect') stats.sockets.clientDisconnects++;
        else if (!shuttingDown) {
          stats.sockets.serverDisconnects++;
          stats.sockets.reasons[reason] = (stats.sockets.reasons[reason] ?? 0) + 1;
        }
      });
      done(socket);
    };
    const onError = (e) => {
      if (expectRefusal) stats.sockets.refusedAsExpected++;
      else {
        stats.sockets.connectErrors++;
        note(stats.notices.samples, `connect ${user}: ${e.message}`);
      }
      socket.close();
      done(null);
    };
    socket.on('connect', onConnect);
    socket.on('connect_error', onError);
  });
}

function bye(socket) {
  if (socket?.connected) socket.disconnect();
}

/**
 * Emits `event` with an acknowledgement. Resolves to the ack (null when none came).
 * `allow`: error codes that are a legitimate answer here (counted, not failures), or a
 * function of the code that says so when the answer comes.
 */
let acksInFlight = 0;

function emitAck(socket, event, data, { allow = [] } = {}) {
  const e = (stats.acks.byEvent[event] ??= { sent: 0, ok: 0, errors: 0, lost: 0 });
  stats.acks.sent++;
  e.sent++;
  acksInFlight++;
  const sentAt = Date.now();
  const sinceConnect = sentAt - socket.connectedAt;
  return new Promise((resolve) => {
    socket.timeout(ACK_TIMEOUT_MS).emit(event, data, (err, ack) => {
      acksInFlight--;
      if (err) {
        stats.acks.lost++;
        e.lost++;
        note(
          stats.acks.lostSamples,
          `${event} from ${socket.user} (socket ${socket.id}, sent ${sinceConnect} ms after its connect, ${socket.connected ? 'still connected' : 'disconnected'}): ${err.message}`,
        );
        return resolve(null);
      }
      if (ack?.ok === true) {
        stats.acks.ok++;
        e.ok++;
      } else {
        stats.acks.errors++;
        e.errors++;
        const code = ack?.error?.code ?? 'MALFORMED_ACK';
        if (typeof allow === 'function' ? allow(code) : allow.includes(code)) stats.acks.allowedErrors++;
        else {
          const key = `${event} ${code}`;
          stats.acks.unexpected[key] = (stats.acks.unexpected[key] ?? 0) + 1;
          note(stats.acks.lostSamples, `${event} from ${socket.user} refused: ${JSON.stringify(ack?.error)}`);
        }
      }
      resolve(ack);
    });
  });
}

/** The next `event` on `socket` whose payload passes `filter`; null (counted) after the timeout. */
function awaitNotice(socket, event, filter = () => true, what = event) {
  stats.notices.awaited++;
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      socket.off(event, handler);
      stats.notices.missed++;
      note(stats.notices.samples, `${socket.user} did not get ${what} within ${NOTICE_TIMEOUT_MS} ms`);
      resolve(null);
    }, NOTICE_TIMEOUT_MS);
    function handler(data) {
      if (!filter(data)) return;
      clearTimeout(timer);
      socket.off(event, handler);
      resolve(data);
    }
    socket.on(event, handler);
  });
}

// Relays whose arrival at the target is checked: id -> time sent.
const pendingRelays = new Map();
let relaySeq = 0;

function watchRelays(socket) {
  socket.on('webrtc:ice_candidate', (data) => {
    const id = data?.candidate?.soakId;
    if (id !== undefined && pendingRelays.delete(id)) stats.relays.delivered++;
  });
}

/** Sends a candidate from `from` to `to` (a user id) in `callId`; the ack and the arrival are both counted. */
function relay(from, to, callId) {
  const id = ++relaySeq;
  pendingRelays.set(id, Date.now());
  stats.relays.sent++;
  const port = 40000 + (id % 20000);
  return emitAck(from, 'webrtc:ice_candidate', {
    callId,
    targetUserId: to,
    candidate: { candidate: `candidate:${id} 1 udp 2122260223 127.0.0.1 ${port} typ host`, sdpMid: '0', sdpMLineIndex: 0, soakId: id },
  });
}

let echoSeq = 0;

async function echo(socket) {
  // Integers and strings: the check is exact (see the README of this folder on floats).
  const payload = { seq: ++echoSeq, at: Date.now(), text: `soak ${socket.user}`, list: [1, 'two', { three: 3 }], flag: true, none: null };
  const ack = await emitAck(socket, 'echo', payload);
  if (ack?.ok && !isDeepStrictEqual(ack.data, payload)) {
    stats.echoMismatch++;
    note(stats.acks.lostSamples, `echo answered ${JSON.stringify(ack.data)} to ${JSON.stringify(payload)}`);
  }
}

// ---- workers: REST -------------------------------------------------------------------

async function restWorker(w) {
  for (let i = 0; running(); i++) {
    const caller = `r${w}-${i}-caller`;
    const invitees = Array.from({ length: 1 + (i % 3) }, (_, k) => `r${w}-${i}-inv${k}`);
    const start = await rest('POST', '/api/v1/calls/start', caller, {
      type: i % 2 ? 'audio' : 'video',
      participantIds: invitees,
      mediaMode: i % 3 === 0 ? 'p2p' : 'sfu',
    });
    if (!ok(start)) {
      await pause(1000);
      continue;
    }
    stats.calls.restStarted++;
    const id = start.body.data.call.id;
    const joined = [];
    for (const [k, user] of invitees.entries()) {
      if (k === 1) {
        await rest('POST', `/api/v1/calls/${id}/end`, user, { reason: 'declined' }); // declines
      } else if (ok(await rest('POST', `/api/v1/calls/${id}/join`, user, { audioEnabled: true, videoEnabled: k === 0 }))) {
        stats.calls.joined++;
        joined.push(user);
      }
    }
    await rest('GET', `/api/v1/calls/${id}`, invitees[0]);
    if (joined.length) await rest('PATCH', `/api/v1/calls/${id}/participant`, joined[0], { audioEnabled: false });
    if (i % 2 === 0) await rest('POST', `/api/v1/calls/${id}/token`, caller);
    if (i % 4 === 0) {
      await rest('GET', '/api/v1/calls/active', caller);
      await rest('GET', '/api/v1/calls/history?limit=10', caller);
      await rest('GET', '/api/v1/calls/stats', invitees[0]);
    }
    // Either the initiator ends it for everyone, or the others leave until it ends by itself.
    if (i % 2 === 0 || joined.length === 0) await rest('POST', `/api/v1/calls/${id}/end`, caller, {});
    else for (const user of joined) await rest('POST', `/api/v1/calls/${id}/end`, user, {});
    const after = await rest('GET', `/api/v1/calls/${id}`, caller);
    if (ok(after) && after.body.data.call.state === 'ended') stats.calls.ended++;
    else {
      stats.calls.notEnded++;
      note(stats.notices.samples, `REST call ${id} not ended: ${JSON.stringify(after.body?.data?.call?.state)}`);
    }
    await pause(1000 / opts.rate);
  }
}

// ---- workers: Socket.IO calls --------------------------------------------------------

const TOGGLE_BURST = 8;

async function sioWorker(w) {
  for (let i = 0; running(); i++) {
    await sioCall(w, i);
    await pause(1000 / opts.rate);
  }
}

async function sioCall(w, i) {
  const names = [`s${w}-${i}-caller`, ...Array.from({ length: 1 + (i % 2) }, (_, k) => `s${w}-${i}-callee${k}`)];
  const sockets = await Promise.all(names.map((n) => connect(n)));
  try {
    if (sockets.some((s) => !s)) return;
    const [caller, ...callees] = sockets;
    for (const s of sockets) watchRelays(s);
    const rings = callees.map((s) => awaitNotice(s, 'call:incoming', () => true, 'call:incoming'));
    const invite = await emitAck(caller, 'call:invite', {
      type: 'video',
      participantIds: names.slice(1),
      mediaMode: i % 2 ? 'sfu' : 'p2p',
    });
    if (!invite?.ok) {
      await Promise.all(rings);
      return;
    }
    stats.calls.sioStarted++;
    const callId = invite.call.id;
    await Promise.all(rings);
    for (const s of callees) {
      const accepted = awaitNotice(caller, 'call:accepted', (d) => d.callId === callId && d.userId === s.user, 'call:accepted');
      if ((await emitAck(s, 'call:accept', { callId }))?.ok) stats.calls.joined++;
      await accepted;
    }
    // Candidates both ways, checked at arrival.
    const callee = callees[0];
    for (let k = 0; k < 4; k++) {
      await Promise.all([relay(caller, callee.user, callId), relay(callee, caller.user, callId)]);
    }
    // A burst of toggles, all in flight at once; concurrent changes of one participant
    // may be refused with CONCURRENT_UPDATE (documented), never go unanswered.
    const burst = [];
    for (let k = 0; k < TOGGLE_BURST; k++) {
      burst.push(emitAck(callee, 'call:toggle_audio', { callId, enabled: k % 2 === 1 }, { allow: ['CONCURRENT_UPDATE'] }));
    }
    await Promise.all(burst);
    const last = await emitAck(callee, 'call:toggle_audio', { callId, enabled: true }, { allow: ['CONCURRENT_UPDATE'] });
    if (last?.ok && last.participant?.audioEnabled !== true) note(stats.notices.samples, `toggle ack says audioEnabled=${last.participant?.audioEnabled}`);
    await emitAck(callee, 'call:quality_update', { callId, jitter: 12, packetLoss: 0.5, roundTripTime: 40, bandwidth: 900, fps: 30, resolution: '640x480', codec: 'VP8' });
    await echo(caller);
    const ends = callees.map((s) => awaitNotice(s, 'call:ended', (d) => d.callId === callId, 'call:ended'));
    const end = await emitAck(caller, 'call:end', { callId });
    await Promise.all(ends);
    if (end?.ok) stats.calls.ended++;
  } finally {
    for (const s of sockets) bye(s);
  }
}

// ---- workers: steady echo + relay on long-lived calls --------------------------------

async function steadyWorker(pairs) {
  const members = [];
  for (let k = 0; k < pairs; k++) {
    const [a, b] = [`steady-${k}-a`, `steady-${k}-b`];
    const start = await rest('POST', '/api/v1/calls/start', a, { type: 'audio', participantIds: [b], mediaMode: 'p2p' });
    if (!ok(start)) continue;
    stats.calls.restStarted++;
    const callId = start.body.data.call.id;
    if (ok(await rest('POST', `/api/v1/calls/${callId}/join`, b, {}))) stats.calls.joined++;
    const [sa, sb] = await Promise.all([connect(a), connect(b)]);
    if (!sa || !sb) continue;
    watchRelays(sa);
    watchRelays(sb);
    members.push({ callId, sa, sb, a, b });
  }
  // Every member sends an echo and a relay about every two seconds (x --rate).
  const interval = 1000 / (pairs * opts.rate);
  const inFlight = new Set();
  const track = (promise) => {
    inFlight.add(promise);
    promise.finally(() => inFlight.delete(promise));
  };
  for (let n = 0; running() && members.length; n++) {
    const m = members[n % members.length];
    const [from, to] = n % 2 ? [m.sa, m.sb] : [m.sb, m.sa];
    if (from.connected) {
      track(echo(from));
      track(relay(from, to.user, m.callId));
    }
    await pause(interval);
  }
  await Promise.all(inFlight);
  // The calls end at the end, over REST.
  for (const m of members) {
    if (ok(await rest('POST', `/api/v1/calls/${m.callId}/end`, m.a, {}))) stats.calls.ended++;
  }
  await sleep(500);
  for (const m of members) {
    bye(m.sa);
    bye(m.sb);
  }
}

// ---- workers: churn ------------------------------------------------------------------

async function churnWorker() {
  const inFlight = new Set();
  for (let n = 0; running(); n++) {
    if (inFlight.size < 25) {
      const user = `churn-${n % 40}`; // the same user comes back on several devices at once
      const life = (async () => {
        if (n % 10 === 9) {
          await connect(user, { auth: { token: token(user, { exp: Math.floor(Date.now() / 1000) - 600 }) }, expectRefusal: true });
          return;
        }
        const socket = await connect(user);
        if (!socket) return;
        await echo(socket);
        await sleep(500 + (n % 7) * 400);
        bye(socket);
      })();
      inFlight.add(life);
      life.finally(() => inFlight.delete(life));
    }
    await pause(250 / opts.rate);
  }
  await Promise.all(inFlight);
}

// ---- SFU rooms with synthetic media --------------------------------------------------

const { RTCPeerConnection, MediaStream, nonstandard } = wrtc;
const VIDEO_W = 160;
const VIDEO_H = 120;

/** One clock for every synthetic source: 10 ms of 48 kHz audio per tick, video at 15 fps. */
const media = {
  sources: new Set(),
  timer: null,
  samples: new Int16Array(480),
  frame: { width: VIDEO_W, height: VIDEO_H, data: new Uint8ClampedArray(VIDEO_W * VIDEO_H * 1.5) },
  audioTicks: 0,
  videoTicks: 0,
  startedAt: 0,
  add(source) {
    this.sources.add(source);
    if (!this.timer) {
      this.startedAt = Date.now();
      this.audioTicks = 0;
      this.videoTicks = 0;
      this.timer = setInterval(() => this.tick(), 10);
    }
  },
  remove(source) {
    this.sources.delete(source);
    if (this.sources.size === 0 && this.timer) {
      clearInterval(this.timer);
      this.timer = null;
    }
  },
  tick() {
    const since = Date.now() - this.startedAt;
    let audioDue = Math.min(5, Math.floor(since / 10) - this.audioTicks);
    while (audioDue-- > 0) {
      const base = this.audioTicks++ * 480;
      for (let i = 0; i < 480; i++) this.samples[i] = Math.round(Math.sin(((base + i) * 2 * Math.PI * 440) / 48000) * 4000);
      for (const s of this.sources) {
        s.audio.onData({ samples: this.samples, sampleRate: 48000, bitsPerSample: 16, channelCount: 1, numberOfFrames: 480 });
      }
    }
    if (Math.floor(since / 66) > this.videoTicks) {
      this.videoTicks = Math.floor(since / 66);
      const y = this.frame.data;
      const shift = this.videoTicks % VIDEO_W;
      for (let row = 0; row < VIDEO_H; row++) {
        for (let col = 0; col < VIDEO_W; col++) y[row * VIDEO_W + col] = ((col + shift) * 3 + row) & 0xff;
      }
      for (const s of this.sources) s.video.onFrame(this.frame);
    }
  },
};

/** A participant's media session with the SFU: a publish and a subscribe connection. */
class MediaPeer {
  constructor(socket, callId, iceServers) {
    this.socket = socket;
    this.user = socket.user;
    this.callId = callId;
    this.tracks = {}; // sub mid -> { userId, source }
    this.last = new Map(); // inbound-rtp stats id -> packets at the last sample
    this.received = new Map(); // `${publisher} ${kind}` -> packets
    this.publishedAt = null;
    this.leftAt = null;
    this.closed = false;
    this.ending = false; // set just before this participant's call:end (or the caller's)
    const config = { iceServers: opts.turn ? iceServers : [], bundlePolicy: 'max-bundle' };
    this.pub = new RTCPeerConnection(config);
    this.sub = new RTCPeerConnection(config);
    this.candidatesSent = 0;
    for (const [name, pc] of [['publish', this.pub], ['subscribe', this.sub]]) {
      pc.onconnectionstatechange = () => {
        if (pc.connectionState === 'connected') stats.sfu.connected++;
        if (pc.connectionState === 'failed' && !this.closed) {
          stats.sfu.failedConnections++;
          note(stats.sfu.missing, `${this.user}'s ${name} connection failed`);
        }
      };
    }
    // Trickled candidates are accepted and not needed (the SFU is ICE-lite): send one.
    this.pub.onicecandidate = ({ candidate }) => {
      if (candidate && this.candidatesSent++ === 0 && this.socket.connected) {
        emitAck(this.socket, 'webrtc:ice_candidate', { callId, targetUserId: SFU, candidate: candidate.toJSON?.() ?? candidate });
      }
    };
    this.queue = Promise.resolve();
    this.onOffer = (data) => {
      if (data.fromUserId !== SFU || data.callId !== callId) return;
      this.queue = this.queue.then(() => this.answer(data)).catch((e) => note(stats.sfu.missing, `${this.user} subscribe: ${e.message}`));
    };
    this.onAnswer = (data) => {
      if (data.fromUserId !== SFU || data.callId !== callId || this.closed) return;
      this.pub.setRemoteDescription(data.answer).catch((e) => note(stats.sfu.missing, `${this.user} publish answer: ${e.message}`));
    };
    socket.on('webrtc:offer', this.onOffer);
    socket.on('webrtc:answer', this.onAnswer);
  }

  async answer({ offer, tracks }) {
    if (this.closed || this.ending) return;
    stats.sfu.subscribeOffers++;
    await this.sample(); // attribute packets to the owners of the mids before they change
    this.tracks = tracks ?? {};
    await this.sub.setRemoteDescription(offer);
    await this.sub.setLocalDescription(await this.sub.createAnswer());
    // An answer can cross the call's end on the wire: CALL_ENDED is then the right answer.
    await emitAck(
      this.socket,
      'webrtc:answer',
      { callId: this.callId, targetUserId: SFU, answer: { type: 'answer', sdp: this.sub.localDescription.sdp } },
      { allow: (code) => this.ending && (code === 'CALL_ENDED' || code === 'NOT_IN_CALL') },
    );
  }

  async publish() {
    this.source = { audio: new nonstandard.RTCAudioSource(), video: new nonstandard.RTCVideoSource() };
    this.localTracks = [this.source.audio.createTrack(), this.source.video.createTrack()];
    const stream = new MediaStream(this.localTracks);
    const sources = {};
    for (const track of this.localTracks) {
      this.pub.addTransceiver(track, { direction: 'sendonly', streams: [stream] });
      sources[track.id] = track.kind === 'audio' ? 'microphone' : 'camera';
    }
    media.add(this.source);
    await this.pub.setLocalDescription(await this.pub.createOffer());
    stats.sfu.offers++;
    const ack = await emitAck(this.socket, 'webrtc:offer', {
      callId: this.callId,
      targetUserId: SFU,
      offer: { type: 'offer', sdp: this.pub.localDescription.sdp },
      sources,
    });
    if (ack?.ok) this.publishedAt = Date.now();
  }

  /** Adds what arrived on the subscribe connection since the last look to its publishers. */
  async sample() {
    if (this.closed) return;
    let report;
    try {
      report = await this.sub.getStats();
    } catch {
      return;
    }
    for (const s of report.values()) {
      if (s.type !== 'inbound-rtp' || s.mid === undefined) continue;
      const owner = this.tracks[s.mid]?.userId;
      const packets = s.packetsReceived ?? 0;
      const delta = packets - (this.last.get(s.id) ?? 0);
      this.last.set(s.id, packets);
      if (!owner || delta <= 0) continue;
      const key = `${owner} ${s.kind}`;
      this.received.set(key, (this.received.get(key) ?? 0) + delta);
      stats.sfu.packets[s.kind] = (stats.sfu.packets[s.kind] ?? 0) + delta;
    }
  }

  async close() {
    if (this.closed) return;
    this.ending = true;
    await Promise.race([this.queue, sleep(ACK_TIMEOUT_MS + 1000)]); // the answer in hand, if any
    await this.sample();
    this.closed = true;
    this.leftAt = Date.now();
    this.socket.off('webrtc:offer', this.onOffer);
    this.socket.off('webrtc:answer', this.onAnswer);
    if (this.source) media.remove(this.source);
    for (const t of this.localTracks ?? []) t.stop();
    this.pub.close();
    this.sub.close();
  }
}

const livePeers = new Set();

/** Joins `socket` (already a member) to the room's media: both connections, publishing. */
async function openMedia(socket, callId, iceServers) {
  const peer = new MediaPeer(socket, callId, iceServers);
  livePeers.add(peer);
  stats.sfu.participants++;
  await peer.publish();
  return peer;
}

async function closeMedia(peer) {
  await peer.close();
  livePeers.delete(peer);
}

/** Checks that every subscriber got audio and video from every publisher it overlapped with. */
function checkRoom(peers) {
  for (const s of peers) {
    for (const p of peers) {
      if (s === p || !s.publishedAt || !p.publishedAt) continue;
      const overlap = Math.min(s.leftAt, p.leftAt) - Math.max(s.publishedAt, p.publishedAt);
      if (overlap < MEDIA_OVERLAP_MS) continue;
      for (const kind of ['audio', 'video']) {
        stats.sfu.pairsChecked++;
        if (!(s.received.get(`${p.user} ${kind}`) > 0)) {
          stats.sfu.pairsWithoutMedia++;
          note(stats.sfu.missing, `${s.user} got no ${kind} from ${p.user} over ${(overlap / 1000).toFixed(1)} s together`);
        }
      }
    }
  }
}

async function roomWorker(slot) {
  for (let k = 0; running(); k++) {
    await room(slot, k);
    await pause(1000);
  }
}

async function room(slot, k) {
  const size = 2 + ((slot + k) % 3);
  const names = Array.from({ length: size }, (_, j) => `m${slot}-${k}-p${j}`);
  const sockets = await Promise.all(names.map((n) => connect(n)));
  const peers = [];
  let newcomer = null;
  try {
    if (sockets.some((s) => !s)) return;
    const [caller, ...callees] = sockets;
    const rings = callees.map((s) => awaitNotice(s, 'call:incoming'));
    const invite = await emitAck(caller, 'call:invite', { type: 'video', participantIds: names.slice(1), mediaMode: 'sfu' });
    if (!invite?.ok) return;
    stats.calls.sioStarted++;
    stats.sfu.rooms++;
    const callId = invite.call.id;
    await Promise.all(rings);
    peers.push(await openMedia(caller, callId, invite.iceServers));
    for (const s of callees) {
      const accept = await emitAck(s, 'call:accept', { callId });
      if (!accept?.ok) continue;
      stats.calls.joined++;
      peers.push(await openMedia(s, callId, accept.iceServers));
    }
    await pause(ROOM_HOLD_MS);
    if (size >= 3 && running()) {
      // The last one leaves; a newcomer is rung into the call and joins.
      const leaver = peers[peers.length - 1];
      leaver.ending = true;
      await emitAck(leaver.socket, 'call:end', { callId });
      await closeMedia(leaver);
      newcomer = await connect(`m${slot}-${k}-late`);
      if (newcomer) {
        const ring = awaitNotice(newcomer, 'call:incoming', (d) => d.callId === callId);
        const more = await emitAck(caller, 'call:invite', { callId, participantIds: [newcomer.user] });
        if (more?.ok && (await ring)) {
          const accept = await emitAck(newcomer, 'call:accept', { callId });
          if (accept?.ok) {
            stats.calls.joined++;
            peers.push(await openMedia(newcomer, callId, accept.iceServers));
          }
        }
      }
      await pause(ROOM_HOLD_MS / 2);
    }
    const stayed = peers.filter((p) => !p.closed && p.socket !== caller).map((p) => p.socket);
    const ends = stayed.map((s) => awaitNotice(s, 'call:ended', (d) => d.callId === callId));
    for (const p of peers) p.ending = true;
    const end = await emitAck(caller, 'call:end', { callId });
    if (end?.ok) stats.calls.ended++;
    await Promise.all(ends);
  } finally {
    for (const p of peers) p.ending = true;
    for (const p of peers) await closeMedia(p);
    checkRoom(peers);
    for (const s of [...sockets, newcomer]) bye(s);
  }
}

// ---- sampling and report -------------------------------------------------------------

const series = []; // { t, rss, phase, ...gauges }

async function sampler() {
  let lastLine = 0;
  while (running()) {
    const t = elapsed();
    const g = await gauges();
    const rss = rssKiB(server.pid);
    series.push({ t, rss, phase: t < WARMUP_S ? 'warm-up' : 'load', ...g });
    if (Date.now() - lastLine >= opts.sample * 1000 - 50) {
      lastLine = Date.now();
      const a = stats.acks;
      console.log(
        `t=${t.toFixed(0).padStart(4)}s rss=${(rss / 1024).toFixed(1).padStart(6)} MiB` +
          ` calls=${String(g.activeCalls ?? '?').padStart(3)} rooms=${g.sfuRooms ?? '?'} turn=${g.turnAllocations ?? '?'}` +
          ` sockets=${String(openSockets.size).padStart(3)} acks=${a.ok}+${a.errors}/${a.sent} lost=${a.lost}` +
          ` rest=${stats.rest.requests} 5xx=${stats.rest.fiveXX} media=${stats.sfu.packets.audio}a+${stats.sfu.packets.video}v pkts` +
          `${t < WARMUP_S ? ' (warm-up)' : ''}`,
      );
    }
    await pause(opts.sample * 1000);
  }
}

async function mediaSampler() {
  while (running() || livePeers.size) {
    for (const p of [...livePeers]) await p.sample();
    await sleep(2000);
  }
}

const median = (xs) => {
  const s = xs.filter(Number.isFinite).sort((a, b) => a - b);
  return s.length ? s[Math.floor(s.length / 2)] : NaN;
};

/** Median RSS of the samples within ±`span` s of `t`. */
function rssAround(t, span) {
  return median(series.filter((s) => Math.abs(s.t - t) <= span).map((s) => s.rss));
}

function slopeKiBPerMin(points) {
  if (points.length < 3) return NaN;
  const n = points.length;
  const mx = points.reduce((s, p) => s + p.t, 0) / n;
  const my = points.reduce((s, p) => s + p.rss, 0) / n;
  const num = points.reduce((s, p) => s + (p.t - mx) * (p.rss - my), 0);
  const den = points.reduce((s, p) => s + (p.t - mx) ** 2, 0);
  return den ? (num / den) * 60 : NaN;
}

async function main() {
  console.log(
    `soak: ${opts.seconds} s against ${opts.bin} (rate x${opts.rate}, ${opts.rooms} SFU room slots, TURN ${opts.turn ? 'on' : 'off'})`,
  );
  if (Object.keys(opts.serverEnv).length) console.log(`soak: server env ${JSON.stringify(opts.serverEnv)}`);
  await startServer();
  t0 = Date.now();
  const loadStart = elapsed();
  loadEnd = Date.now() + opts.seconds * 1000;
  console.log(`soak: server pid=${server.pid} at ${server.url}, log ${logPath}; warm-up ${WARMUP_S} s, RSS check ${opts.rssCheck ? 'on' : `off (run < 300 s: too short to tell a leak from warm-up)`}`);

  const workers = [
    sampler(),
    mediaSampler(),
    steadyWorker(8),
    churnWorker(),
    ...[0, 1].map(restWorker),
    ...[0, 1].map(sioWorker),
    ...Array.from({ length: opts.rooms }, (_, s) => roomWorker(s)),
  ];
  const drainLimit = new Promise((r) => setTimeout(() => r('timeout'), opts.seconds * 1000 + 45_000));
  const drained = await Promise.race([Promise.allSettled(workers).then(() => 'ok'), drainLimit]);
  const loadSeconds = elapsed() - loadStart;
  const failures = [];
  if (drained !== 'ok') failures.push('the workers did not finish within 45 s of the deadline');

  // The drain: every socket closed, everything ended; what is left is a leak.
  const ackGrace = Date.now() + ACK_TIMEOUT_MS + 1000;
  while (acksInFlight > 0 && Date.now() < ackGrace) await sleep(100);
  for (const p of [...livePeers]) await closeMedia(p);
  for (const s of [...openSockets]) bye(s);
  const relayGrace = Date.now() + 3000;
  while (pendingRelays.size && Date.now() < relayGrace) await sleep(100);
  let after = await gauges();
  const settle = Date.now() + 15_000;
  while (Date.now() < settle && (after.activeCalls || after.sfuRooms || after.participants)) {
    await sleep(500);
    after = await gauges();
  }
  await sleep(2000);
  after = await gauges();
  const rssDrained = rssKiB(server.pid);

  // A clean stop.
  shuttingDown = true;
  server.child.kill('SIGTERM');
  const stopBy = Date.now() + 15_000;
  while (!server.exited() && Date.now() < stopBy) await sleep(100);
  const exit = server.exited();
  const log = readFileSync(logPath, 'utf8');
  const logLines = log.split('\n');
  const count = (re) => logLines.filter((l) => re.test(l)).length;
  const panics = logLines.filter((l) => /panicked|panic/.test(l));
  const warnLines = logLines.filter((l) => /\bWARN\b/.test(l));
  const errorLines = logLines.filter((l) => /\bERROR\b/.test(l));

  // ---- the report ----
  const T = opts.seconds;
  const span = Math.max(opts.sample, 5) * 1.5;
  const load = series.filter((s) => s.phase === 'load');
  const rssWarm = rssAround(WARMUP_S, span);
  const rssMid = rssAround(T / 2, span);
  const rssEnd = median(load.slice(-3).map((s) => s.rss));
  const rssPeak = Math.max(...series.map((s) => s.rss).filter(Number.isFinite));
  const growth = ((rssEnd - rssMid) / rssMid) * 100;
  const secondHalf = load.filter((s) => s.t >= T / 2);
  const slope = slopeKiBPerMin(secondHalf);
  const unexpectedAcks = Object.values(stats.acks.unexpected).reduce((a, b) => a + b, 0);
  const relaysLost = pendingRelays.size;
  const mib = (k) => `${(k / 1024).toFixed(1)} MiB`;

  console.log('\n==== RSS series (MiB, one value per sample) ====');
  for (let i = 0; i < series.length; i += 12) {
    const row = series.slice(i, i + 12);
    console.log(`t=${row[0].t.toFixed(0).padStart(4)}s  ${row.map((s) => (s.rss / 1024).toFixed(1)).join(' ')}`);
  }
  const sio = Object.entries(stats.acks.byEvent)
    .map(([e, c]) => `${e} ${c.ok}/${c.sent}${c.errors ? ` (${c.errors} refused)` : ''}${c.lost ? ` (${c.lost} LOST)` : ''}`)
    .join(', ');
  const summary = {
    seconds: T,
    loadSeconds: Number(loadSeconds.toFixed(1)),
    rssKiB: { warmupEnd: rssWarm, mid: rssMid, end: rssEnd, peak: rssPeak, afterDrain: rssDrained },
    rssGrowthSecondHalfPct: Number(growth.toFixed(2)),
    rssSlopeSecondHalfKiBPerMin: Number(slope.toFixed(1)),
    rssChecked: opts.rssCheck,
    acks: { sent: stats.acks.sent, ok: stats.acks.ok, refused: stats.acks.errors, lost: stats.acks.lost, unexpected: stats.acks.unexpected },
    relays: { sent: stats.relays.sent, delivered: stats.relays.delivered, lost: relaysLost },
    notices: stats.notices,
    rest: { requests: stats.rest.requests, byStatus: stats.rest.byStatus, fiveXX: stats.rest.fiveXX, unexpected: stats.rest.unexpected, noAnswer: stats.rest.failed },
    sockets: stats.sockets,
    calls: stats.calls,
    sfu: stats.sfu,
    echoMismatch: stats.echoMismatch,
    afterDrain: after,
    server: { exit, panics: panics.length, warnings: warnLines.length, errors: errorLines.length, log: logPath },
    rates: { restPerSecond: stats.rest.requests / loadSeconds, eventsPerSecond: stats.acks.sent / loadSeconds },
  };

  console.log('\n==== summary ====');
  console.log(`duration            ${T} s of load (${loadSeconds.toFixed(0)} s with the drain), warm-up ${WARMUP_S} s, samples every ${opts.sample} s`);
  console.log(`offered             ${summary.rates.restPerSecond.toFixed(1)} REST req/s, ${summary.rates.eventsPerSecond.toFixed(1)} Socket.IO events/s (acked)`);
  console.log(`RSS                 warm-up end ${mib(rssWarm)}, mid ${mib(rssMid)}, end ${mib(rssEnd)}, peak ${mib(rssPeak)}, after drain ${mib(rssDrained)}`);
  console.log(`RSS growth          ${growth.toFixed(2)} % over the second half (slope ${slope.toFixed(0)} KiB/min)${opts.rssCheck ? ' [target < 5 %]' : ' [not checked: run < 300 s]'}`);
  console.log(`acks                ${stats.acks.sent} sent, ${stats.acks.ok} ok, ${stats.acks.errors} refused (${stats.acks.allowedErrors} allowed), ${stats.acks.lost} LOST`);
  console.log(`  by event          ${sio}`);
  if (unexpectedAcks) console.log(`  unexpected        ${JSON.stringify(stats.acks.unexpected)}`);
  console.log(`relays              ${stats.relays.sent} sent, ${stats.relays.delivered} delivered, ${relaysLost} lost`);
  console.log(`notices             ${stats.notices.awaited} awaited, ${stats.notices.missed} missed`);
  console.log(`REST                ${stats.rest.requests} requests ${JSON.stringify(stats.rest.byStatus)}, 5xx ${stats.rest.fiveXX}, other non-2xx ${stats.rest.unexpected}, no answer ${stats.rest.failed}`);
  console.log(`sockets             ${stats.sockets.connects} connected, ${stats.sockets.clientDisconnects} left by the client, ${stats.sockets.serverDisconnects} dropped otherwise ${JSON.stringify(stats.sockets.reasons)}, ${stats.sockets.connectErrors} connect errors, ${stats.sockets.refusedAsExpected} bad tokens refused`);
  console.log(`calls               ${stats.calls.restStarted} REST + ${stats.calls.sioStarted} Socket.IO started, ${stats.calls.joined} joins, ${stats.calls.ended} ended, ${stats.calls.notEnded} not ended`);
  console.log(`SFU media           ${stats.sfu.rooms} rooms, ${stats.sfu.participants} participants, ${stats.sfu.connected} connections up, ${stats.sfu.failedConnections} failed; subscribers received ${stats.sfu.packets.audio} audio + ${stats.sfu.packets.video} video packets; ${stats.sfu.pairsChecked} publisher->subscriber checks, ${stats.sfu.pairsWithoutMedia} without media`);
  console.log(`after the drain     ${JSON.stringify(after)}`);
  console.log(`server              exit ${JSON.stringify(exit)}, ${panics.length} panic lines, ${warnLines.length} WARN, ${errorLines.length} ERROR lines (log ${logPath})`);
  for (const line of [...errorLines, ...warnLines].slice(0, 8)) console.log(`  | ${line.slice(0, 300)}`);
  for (const [name, list] of [['lost/refused acks', stats.acks.lostSamples], ['REST', stats.rest.samples], ['notices/sockets', stats.notices.samples], ['media', stats.sfu.missing]]) {
    for (const line of list) console.log(`  ${name}: ${line}`);
  }

  // ---- targets ----
  if (stats.acks.lost) failures.push(`${stats.acks.lost} acks lost`);
  if (unexpectedAcks) failures.push(`${unexpectedAcks} unexpected refusals ${JSON.stringify(stats.acks.unexpected)}`);
  if (relaysLost) failures.push(`${relaysLost} relays not delivered`);
  if (stats.notices.missed) failures.push(`${stats.notices.missed} notices missed`);
  if (stats.rest.fiveXX) failures.push(`${stats.rest.fiveXX} HTTP 5xx`);
  if (stats.rest.unexpected || stats.rest.failed) failures.push(`${stats.rest.unexpected} unexpected HTTP statuses, ${stats.rest.failed} requests unanswered`);
  if (stats.sockets.serverDisconnects) failures.push(`${stats.sockets.serverDisconnects} disconnects not asked for by the client`);
  if (stats.sockets.connectErrors) failures.push(`${stats.sockets.connectErrors} connects failed`);
  if (stats.calls.notEnded) failures.push(`${stats.calls.notEnded} calls not ended`);
  if (stats.echoMismatch) failures.push(`${stats.echoMismatch} echoes answered with other data`);
  if (stats.sfu.rooms === 0 || stats.sfu.pairsChecked === 0) failures.push('no SFU room carried media long enough to be checked');
  if (stats.sfu.pairsWithoutMedia) failures.push(`${stats.sfu.pairsWithoutMedia} publisher->subscriber pairs without media`);
  if (stats.sfu.failedConnections) failures.push(`${stats.sfu.failedConnections} media connections failed`);
  if (after.error) failures.push(`metrics unreadable after the drain: ${after.error}`);
  else if (after.activeCalls || after.sfuRooms || after.participants) failures.push(`left after the drain: ${JSON.stringify(after)}`);
  if (panics.length) failures.push(`server panicked: ${panics[0]}`);
  if (!exit || exit.code !== 0) failures.push(`server did not exit cleanly on SIGTERM: ${JSON.stringify(exit)}`);
  if (opts.rssCheck && !(growth < 5)) failures.push(`RSS grew ${growth.toFixed(2)} % over the second half (target < 5 %)`);

  summary.failures = failures;
  if (opts.json) writeFileSync(opts.json, JSON.stringify({ summary, series }, null, 1));
  console.log(`\n==== verdict: ${failures.length ? 'FAIL' : 'PASS'} ====`);
  for (const f of failures) console.log(`  - ${f}`);
  return failures.length ? 1 : 0;
}

let code = 2;
try {
  code = await main();
} catch (e) {
  console.error(`soak: ${e.stack ?? e}`);
  code = 2;
} finally {
  killServer();
  if (!opts.log) rmSync(workDir, { recursive: true, force: true });
}
// Exit at once: letting libwebrtc's threads wind down on their own can crash at exit.
process.exit(code);
