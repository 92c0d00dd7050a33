// Signaling benchmark for cluster mode: Huddle nodes (HUDDLE_BIN, a release build)
// sharing one PostgreSQL database and one Redis, as tests/cluster/harness.mjs starts
// them (its own redis-server on a free port, a fresh database dropped at the end, each
// node on free ports), driven by the official socket.io client over WebSocket. Each
// round starts a cluster of one node, then one of three, and measures on each:
//   latency - a member toggles audio (`call:toggle_audio`), one toggle at a time; the
//             `call:participant_updated` notice is timed from the emit to its arrival
//             at a fellow member on the toggler's node and at one on another node;
//   load    - CALLS calls of MEMBERS members toggling in turn at TOGGLE_RATE toggles/s
//             in all; every toggle is a notice to every member. With three nodes the
//             members of a call are on different nodes, so most notices cross nodes.
//             CPU (user + system, /proc/PID/stat) of every huddle node and of
//             redis-server, per 1000 notices delivered; latency under load as above.
// The one-node cluster runs in cluster mode too (REDIS_URL set): it is the same
// deployment with one node, not the single process without Redis.
// Settings: ROUNDS, PHASE_SECONDS, CALLS, MEMBERS, TOGGLE_RATE, SAMPLES (latency).

import { startCluster } from '../../tests/cluster/harness.mjs';
import { commit, cpuSeconds, env, limitsOff, now, overRounds, paced, percentile, sleep } from './common.mjs';

const ROUNDS = env('ROUNDS', 3);
const SECONDS = env('PHASE_SECONDS', 10);
const CALLS = env('CALLS', 20);
const MEMBERS = env('MEMBERS', 3);
const TOGGLE_RATE = env('TOGGLE_RATE', 200);
const SAMPLES = env('SAMPLES', 400);
const WARMUP_SECONDS = 2;
if (!process.env.HUDDLE_BIN) throw new Error('set HUDDLE_BIN to a release build of huddle (cluster.sh does)');
if (MEMBERS < 2) throw new Error('MEMBERS must be at least 2');

const UPDATED = 'call:participant_updated';

/** A call of `users`, started and joined over REST, each member on its node. */
async function call(cluster, members) {
  const [first, ...others] = members;
  const started = await cluster.rest(first.node, 'POST', '/api/v1/calls/start', first.user, {
    type: 'video',
    participantIds: others.map((m) => m.user),
  });
  if (!started.body.success) throw new Error(`start: ${JSON.stringify(started.body)}`);
  const callId = started.body.data.call.id;
  for (const m of others) {
    const joined = await cluster.rest(m.node, 'POST', `/api/v1/calls/${callId}/join`, m.user, {});
    if (!joined.body.success) throw new Error(`join: ${JSON.stringify(joined.body)}`);
  }
  for (const m of members) {
    m.socket = await cluster.connect(m.node, m.user);
    m.audio = true;
  }
  return { callId, members };
}

/** Emits the toggle that flips `member`'s audio; returns the `audioEnabled` it asks for. */
function toggle(callId, member) {
  member.audio = !member.audio;
  member.socket.emit('call:toggle_audio', { callId, enabled: member.audio });
  return member.audio;
}

/**
 * One toggle at a time by a member on `ids[0]`; times the notice's arrival at a
 * member on the same node and at one on `ids[1]` (the same node too when there is one).
 */
