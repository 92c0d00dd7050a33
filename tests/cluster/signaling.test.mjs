// Signaling across a three-node cluster, driven by the official socket.io client: a
// caller on node a, the callee's two devices on nodes b and c. Every notice must reach
// every socket of its users exactly once, whichever node the change was made on, and
// a call changed on one node must be seen by the checks made on another.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { SETTLE, assertNoDuplicates, next, of, record, request, sleep, startCluster, uid } from './harness.mjs';

const CONNECTION_TIMEOUT = 1;

let cluster;
before(async () => {
  // Each node runs a sweeper task; ringing times out after 5 s (the shortest allowed),
  // and a user with no socket anywhere leaves their calls after 1 s.
  cluster = await startCluster({ ids: ['a', 'b', 'c'], env: { RINGING_TIMEOUT: '5', CONNECTION_TIMEOUT: String(CONNECTION_TIMEOUT) } });
});
after(async () => {
  await cluster?.stop();
});

/** Alice on a; Bob's phone on b and his laptop on c, each recording what it receives. */
async function people() {
  const aliceId = uid('alice');
  const bobId = uid('bob');
  const alice = await cluster.connect('a', aliceId);
  const phone = await cluster.connect('b', bobId);
  const laptop = await cluster.connect('c', bobId);
  return { aliceId, bobId, alice, phone, laptop, seen: { alice: record(alice), phone: record(phone), laptop: record(laptop) } };
}

/** Alice calls Bob; both his devices ring. */
async function ring({ alice, phone, laptop, bobId }, type = 'video') {
  const rings = [next(phone, 'call:incoming'), next(laptop, 'call:incoming')];
  const ack = await request(alice, 'call:invite', { type, participantIds: [bobId] });
  assert.equal(ack.ok, true, JSON.stringify(ack));
  await Promise.all(rings);
  return ack.call.id;
}

describe('timeouts across nodes', () => {
  test('an unanswered call times out once, cluster-wide: every socket hears call:ended once', async () => {
    const p = await people();
    const { alice, phone, laptop, seen } = p;
    const callId = await ring(p);
    const ended = (socket) => next(socket, 'call:ended', (d) => d.callId === callId, 12_000);
    const endings = await Promise.all([ended(alice), ended(phone), ended(laptop)]);
    for (const e of endings) assert.equal(e.reason, 'missed', JSON.stringify(e));
    await sleep(SETTLE);
    for (const [name, got] of Object.entries(seen)) {
      assert.equal(of(got, 'call:ended', (d) => d.callId === callId).length, 1, `${name}: call:ended once`);
    }
    assertNoDuplicates(seen);
  });
});

describe('presence across nodes', () => {
  test('a user with a socket on another node stays in the call; with none anywhere, they leave', async () => {
    const p = await people();
    const { alice, phone, laptop, seen } = p;
    const callId = await ring(p);
    assert.equal((await request(phone, 'call:accept', { callId })).ok, true);
    phone.disconnect();
    await sleep(CONNECTION_TIMEOUT * 1000 + 3000);
    assert.deepEqual(of(seen.alice, 'call:participant_left'), [], 'Bob is still connected on c');
    assert.deepEqual(of(seen.alice, 'call:ended'), []);
    const ended = next(alice, 'call:ended', (d) => d.callId === callId, 8000);
    laptop.disconnect();
    assert.equal((await ended).reason, 'normal');
  });

  test("a user's away deadline survives the loss of the node their socket was on", async () => {
    const aliceId = uid('alice');
    const bobId = uid('bob');
    const alice = await cluster.connect('a', aliceId);
    const bob = await cluster.connect('c', bobId);
    const ringing = next(bob, 'call:incoming');
    const ack = await request(alice, 'call:invite', { type: 'audio', participantIds: [bobId] });
    assert.equal(ack.ok, true, JSON.stringify(ack));
    await ringing;
    const callId = ack.call.id;
    assert.equal((await request(bob, 'call:accept', { callId })).ok, true);
    // kill -9: node c never says Bob went away; another node reaps it and does.
    const killed = Date.now();
    const ended = next(alice, 'call:ended', (d) => d.callId === callId, 15_000);
    await cluster.node('c').kill('SIGKILL');
    const end = await ended;
    console.log(`node c killed: Bob left (call ended) after ${Date.now() - killed} ms`);
    assert.equal(end.reason, 'normal');
    await cluster.node('c').start();
  });
});

