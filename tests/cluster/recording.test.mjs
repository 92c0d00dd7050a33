// Recording in a three-node cluster: orders given through nodes that do not run a
// call's room are carried out by the node that does (the room is placed by load if
// the call has none yet), and what becomes of the recording reaches members on any
// node. Nobody publishes media here, so each recording ends `failed` ("no media was
// recorded") once stopped: a stop carried out anywhere but on the room's node would
// find nothing recording, and the recording would never leave `processing`.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';

import { next, sleep, startCluster, uid } from './harness.mjs';

const IDS = ['a', 'b', 'c'];

let cluster;
let recordings;
before(async () => {
  // One folder for every node, as the shared storage RECORDINGS_DIR must be in a cluster.
  recordings = mkdtempSync(join(tmpdir(), 'huddle-cluster-recordings-'));
  cluster = await startCluster({ ids: IDS, env: { RECORDINGS_DIR: recordings } });
});
after(async () => {
  await cluster?.stop();
  if (recordings) rmSync(recordings, { recursive: true, force: true });
});

/** Waits (up to 15 s) for recording `id` of `callId`, read through node `via`, to be `status`; returns it. */
async function settles(via, user, callId, id, status) {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const res = await cluster.rest(via, 'GET', `/api/v1/calls/${callId}/recording`, user);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const recording = res.body.data.recordings.find((r) => r.id === id);
    assert.ok(recording, `recording ${id} is listed through node ${via}: ${JSON.stringify(res.body.data)}`);
    if (recording.status === status) return recording;
    if (Date.now() > deadline) {
      throw new Error(`recording ${id} is ${recording.status}, not ${status}: ${JSON.stringify(recording)}\n${cluster.logs()}`);
    }
    await sleep(200);
  }
}

test("recording orders given through other nodes reach the node that runs the call's room", { timeout: 60_000 }, async () => {
  const alice = uid('alice');
  const bob = uid('bob');
  const start = await cluster.rest('a', 'POST', '/api/v1/calls/start', alice, { type: 'video', participantIds: [bob], mediaMode: 'sfu' });
  assert.equal(start.status, 200, JSON.stringify(start.body));
  const callId = start.body.data.call.id;
  const join = await cluster.rest('c', 'POST', `/api/v1/calls/${callId}/join`, bob, {});
  assert.equal(join.status, 200, JSON.stringify(join.body));
  assert.equal(cluster.owner(callId), null, 'nobody published: the call has no room yet');
  // Bob's socket is on node c: he hears of the recording there.
  const bobSocket = await cluster.connect('c', bob);

  // Started through b: the room is placed by load, on whichever node that is.
  const started = next(bobSocket, 'call:recording_started', (e) => e.callId === callId);
  started.catch(() => {}); // awaited below; a failure before then is the one to report
  const first = await cluster.rest('b', 'POST', `/api/v1/calls/${callId}/recording/start`, alice, {});
  assert.equal(first.status, 201, JSON.stringify(first.body));
  const owner = await cluster.ownerOf(callId);
  assert.equal((await started).recording.id, first.body.data.recording.id);
  const others = IDS.filter((id) => id !== owner);

  // Stopped through a node that does not run the room: the owner's SFU stops it.
  const stopped = next(bobSocket, 'call:recording_stopped', (e) => e.callId === callId);
  stopped.catch(() => {});
  const stop = await cluster.rest(others[0], 'POST', `/api/v1/calls/${callId}/recording/stop`, alice);
  assert.equal(stop.status, 200, JSON.stringify(stop.body));
  assert.equal(stop.body.data.recording.status, 'processing');
  assert.equal((await stopped).reason, 'asked');
  const failed = await settles(others[1], alice, callId, first.body.data.recording.id, 'failed');
  assert.equal(failed.url, null);

  // A second recording, through the other node that does not run the room: the room
  // stays where it is, and the owner records it.
  const second = await cluster.rest(others[1], 'POST', `/api/v1/calls/${callId}/recording/start`, alice, {});
  assert.equal(second.status, 201, JSON.stringify(second.body));
  assert.equal(cluster.owner(callId), owner, 'the room did not move');
  // Only one recording at a time, whichever node is asked.
  const again = await cluster.rest(others[0], 'POST', `/api/v1/calls/${callId}/recording/start`, alice, {});
  assert.equal(again.status, 409, JSON.stringify(again.body));
  assert.equal(again.body.error.code, 'RECORDING_ACTIVE');
  const stopSecond = await cluster.rest(others[0], 'POST', `/api/v1/calls/${callId}/recording/stop`, alice);
  assert.equal(stopSecond.status, 200, JSON.stringify(stopSecond.body));
  await settles(owner, alice, callId, second.body.data.recording.id, 'failed');

  const end = await cluster.rest('a', 'POST', `/api/v1/calls/${callId}/end`, alice, {});
  assert.equal(end.status, 200, JSON.stringify(end.body));
});
