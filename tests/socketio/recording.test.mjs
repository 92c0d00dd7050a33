// Call recording over Socket.IO, with the official client: call:recording_start and
// call:recording_stop are checked and answered like the other call events, and every
// member, ringing invitees included, hears call:recording_stopped when a recording
// fails (here: RECORDINGS_DIR under a regular file, which no write gets past, root or
// not). The call goes on.

import assert from 'node:assert/strict';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { next, request, scratchDir, startServer, uid } from './harness.mjs';

let server;
let dir;
before(async () => {
  dir = scratchDir();
  writeFileSync(join(dir, 'file'), 'not a folder');
  // The server's database goes to a folder of its own; recordings cannot be written.
  server = await startServer({ RECORDINGS_DIR: join(dir, 'file', 'sub') });
});
after(async () => {
  await server?.stop();
  rmSync(dir, { recursive: true, force: true });
});

/** alice calls bob and carol; bob answers, carol is left ringing. */
async function aCall(extra = {}) {
  const [aliceId, bobId, carolId] = [uid('alice'), uid('bob'), uid('carol')];
  const alice = await server.connect(aliceId);
  const bob = await server.connect(bobId);
  const carol = await server.connect(carolId);
  const rings = [next(bob, 'call:incoming'), next(carol, 'call:incoming')];
  const ack = await request(alice, 'call:invite', { type: 'video', participantIds: [bobId, carolId], ...extra });
  assert.equal(ack.ok, true, JSON.stringify(ack));
  await Promise.all(rings);
  const callId = ack.call.id;
  const accepted = await request(bob, 'call:accept', { callId });
  assert.equal(accepted.ok, true, JSON.stringify(accepted));
  return { alice, bob, carol, aliceId, callId, ack };
}

describe('recording over Socket.IO', () => {
  test('a recording that cannot be written is failed, every member is told, the call goes on', async () => {
    const { alice, bob, carol, aliceId, callId } = await aCall();
    const told = [alice, bob, carol].map((s) => next(s, 'call:recording_stopped'));
    const finished = [alice, bob, carol].map((s) => next(s, 'call:recording_finished'));
    const ack = await request(alice, 'call:recording_start', { callId });
    assert.equal(ack.ok, false);
    assert.equal(ack.error.code, 'RECORDING_FAILED');
    for (const notice of await Promise.all(told)) {
      assert.equal(notice.callId, callId);
      assert.equal(notice.reason, 'failed');
      assert.equal(notice.recording.status, 'failed');
      assert.equal(notice.recording.callId, callId);
      assert.equal(notice.recording.url, null);
    }
    for (const notice of await Promise.all(finished)) {
      assert.equal(notice.callId, callId);
      assert.equal(notice.recording.status, 'failed');
    }
    const { status, body } = await server.rest('GET', `/api/v1/calls/${callId}`, aliceId);
    assert.equal(status, 200);
    assert.equal(body.data.call.state, 'connected');
    assert.equal(body.data.call.recordingEnabled, false);
  });

  test('recordingEnabled in call:invite records from the start: a failure reaches the ringing invitees', async () => {
    const [aliceId, bobId] = [uid('alice'), uid('bob')];
    const alice = await server.connect(aliceId);
    const bob = await server.connect(bobId);
    const ring = next(bob, 'call:incoming');
    const told = next(bob, 'call:recording_stopped');
    const ack = await request(alice, 'call:invite', { type: 'audio', participantIds: [bobId], recordingEnabled: true });
    assert.equal(ack.ok, true, JSON.stringify(ack));
    const [incoming, stopped] = await Promise.all([ring, told]);
    assert.equal(incoming.callId, ack.call.id);
    assert.equal(stopped.callId, ack.call.id);
    assert.equal(stopped.reason, 'failed');
  });

  test('requests are checked and refused like the other call events', async () => {
    const { alice, bob, callId } = await aCall();
    const outsider = await server.connect(uid('dave'));
    const refused = async (socket, event, data, code, field) => {
      const ack = await request(socket, event, data);
      assert.equal(ack.ok, false, JSON.stringify(ack));
      assert.equal(ack.error.code, code, JSON.stringify(ack));
      if (field) assert.equal(ack.error.field, field);
    };
    await refused(outsider, 'call:recording_start', { callId }, 'NOT_A_MEMBER');
    await refused(outsider, 'call:recording_stop', { callId }, 'NOT_A_MEMBER');
    await refused(bob, 'call:recording_start', { callId }, 'FORBIDDEN');
    await refused(alice, 'call:recording_start', { callId, format: 'mp4' }, 'VALIDATION_ERROR', 'format');
    await refused(alice, 'call:recording_start', {}, 'VALIDATION_ERROR', 'callId');
    await refused(alice, 'call:recording_stop', { callId: 'nope' }, 'VALIDATION_ERROR', 'callId');
    await refused(alice, 'call:recording_stop', { callId }, 'RECORDING_NOT_FOUND');
    // Without a callback, a refusal is a call:error.
    const error = next(alice, 'call:error');
    alice.emit('call:recording_stop', { callId });
    assert.equal((await error).error.code, 'RECORDING_NOT_FOUND');
  });

  test('a p2p call cannot be recorded', async () => {
    const { alice, callId } = await aCall({ mediaMode: 'p2p' });
    const ack = await request(alice, 'call:recording_start', { callId });
    assert.equal(ack.error?.code, 'RECORDING_UNAVAILABLE', JSON.stringify(ack));
  });
});