describe('a call across nodes', () => {
  test('the invite rings both devices once; answering on one tells the other and the caller, once each', async () => {
    const p = await people();
    const { alice, phone, laptop, aliceId, bobId, seen } = p;
    const callId = await ring(p);
    const accepted = [next(alice, 'call:accepted'), next(laptop, 'call:accepted')];
    const joined = next(alice, 'call:participant_joined');
    const state = next(alice, 'call:state_changed');
    const ack = await request(phone, 'call:accept', { callId });
    assert.equal(ack.ok, true, JSON.stringify(ack));
    assert.equal(ack.call.state, 'connected');
    for (const got of await Promise.all(accepted)) assert.deepEqual(got, { callId, userId: bobId });
    assert.equal((await joined).participant.connectionState, 'connected');
    assert.deepEqual(await state, { callId, state: 'connected' });
    await sleep(SETTLE);

    for (const device of [seen.phone, seen.laptop]) {
      const incoming = of(device, 'call:incoming');
      assert.equal(incoming.length, 1, JSON.stringify(incoming));
      assert.equal(incoming[0].data.callId, callId);
      assert.equal(incoming[0].data.invitation.from.userId, aliceId);
    }
    assert.equal(of(seen.alice, 'call:incoming').length, 0, 'the caller is not rung');
    assert.equal(of(seen.alice, 'call:accepted').length, 1);
    assert.equal(of(seen.laptop, 'call:accepted').length, 1);
    assert.equal(of(seen.alice, 'call:participant_joined').length, 1);
    assert.equal(of(seen.alice, 'call:state_changed').length, 1);
    assertNoDuplicates(seen);
  });

  test('declined on one device: the caller and the other device hear it once, and a 1-on-1 call ends declined', async () => {
    const p = await people();
    const { alice, phone, laptop, bobId, seen } = p;
    const callId = await ring(p);
    const declined = next(alice, 'call:declined');
    const ended = [next(alice, 'call:ended'), next(phone, 'call:ended')];
    assert.equal((await request(laptop, 'call:decline', { callId })).ok, true);
    assert.deepEqual(await declined, { callId, userId: bobId });
    for (const got of await Promise.all(ended)) assert.deepEqual(got, { callId, userId: bobId, reason: 'declined' });
    await sleep(SETTLE);
    assert.equal(of(seen.alice, 'call:declined').length, 1);
    assert.equal(of(seen.alice, 'call:ended').length, 1);
    assert.equal(of(seen.phone, 'call:ended').length, 1);
    const { body } = await cluster.rest('c', 'GET', `/api/v1/calls/${callId}`, bobId);
    assert.equal(body.data.call.state, 'ended');
    assert.equal(body.data.call.endReason, 'declined');
    assertNoDuplicates(seen);
  });

  test('toggles made on b and c reach the caller on a; ending on a reaches both devices', async () => {
    const p = await people();
    const { alice, phone, laptop, aliceId, bobId, seen } = p;
    const callId = await ring(p);
    assert.equal((await request(phone, 'call:accept', { callId })).ok, true);
    for (const [device, event, field, enabled] of [
      [phone, 'call:toggle_audio', 'audioEnabled', false],
      [laptop, 'call:toggle_video', 'videoEnabled', false],
      [phone, 'call:toggle_screen_share', 'screenShareEnabled', true],
      [laptop, 'call:toggle_audio', 'audioEnabled', true],
    ]) {
      const update = next(alice, 'call:participant_updated', (d) => d.userId === bobId && d.participant[field] === enabled);
      const otherDevice = next(device === phone ? laptop : phone, 'call:participant_updated', (d) => d.userId === bobId && d.participant[field] === enabled);
      const ack = await request(device, event, { callId, enabled });
      assert.equal(ack.ok, true, `${event} on ${device.nodeId}: ${JSON.stringify(ack)}`);
      await Promise.all([update, otherDevice]);
    }
    const ended = [next(phone, 'call:ended'), next(laptop, 'call:ended')];
    assert.equal((await request(alice, 'call:end', { callId, reason: 'normal' })).outcome, 'ended');
    for (const got of await Promise.all(ended)) assert.deepEqual(got, { callId, userId: aliceId, reason: 'normal' });
    await sleep(SETTLE);
    assert.equal(of(seen.alice, 'call:participant_updated').length, 4, JSON.stringify(of(seen.alice, 'call:participant_updated')));
    for (const device of [seen.phone, seen.laptop]) assert.equal(of(device, 'call:ended').length, 1);
    const late = await request(laptop, 'call:accept', { callId });
    assert.equal(late.error?.code, 'CALL_ENDED', JSON.stringify(late));
    assertNoDuplicates(seen);
  });
});

