// A livekit call recorded through the REST API against the Egress stand-in, the
// results seen through REST and Socket.IO: the file stays where Egress stored it.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { EgressStatus } from '@livekit/protocol';

import { eventually, next, startServer, token, uid } from '../socketio/harness.mjs';
import { deliver, livekitEnv, startRoomService } from './stand-in.mjs';

let standIn;
let server;
before(async () => {
  standIn = await startRoomService();
  server = await startServer(livekitEnv(standIn.url));
});
after(async () => {
  await server?.stop();
  await standIn?.stop();
});

async function rest(method, path, user, body) {
  const response = await fetch(server.url + path, {
    method,
    headers: { authorization: `Bearer ${token(user)}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: response.status, body: await response.json() };
}

async function recordingOf(user, callId, id) {
  const res = await rest('GET', `/api/v1/calls/${callId}/recording`, user);
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return res.body.data.recordings.find((r) => r.id === id);
}

test('a livekit call is recorded by Egress: start, stop and egress_ended seen through REST and Socket.IO', async () => {
  const alice = uid('alice');
  const bob = uid('bob');
  const bobSocket = await server.connect(bob);
  const start = await rest('POST', '/api/v1/calls/start', alice, { type: 'video', participantIds: [bob], mediaMode: 'livekit' });
  assert.equal(start.status, 200, JSON.stringify(start.body));
  const { call } = start.body.data;
  assert.equal((await rest('POST', `/api/v1/calls/${call.id}/join`, bob, {})).status, 200);

  const started = next(bobSocket, 'call:recording_started', (e) => e.callId === call.id);
  const res = await rest('POST', `/api/v1/calls/${call.id}/recording/start`, alice, {});
  assert.equal(res.status, 201, JSON.stringify(res.body));
  const { recording } = res.body.data;
  assert.equal((await started).recording.id, recording.id);
  const [egressStart] = standIn.of('StartRoomCompositeEgress', call.roomId);
  assert.ok(egressStart, 'Egress was asked to record the room');
  assert.equal(egressStart.authError, undefined, egressStart.authError);
  assert.equal(egressStart.claims.video.roomRecord, true);
  assert.equal(egressStart.body.fileOutputs[0].filepath, `${call.id}/${recording.id}.mp4`);

  const stopped = next(bobSocket, 'call:recording_stopped', (e) => e.callId === call.id);
  const stop = await rest('POST', `/api/v1/calls/${call.id}/recording/stop`, alice);
  assert.equal(stop.status, 200, JSON.stringify(stop.body));
  assert.equal(stop.body.data.recording.status, 'processing');
  assert.equal((await stopped).reason, 'asked');
  const [egress] = [...standIn.egresses.values()].filter((e) => e.roomName === call.roomId);
  assert.ok(standIn.requests.some((r) => r.method === 'StopEgress' && r.body.egressId === egress.egressId));

  const location = `s3://recordings/${call.id}/${recording.id}.mp4`;
  await deliver(server.url, standIn.endEgress(egress.egressId, { file: { location, size: 4096, duration: 6_000_000_000 } }));
  const done = await eventually(async () => {
    const r = await recordingOf(alice, call.id, recording.id);
    assert.equal(r.status, 'completed', JSON.stringify(r));
    return r;
  });
  assert.equal(done.size, 4096);
  assert.equal(done.duration, 6);
  assert.deepEqual(done.tracks, []);
  assert.equal(done.reason, 'asked');
  assert.equal(done.format, 'mp4');
  assert.equal(done.location, location);
  assert.equal(done.url, null, 'Huddle does not serve what Egress stored');
  const download = await fetch(`${server.url}/api/v1/calls/${call.id}/recording?download=true`, {
    headers: { authorization: `Bearer ${token(alice)}` },
  });
  assert.equal(download.status, 409);
  assert.equal((await download.json()).error.code, 'RECORDING_ELSEWHERE');

  // A second recording that Egress fails.
  const again = await rest('POST', `/api/v1/calls/${call.id}/recording/start`, alice, {});
  assert.equal(again.status, 201, JSON.stringify(again.body));
  const second = [...standIn.egresses.values()].filter((e) => e.roomName === call.roomId).at(-1);
  await deliver(server.url, standIn.endEgress(second.egressId, { status: EgressStatus.EGRESS_FAILED, error: 'no space left' }));
  await eventually(async () => assert.equal((await recordingOf(alice, call.id, again.body.data.recording.id)).status, 'failed'));
});
