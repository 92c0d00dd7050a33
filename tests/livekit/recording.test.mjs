// LiveKit's egress webhooks as the huddle binary takes them: recordings of `livekit`
// calls are room composite egresses whose results LiveKit reports by webhook
// (`egress_started`, `egress_updated`, `egress_ended`). What Huddle asks of Egress,
// and what it reports from these webhooks, is checked against the same stand-in by
// tests/livekit.rs (recording orders reach the plane only through the recording
// service); here the binary's webhook door: signed egress webhooks are accepted,
// unsigned or tampered ones refused.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { EgressStatus, RoomCompositeEgressRequest } from '@livekit/protocol';

import { startServer, token, uid } from '../socketio/harness.mjs';
import { deliver, egressWebhookBody, livekitEnv, post, sign, startRoomService } from './stand-in.mjs';

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

/** Starts a livekit call as a new user; returns it. */
async function livekitCall() {
  const response = await fetch(`${server.url}/api/v1/calls/start`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token(uid('alice'))}`, 'content-type': 'application/json' },
    body: JSON.stringify({ type: 'video', participantIds: [uid('bob')], mediaMode: 'livekit' }),
  });
  const body = await response.json();
  assert.equal(response.status, 200, JSON.stringify(body));
  return body.data.call;
}

/** An egress of `call`'s room as LiveKit's Egress started it, writing recording `id`. */
async function egressOf(call, id) {
  const res = await fetch(`${standIn.url}/twirp/livekit.Egress/StartRoomCompositeEgress`, {
    method: 'POST',
    headers: { 'content-type': 'application/protobuf', authorization: `Bearer ${await sign('')}` },
    body: Buffer.from(
      new RoomCompositeEgressRequest({ roomName: call.roomId, fileOutputs: [{ filepath: `${call.id}/${id}.mp4` }] }).toBinary(),
    ),
  });
  assert.equal(res.status, 200);
  return [...standIn.egresses.values()].at(-1);
}

test('signed egress webhooks about a call recording are accepted', async () => {
  const call = await livekitCall();
  const egress = await egressOf(call, 'rec-1');
  await deliver(server.url, egressWebhookBody('egress_started', egress));
  await deliver(server.url, egressWebhookBody('egress_updated', egress));
  const ended = standIn.endEgress(egress.egressId, {
    file: { location: `/out/${call.id}/rec-1.mp4`, size: 1000, duration: 5_000_000_000 },
  });
  await deliver(server.url, ended);
  // LiveKit retries a webhook it got no answer to: the same one again is accepted.
  await deliver(server.url, ended);

  const failed = await egressOf(call, 'rec-2');
  const body = standIn.endEgress(failed.egressId, { status: EgressStatus.EGRESS_FAILED, error: 'no space left' });
  await deliver(server.url, body);
});

test('an egress that is not a call recording is accepted and ignored', async () => {
  const call = await livekitCall();
  const egress = await egressOf(call, 'rec-x');
  egress.roomName = 'someone-elses-room';
  await deliver(server.url, standIn.endEgress(egress.egressId, { file: { location: '/x', size: 1, duration: 1 } }));
});

test('unsigned, tampered or wrongly signed egress webhooks are refused', async () => {
  const call = await livekitCall();
  const egress = await egressOf(call, 'rec-3');
  const body = standIn.endEgress(egress.egressId, { file: { location: '/y', size: 10, duration: 1_000_000_000 } });
  const tampered = body.replace('"10"', '"99"');
  assert.notEqual(tampered, body);
  const refusals = [
    ['no Authorization', await post(server.url, body)],
    ['signature of another body', await post(server.url, tampered, await sign(body))],
    ['signed with the wrong secret', await post(server.url, body, await sign(body, 'wrong-secret-0123456789abcdefghij'))],
  ];
  for (const [what, res] of refusals) {
    assert.equal(res.status, 401, `${what}: ${JSON.stringify(res.body)}`);
    assert.equal(res.body.error.code, 'UNAUTHORIZED', what);
  }
});