async function idleLatency(cluster, ids) {
  const [home, away] = [ids[0], ids[1] ?? ids[0]];
  const { callId, members } = await call(cluster, [
    { user: 'lat-toggler', node: home },
    { user: 'lat-same', node: home },
    { user: 'lat-other', node: away },
  ]);
  const [toggler, ...receivers] = members;
  const times = { same: [], other: [] };
  let lost = 0;
  await sleep(300); // the joins' own notices are past
  for (let i = 0; i < SAMPLES; i++) {
    const arrivals = receivers.map(
      (r, k) =>
        new Promise((resolve) => {
          const timer = setTimeout(() => {
            r.socket.off(UPDATED, on);
            lost++;
            resolve();
          }, 5000);
          const on = (n) => {
            if (n.userId !== toggler.user || n.participant?.audioEnabled !== expected) return;
            clearTimeout(timer);
            r.socket.off(UPDATED, on);
            (k === 0 ? times.same : times.other).push(now() - start);
            resolve();
          };
          r.socket.on(UPDATED, on);
        }),
    );
    const start = now();
    const expected = toggle(callId, toggler);
    await Promise.all(arrivals);
    await sleep(5);
  }
  for (const m of members) m.socket.disconnect();
  const stats = (list) => {
    list.sort((a, b) => a - b);
    return { p50: percentile(list, 50), p99: percentile(list, 99) };
  };
  return { same: stats(times.same), other: stats(times.other), lost };
}

/** CPU seconds of the cluster's processes: `{ huddle, redis }`. */
function clusterCpu(cluster) {
  return {
    huddle: cluster.live().reduce((sum, node) => sum + cpuSeconds(node.child.pid), 0),
    redis: cpuSeconds(cluster.redis.child.pid),
  };
}

/** Steady toggling in CALLS calls; CPU per 1000 notices delivered, latency under load. */
async function load(cluster, ids) {
  const calls = [];
  for (let c = 0; c < CALLS; c++) {
    // Member m of call c on node (c + m) mod nodes: with three nodes and three
    // members, each member of a call on a node of its own.
    const members = Array.from({ length: MEMBERS }, (_, m) => ({ user: `c${c}-m${m}`, node: ids[(c + m) % ids.length] }));
    calls.push(await call(cluster, members));
  }
  await sleep(500);
  // `${callId} ${userId} ${audioEnabled}` -> emit time; a member's next toggle with
  // the same value comes 2 * CALLS * MEMBERS / TOGGLE_RATE seconds later.
  const emitted = new Map();
  let record = null;
  for (const { callId, members } of calls) {
    const nodeOf = new Map(members.map((m) => [m.user, m.node]));
    for (const m of members) {
      m.socket.on(UPDATED, (n) => {
        const t = emitted.get(`${callId} ${n.userId} ${n.participant?.audioEnabled}`);
        if (record && t !== undefined) record(now() - t, nodeOf.get(n.userId) === m.node);
      });
    }
  }
  const phase = (seconds) =>
    paced(TOGGLE_RATE, seconds, (i) => {
      const { callId, members } = calls[i % CALLS];
      const member = members[Math.floor(i / CALLS) % MEMBERS];
      const t = now();
      emitted.set(`${callId} ${member.user} ${toggle(callId, member)}`, t);
    });

  record = () => {};
  await phase(WARMUP_SECONDS);
  await sleep(500);
  const latencies = { same: [], other: [] };
  let delivered = 0;
  record = (ms, sameNode) => {
    delivered++;
    (sameNode ? latencies.same : latencies.other).push(ms);
  };
  const before = clusterCpu(cluster);
  const sent = await phase(SECONDS);
  await sleep(1000); // the last notices arrive
  const after = clusterCpu(cluster);
  record = null;
  for (const { members } of calls) for (const m of members) m.socket.disconnect();
  const stats = (list) => {
    list.sort((a, b) => a - b);
    return { p50: percentile(list, 50), p99: percentile(list, 99), count: list.length };
  };
  const perThousand = (cpu) => (cpu * 1000) / delivered;
  return {
    sent,
    expected: sent * MEMBERS,
    delivered,
    crossed: latencies.other.length / delivered,
    cpuHuddle: perThousand(after.huddle - before.huddle),
    cpuRedis: perThousand(after.redis - before.redis),
    cpuTotal: perThousand(after.huddle - before.huddle + after.redis - before.redis),
    same: stats(latencies.same),
    other: stats(latencies.other),
  };
}

