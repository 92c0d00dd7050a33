// LiveKit webhooks in a three-node cluster: the nodes share one LiveKit (the stand-in
// of ../livekit/stand-in.mjs, the very module the single-node LiveKit suite uses), and
// LiveKit delivers each webhook to one node of the cluster, whichever the load
// balancer picks, and again (to any node) when it retries. The notices a webhook
// causes must reach every socket of the call's members, on every node, exactly once;
// a retried delivery must send nothing more.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { deliver, livekitEnv, startRoomService, webhookBody } from '../livekit/stand-in.mjs';
import { SETTLE, assertNoDuplicates, next, of, record, request, sleep, startCluster, uid } from './harness.mjs';

let standIn;
let cluster;
before(async () => {
  standIn = await startRoomService();
  cluster = await startCluster({ ids: ['a', 'b', 'c'], env: livekitEnv(standIn.url) });
});
after(async () => {
  await cluster?.stop();
  await standIn?.stop();
});

/**
 * Alice on node a starts a livekit call to Bob, whose phone is on node b and laptop on
 * node c; Bob accepts on his phone. Every socket records all it receives.
 */
async function acceptedCall() {
  const aliceId = uid('alice');
  const bobId = uid('bob');
  const alice = await cluster.connect('a', aliceId);
  const phone = await cluster.connect('b', bobId);
  const laptop = await cluster.connect('c', bobId);
  const seen = { alice: record(alice), phone: record(phone), laptop: record(laptop) };
  const rings = [next(phone, 'call:incoming'), next(laptop, 'call:incoming')];
  const res = await cluster.rest('a', 'POST', '/api/v1/calls/start', aliceId, {
    type: 'video',
    participantIds: [bobId],
    mediaMode: 'livekit',
  });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  const { call } = res.body.data;
  assert.equal(call.mediaMode, 'livekit');
  assert.equal(standIn.of('CreateRoom', call.roomId).length, 1, 'one CreateRoom for the call room');
  await Promise.all(rings);
  const accepted = [next(alice, 'call:accepted'), next(laptop, 'call:accepted')];
  const ack = await request(phone, 'call:accept', { callId: call.id });
  assert.equal(ack.ok, true, JSON.stringify(ack));
  await Promise.all(accepted);
  await sleep(SETTLE);
  return { aliceId, bobId, alice, phone, laptop, seen, call };
}

/** What each socket of `seen` received since `marks` (the lengths of its records then). */
const since = (seen, marks) => Object.fromEntries(Object.entries(seen).map(([name, got]) => [name, got.slice(marks[name])]));
const marks = (seen) => Object.fromEntries(Object.entries(seen).map(([name, got]) => [name, got.length]));

// What a 1-on-1 call's webhook ends it with (as in the single-node suite, where
// participant_left lets one member go and room_finished hangs up everyone, the
// initiator first): the one who left, or Alice, ends it for everyone.
const CASES = [
  { event: 'participant_left', participant: (bobId) => ({ identity: bobId, name: 'Bob from LiveKit' }), endedBy: 'bob' },
  { event: 'room_finished', participant: () => undefined, endedBy: 'alice' },
];

describe('LiveKit webhooks across nodes', () => {
  for (const { event, participant, endedBy } of CASES) {
    test(`${event} delivered to node b ends the call once for every socket on a, b and c; its retry to node c sends nothing`, async () => {
      const { aliceId, bobId, alice, phone, laptop, seen, call } = await acceptedCall();
      const sockets = { alice, phone, laptop };
      const expected = { callId: call.id, userId: endedBy === 'bob' ? bobId : aliceId, reason: 'normal' };

      const first = marks(seen);
      const ended = Object.values(sockets).map((s) => next(s, 'call:ended', (d) => d.callId === call.id, 8000));
      const body = webhookBody(event, call.roomId, participant(bobId));
      await deliver(cluster.node('b').url, body);
      for (const got of await Promise.all(ended)) assert.deepEqual(got, expected);
      await sleep(SETTLE);
      for (const [name, got] of Object.entries(since(seen, first))) {
        assert.deepEqual(got, [{ event: 'call:ended', data: expected }], `${name}: call:ended once, and nothing else`);
      }
      const { body: state } = await cluster.rest('c', 'GET', `/api/v1/calls/${call.id}`, bobId);
      assert.equal(state.data.call.state, 'ended', 'node c sees the call ended');
      assert.ok(standIn.of('DeleteRoom', call.roomId).length <= 1, 'LiveKit is asked to delete the room once at most');

      // LiveKit retries the same delivery; the load balancer sends it to node c.
      const retry = marks(seen);
      await deliver(cluster.node('c').url, body);
      await sleep(SETTLE);
      for (const [name, got] of Object.entries(since(seen, retry))) {
        assert.deepEqual(got, [], `${name}: the retried ${event} sent nothing more`);
      }
      for (const [name, got] of Object.entries(seen)) {
        assert.equal(of(got, 'call:ended', (d) => d.callId === call.id).length, 1, `${name}: call:ended once in all`);
      }
      assert.ok(standIn.of('DeleteRoom', call.roomId).length <= 1, 'the retry deletes no room again');
      if (event === 'participant_left') assert.equal(standIn.of('DeleteRoom', call.roomId).length, 1, 'the ended call deleted its room');
      assertNoDuplicates(seen);
    });
  }
});