describe('webrtc relays across nodes', () => {
  test("an offer from a reaches the callee's sockets on b and c once each, and the answer comes back", async () => {
    const p = await people();
    const { alice, phone, laptop, aliceId, bobId, seen } = p;
    const callId = await ring(p);
    assert.equal((await request(laptop, 'call:accept', { callId })).ok, true);
    const offer = { type: 'offer', sdp: 'v=0\r\n' };
    const delivered = [next(phone, 'webrtc:offer'), next(laptop, 'webrtc:offer')];
    const ack = await request(alice, 'webrtc:offer', { callId, targetUserId: bobId, offer });
    assert.equal(ack.ok, true, JSON.stringify(ack));
    for (const got of await Promise.all(delivered)) {
      assert.equal(got.callId, callId);
      assert.equal(got.fromUserId, aliceId);
      assert.deepEqual(got.offer, offer);
    }
    const answer = { type: 'answer', sdp: 'v=0\r\n' };
    const back = next(alice, 'webrtc:answer');
    assert.equal((await request(laptop, 'webrtc:answer', { callId, targetUserId: aliceId, answer })).ok, true);
    assert.deepEqual((await back).answer, answer);
    await sleep(SETTLE);
    assert.equal(of(seen.phone, 'webrtc:offer').length, 1);
    assert.equal(of(seen.laptop, 'webrtc:offer').length, 1);
    assert.equal(of(seen.alice, 'webrtc:offer').length, 0, 'a relay does not come back to its sender');
    assert.equal(of(seen.alice, 'webrtc:answer').length, 1);
    assertNoDuplicates(seen);
  });

  test('a member who left through node b can no longer be relayed to from node a, nor relay', async () => {
    const [aliceId, bobId, carolId] = [uid('alice'), uid('bob'), uid('carol')];
    const alice = await cluster.connect('a', aliceId);
    const bob = await cluster.connect('b', bobId);
    const carol = await cluster.connect('c', carolId);
    const rings = [next(bob, 'call:incoming'), next(carol, 'call:incoming')];
    const ack = await request(alice, 'call:invite', { type: 'video', participantIds: [bobId, carolId] });
    assert.equal(ack.ok, true, JSON.stringify(ack));
    const callId = ack.call.id;
    await Promise.all(rings);
    for (const socket of [bob, carol]) assert.equal((await request(socket, 'call:accept', { callId })).ok, true);
    const offer = { type: 'offer', sdp: 'v=0\r\n' };
    // Node a has now checked (and may cache) Bob's membership.
    const first = next(bob, 'webrtc:offer');
    assert.equal((await request(alice, 'webrtc:offer', { callId, targetUserId: bobId, offer })).ok, true);
    await first;

    const left = next(alice, 'call:participant_left', (d) => d.userId === bobId);
    assert.equal((await request(bob, 'call:end', { callId })).ok, true, 'Bob leaves on node b');
    assert.deepEqual(await left, { callId, userId: bobId });
    const refused = await request(alice, 'webrtc:offer', { callId, targetUserId: bobId, offer });
    assert.equal(refused.error?.code, 'TARGET_NOT_IN_CALL', `node a still relays to Bob: ${JSON.stringify(refused)}`);
    const fromBob = await request(bob, 'webrtc:offer', { callId, targetUserId: aliceId, offer });
    assert.equal(fromBob.error?.code, 'NOT_IN_CALL', JSON.stringify(fromBob));
    // The call goes on between a and c.
    const toCarol = next(carol, 'webrtc:offer');
    assert.equal((await request(alice, 'webrtc:offer', { callId, targetUserId: carolId, offer })).ok, true);
    assert.equal((await toCarol).fromUserId, aliceId);

    // Ended by Alice's other device on node c, the call refuses relays on node a too.
    const alicesTablet = await cluster.connect('c', aliceId);
    const ended = next(alice, 'call:ended');
    assert.equal((await request(alicesTablet, 'call:end', { callId, reason: 'normal' })).outcome, 'ended');
    assert.deepEqual(await ended, { callId, userId: aliceId, reason: 'normal' });
    const after = await request(alice, 'webrtc:ice_candidate', { callId, targetUserId: carolId, candidate: { candidate: '' } });
    assert.equal(after.error?.code, 'CALL_ENDED', JSON.stringify(after));
  });
});