async function measure(ids) {
  const cluster = await startCluster({ ids, env: limitsOff(CALLS * MEMBERS + 10) });
  try {
    const latency = await idleLatency(cluster, ids);
    const loaded = await load(cluster, ids);
    return { latency, load: loaded };
  } catch (e) {
    console.error(cluster.logs());
    throw e;
  } finally {
    await cluster.stop();
  }
}

function report(rounds) {
  const fmt = (v, digits) => (Number.isFinite(v) ? v.toFixed(digits) : '-');
  const cell = (values, digits) => {
    const { median, min, max } = overRounds(values);
    return `${fmt(median, digits)} (${fmt(min, digits)}–${fmt(max, digits)})`.padStart(26);
  };
  // `crossing`: a figure of sockets on different nodes, which one node does not have.
  const row = (label, pick, digits = 3, crossing = false) => {
    const one = crossing ? '-'.padStart(26) : cell(rounds.map((r) => pick(r.one)), digits);
    const three = cell(rounds.map((r) => pick(r.three)), digits);
    const ratio = crossing ? '' : cell(rounds.map((r) => pick(r.three) / pick(r.one)), 2);
    console.log(`${label.padEnd(44)}${one}${three}${ratio}`);
  };
  console.log(
    `\nsignaling, cluster mode: commit ${commit()}, ${rounds.length} round(s); median (min–max over rounds)\n` +
      `latency: ${SAMPLES} toggles one at a time; load: ${CALLS} calls x ${MEMBERS} members, ` +
      `${TOGGLE_RATE} toggles/s (${TOGGLE_RATE * MEMBERS} notices/s) for ${SECONDS} s; ` +
      'CPU = user + system of every huddle node and redis-server',
  );
  console.log(`${''.padEnd(44)}${'1 node'.padStart(26)}${'3 nodes'.padStart(26)}${'3 nodes / 1 node'.padStart(26)}`);
  row('idle: notice latency same node p50 ms', (x) => x.latency.same.p50);
  row('idle: notice latency same node p99 ms', (x) => x.latency.same.p99);
  row('idle: notice latency other node p50 ms', (x) => x.latency.other.p50, 3, true);
  row('idle: notice latency other node p99 ms', (x) => x.latency.other.p99, 3, true);
  row('load: CPU s per 1000 notices (all)', (x) => x.load.cpuTotal);
  row('load: CPU s per 1000 notices, huddle', (x) => x.load.cpuHuddle);
  row('load: CPU s per 1000 notices, redis', (x) => x.load.cpuRedis);
  row('load: notice latency same node p50 ms', (x) => x.load.same.p50);
  row('load: notice latency same node p99 ms', (x) => x.load.same.p99);
  row('load: notice latency other node p50 ms', (x) => x.load.other.p50, 3, true);
  row('load: notice latency other node p99 ms', (x) => x.load.other.p99, 3, true);
  row('load: notices crossing nodes', (x) => x.load.crossed, 2, true);
  for (const [i, r] of rounds.entries()) {
    const lost = (x) => `${x.load.expected - x.load.delivered}/${x.load.expected} (idle ${x.latency.lost})`;
    console.log(`round ${i + 1}: notices lost under load: 1 node ${lost(r.one)}, 3 nodes ${lost(r.three)}`);
  }
}

async function main() {
  const rounds = [];
  for (let r = 0; r < ROUNDS; r++) {
    const one = await measure(['a']);
    const three = await measure(['a', 'b', 'c']);
    rounds.push({ one, three });
    const l = (x) => `${x.load.cpuTotal.toFixed(3)} CPU s/1000, lost ${x.load.expected - x.load.delivered}`;
    console.error(`round ${r + 1}/${ROUNDS}: 1 node ${l(one)}; 3 nodes ${l(three)}`);
  }
  report(rounds);
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
