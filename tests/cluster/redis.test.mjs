// Redis going away under a running cluster: a call in progress across two nodes, then
// redis-server killed (kill -9) and started again on the same port, empty. The nodes
// reconnect by themselves; the call goes on (notices flow between its nodes again, it
// is not ended) and a new call rings across nodes.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { next, request, sleep, startCluster, uid } from './harness.mjs';

let cluster;
before(async () => {
  cluster = await startCluster({ ids: ['a', 'b', 'c'] });
});
after(async () => {
  await cluster?.stop();
});

/** Polls `probe` (async) until it returns something truthy, or fails after `ms`. */
async function eventually(what, probe, ms) {
  const deadline = Date.now() + ms;
  for (;;) {
    const got = await probe();
    if (got) return got;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}\n${cluster.logs()}`);
    await sleep(250);
  }
}

/** The ids of the nodes whose heartbeat key is in Redis. */
const heartbeats = () =>
  cluster.redis
    .cli('--raw', 'keys', 'huddle:node:*')
    .split('\n')
    .filter(Boolean)
    .map((k) => k.slice('huddle:node:'.length))
    .filter((id) => !id.includes(':')) // huddle:node:<id>:users and :rooms are not heartbeats
    .sort();

describe('Redis restarting', () => {
  test('a call in progress goes on, and new calls ring across nodes afterwards', { timeout: 90_000 }, async () => {
    const [aliceId, bobId] = [uid('alice'), uid('bob')];
    const alice = await cluster.connect('a', aliceId);
    const bob = await cluster.connect('b', bobId);
    const endings = [];
    for (const socket of [alice, bob]) socket.on('call:ended', (data) => endings.push({ on: socket.nodeId, data }));
    const ring = next(bob, 'call:incoming');
    const invited = await request(alice, 'call:invite', { type: 'video', participantIds: [bobId] });
    assert.equal(invited.ok, true, JSON.stringify(invited));
    const callId = invited.call.id;
    await ring;
    assert.equal((await request(bob, 'call:accept', { callId })).ok, true);
    await eventually('heartbeats of a, b and c', () => heartbeats().join() === 'a,b,c', 5000);

    /** Bob toggles his microphone on b; resolves to whether Alice on a heard of it within a second. */
    let audio = true;
    const toggleReachesAlice = async () => {
      audio = !audio;
      const update = next(alice, 'call:participant_updated', (d) => d.userId === bobId && d.participant.audioEnabled === audio, 1000).then(() => true, () => false);
      const ack = await request(bob, 'call:toggle_audio', { callId, enabled: audio }).catch(() => ({ ok: false }));
      return (await update) && ack.ok;
    };
    assert.ok(await toggleReachesAlice(), 'before the restart, a toggle on b reaches a');

    const killedAt = Date.now();
    await cluster.redis.kill('SIGKILL');
    await sleep(1000);
    await cluster.redis.run();
    const restartedAt = Date.now();

    await eventually('a toggle on b to reach a again', toggleReachesAlice, 20_000);
    const flowing = Date.now();
    await eventually('heartbeats of a, b and c again', () => heartbeats().join() === 'a,b,c', 10_000);
    console.log(`Redis down for ${restartedAt - killedAt} ms; notices across nodes again ${flowing - restartedAt} ms after it came back`);

    const { body } = await cluster.rest('c', 'GET', `/api/v1/calls/${callId}`, aliceId);
    assert.equal(body.data.call.state, 'connected', JSON.stringify(body.data.call));
    for (const user of [aliceId, bobId]) {
      assert.equal(body.data.participants.find((p) => p.userId === user)?.connectionState, 'connected', `${user} is still in the call`);
    }
    assert.deepEqual(endings, [], 'nobody was told the call ended');

    // A new call, from node c to someone on node a and b (two devices), rings once each.
    const [carolId, daveId] = [uid('carol'), uid('dave')];
    const carol = await cluster.connect('c', carolId);
    const daveOnA = await cluster.connect('a', daveId);
    const daveOnB = await cluster.connect('b', daveId);
    const rings = [];
    for (const socket of [daveOnA, daveOnB]) socket.on('call:incoming', (data) => rings.push({ on: socket.nodeId, callId: data.callId }));
    const incoming = [next(daveOnA, 'call:incoming'), next(daveOnB, 'call:incoming')];
    const second = await request(carol, 'call:invite', { type: 'audio', participantIds: [daveId] });
    assert.equal(second.ok, true, JSON.stringify(second));
    await Promise.all(incoming);
    const accepted = next(carol, 'call:accepted');
    assert.equal((await request(daveOnB, 'call:accept', { callId: second.call.id })).ok, true);
    assert.deepEqual(await accepted, { callId: second.call.id, userId: daveId });
    await sleep(1500);
    assert.deepEqual(rings.map((r) => r.on).sort(), ['a', 'b'], `each of Dave's devices rang once: ${JSON.stringify(rings)}`);
    assert.ok(rings.every((r) => r.callId === second.call.id));
  });
});
