// Huddle's Socket.IO signaling, driven by the official socket.io client.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { CONNECTION_TIMEOUT, RINGING_TIMEOUT, collect, next, request, startServer, token, uid } from './harness.mjs';

let server;
before(async () => {
  server = await startServer();
});
after(async () => {
  await server?.stop();
});

/** alice starts a call to `invitees` over Socket.IO; returns the sockets and call id. */
async function callBetween(invitees, type = 'video') {
  const alice = await server.connect(uid('alice'));
  const sockets = {};
  for (const name of invitees) sockets[name] = await server.connect(uid(name));
  const ids = Object.fromEntries(Object.entries(sockets).map(([name, s]) => [name, userOf(s)]));
  const rings = Object.values(sockets).map((s) => next(s, 'call:incoming'));
  const ack = await request(alice, 'call:invite', { type, participantIds: Object.values(ids) });
  assert.equal(ack.ok, true, JSON.stringify(ack));
  await Promise.all(rings);
  return { alice, sockets, ids, callId: ack.call.id, ack };
}

// The user id a socket connected as (kept on the socket by `connect`).
const userOf = (socket) => JSON.parse(Buffer.from(socket.auth.token.split('.')[1], 'base64url')).sub;

describe('connecting', () => {
  test('a socket without a token is refused with a reason', async () => {
    await assert.rejects(server.connect('nobody', { auth: {} }), /missing token/);
  });

  test('a forged, malformed or expired token is refused with a reason', async () => {
    await assert.rejects(server.connect('x', { auth: { token: token('x', { secret: 'another-secret-0123456789' }) } }), /signature/);
    await assert.rejects(server.connect('x', { auth: { token: 'not.a.jwt' } }), /malformed/);
    await assert.rejects(server.connect('x', { auth: { token: token('x', { ttl: -120 }) } }), /expired/);
  });
});

describe('the call flow over Socket.IO', () => {
  test('call:invite without a callId starts a call and rings the invitee', async () => {
    const alice = await server.connect(uid('alice'));
    const bobId = uid('bob');
    const bob = await server.connect(bobId);
    const ring = next(bob, 'call:incoming');
    const ack = await request(alice, 'call:invite', { type: 'audio', participantIds: [bobId] });
    assert.equal(ack.ok, true);
    assert.equal(ack.call.state, 'ringing');
    assert.ok(Array.isArray(ack.iceServers));
    const incoming = await ring;
    assert.equal(incoming.callId, ack.call.id);
    assert.equal(incoming.invitation.type, 'audio');
    assert.equal(incoming.invitation.from.userId, userOf(alice));
    assert.equal(incoming.invitation.from.displayName, `${userOf(alice)} name`);
  });

  test('call:accept is announced to both sides and connects the call', async () => {
    const { alice, sockets: { bob }, ids, callId } = await callBetween(['bob']);
    const accepted = next(alice, 'call:accepted');
    const joined = next(alice, 'call:participant_joined');
    const state = next(alice, 'call:state_changed');
    const ack = await request(bob, 'call:accept', { callId });
    assert.equal(ack.ok, true);
    assert.equal(ack.call.state, 'connected');
    assert.deepEqual(await accepted, { callId, userId: ids.bob });
    assert.equal((await joined).participant.connectionState, 'connected');
    assert.deepEqual(await state, { callId, state: 'connected' });
  });

  test('call:decline tells the caller, and a 1-on-1 call ends declined', async () => {
    const { alice, sockets: { bob }, ids, callId } = await callBetween(['bob']);
    const declined = next(alice, 'call:declined');
    const ended = next(alice, 'call:ended');
    assert.equal((await request(bob, 'call:decline', { callId })).ok, true);
    assert.deepEqual(await declined, { callId, userId: ids.bob });
    assert.deepEqual(await ended, { callId, userId: ids.bob, reason: 'declined' });
  });

  test('call:end ends the call for everyone with who and why', async () => {
    const { alice, sockets: { bob }, callId } = await callBetween(['bob']);
    await request(bob, 'call:accept', { callId });
    const ended = next(bob, 'call:ended');
    const ack = await request(alice, 'call:end', { callId, reason: 'normal' });
    assert.equal(ack.outcome, 'ended');
    assert.deepEqual(await ended, { callId, userId: userOf(alice), reason: 'normal' });
    const late = await request(bob, 'call:accept', { callId });
    assert.equal(late.ok, false);
    assert.equal(late.error.code, 'CALL_ENDED');
  });

  test('toggles update the participant for the others', async () => {
    const { alice, sockets: { bob }, ids, callId } = await callBetween(['bob']);
    await request(bob, 'call:accept', { callId });
    for (const [event, field] of [
      ['call:toggle_audio', 'audioEnabled'],
      ['call:toggle_video', 'videoEnabled'],
      ['call:toggle_screen_share', 'screenShareEnabled'],
    ]) {
      const enabled = field === 'screenShareEnabled';
      const update = next(alice, 'call:participant_updated', (d) => d.userId === ids.bob && d.participant[field] === enabled);
      const ack = await request(bob, event, { callId, enabled });
      assert.equal(ack.ok, true, JSON.stringify(ack));
      assert.equal(ack.participant[field], enabled);
      await update;
    }
  });

  test('call:invite with a callId rings more people into a running call', async () => {
    const { alice, sockets: { bob }, callId } = await callBetween(['bob']);
    await request(bob, 'call:accept', { callId });
    const carolId = uid('carol');
    const carol = await server.connect(carolId);
    const ring = next(carol, 'call:incoming');
    const ack = await request(alice, 'call:invite', { callId, invitation: { participantIds: [carolId] } });
    assert.equal(ack.ok, true, JSON.stringify(ack));
    assert.equal((await ring).callId, callId);
    assert.equal(ack.call.isGroup, true);
  });

  test('quality reports are stored with a MOS estimate, from participants in the call', async () => {
    const { alice, sockets: { bob }, callId } = await callBetween(['bob']);
    const early = await request(bob, 'call:quality_update', { callId, jitter: 3, packetLoss: 0, roundTripTime: 40 });
    assert.equal(early.error.code, 'NOT_IN_CALL');
    await request(bob, 'call:accept', { callId });
    const ack = await request(bob, 'call:quality_update', { callId, jitter: 15.5, packetLoss: 0.5, roundTripTime: 120, bandwidth: 1500 });
    assert.equal(ack.ok, true, JSON.stringify(ack));
    assert.ok(ack.quality > 3.5 && ack.quality <= 4.5, `MOS ${ack.quality}`);
    const { body } = await server.rest('GET', `/api/v1/calls/${callId}`, userOf(alice));
    assert.equal(body.data.quality.samples, 1);
    assert.equal(body.data.quality.averageMos, ack.quality);
  });

  test('the caller hears when nobody answers before RINGING_TIMEOUT', { timeout: (RINGING_TIMEOUT + 10) * 1000 }, async () => {
    const { alice, callId } = await callBetween(['bob']);
    const ended = await next(alice, 'call:ended', () => true, (RINGING_TIMEOUT + 5) * 1000);
    assert.deepEqual(ended, { callId, userId: null, reason: 'missed' });
  });
});

describe('one call, two doors', () => {
  test('a call started over REST rings sockets; joined over REST, it is announced', async () => {
    const aliceId = uid('alice');
    const alice = await server.connect(aliceId);
    const bobId = uid('bob');
    const bob = await server.connect(bobId);
    const ring = next(bob, 'call:incoming');
    const started = await server.rest('POST', '/api/v1/calls/start', aliceId, { type: 'video', participantIds: [bobId] });
    assert.equal(started.status, 200);
    const callId = started.body.data.call.id;
    assert.equal((await ring).callId, callId);
    const accepted = next(alice, 'call:accepted');
    assert.equal((await server.rest('POST', `/api/v1/calls/${callId}/join`, bobId, {})).status, 200);
    assert.deepEqual(await accepted, { callId, userId: bobId });
  });

  test('a call ended over Socket.IO reads as ended over REST', async () => {
    const { alice, sockets: { bob }, ids, callId } = await callBetween(['bob']);
    await request(bob, 'call:accept', { callId });
    await request(alice, 'call:end', { callId });
    const { body } = await server.rest('GET', `/api/v1/calls/${callId}`, ids.bob);
    assert.equal(body.data.call.state, 'ended');
    assert.equal(body.data.call.endReason, 'normal');
  });
});

describe('several devices', () => {
  test('events for a user reach every socket of that user', async () => {
    const bobId = uid('bob');
    const phone = await server.connect(bobId);
    const laptop = await server.connect(bobId);
    const alice = await server.connect(uid('alice'));
    const rings = [next(phone, 'call:incoming'), next(laptop, 'call:incoming')];
    const { call } = await request(alice, 'call:invite', { type: 'video', participantIds: [bobId] });
    await Promise.all(rings);
    const stopRinging = next(laptop, 'call:accepted');
    await request(phone, 'call:accept', { callId: call.id });
    assert.equal((await stopRinging).userId, bobId, 'the other device learns it was answered');
  });
});

describe('presence', () => {
  test('coming back within CONNECTION_TIMEOUT keeps a participant in the call unnoticed', async () => {
    const { alice, sockets: { bob }, ids, callId } = await callBetween(['bob', 'carol']);
    await request(bob, 'call:accept', { callId });
    const noticed = collect(alice, 'call:participant_left', CONNECTION_TIMEOUT * 1000 + 1500);
    bob.disconnect();
    await new Promise((r) => setTimeout(r, 200));
    await server.connect(ids.bob);
    assert.deepEqual(await noticed, []);
    const { body } = await server.rest('GET', `/api/v1/calls/${callId}`, ids.bob);
    assert.equal(body.data.participants.find((p) => p.userId === ids.bob).connectionState, 'connected');
  });

  test('staying away past CONNECTION_TIMEOUT counts as leaving', async () => {
    const { alice, sockets: { bob, carol }, ids, callId } = await callBetween(['bob', 'carol']);
    await request(bob, 'call:accept', { callId });
    await request(carol, 'call:accept', { callId });
    const left = next(alice, 'call:participant_left', (d) => d.userId === ids.bob, CONNECTION_TIMEOUT * 1000 + 4000);
    bob.disconnect();
    assert.deepEqual(await left, { callId, userId: ids.bob });
  });
});

describe('webrtc relay', () => {
  test('offer, answer and candidates reach the target member with fromUserId', async () => {
    const { alice, sockets: { bob }, ids, callId } = await callBetween(['bob']);
    assert.equal((await request(bob, 'call:accept', { callId })).ok, true);
    const aliceId = userOf(alice);
    for (const [event, field, from, to, target] of [
      ['webrtc:offer', 'offer', alice, bob, ids.bob],
      ['webrtc:answer', 'answer', bob, alice, aliceId],
      ['webrtc:ice_candidate', 'candidate', alice, bob, ids.bob],
    ]) {
      const body = field === 'candidate' ? { candidate: 'candidate:1 1 udp 1 127.0.0.1 9 typ host', sdpMid: '0' } : { type: field, sdp: 'v=0\r\n' };
      const received = next(to, event);
      const ack = await request(from, event, { callId, targetUserId: target, [field]: body });
      assert.equal(ack.ok, true, JSON.stringify(ack));
      const got = await received;
      assert.equal(got.callId, callId);
      assert.equal(got.fromUserId, from === alice ? aliceId : ids.bob);
      assert.deepEqual(got[field], body);
    }
  });

  test('a ringing invitee neither sends nor receives relays until they answer', async () => {
    const { alice, sockets: { bob }, ids, callId } = await callBetween(['bob']);
    const aliceId = userOf(alice);
    const aliceInbox = collect(alice, 'webrtc:offer', 1000);
    const bobInbox = collect(bob, 'webrtc:offer', 1000);
    const offer = { type: 'offer', sdp: 'v=0' };
    const toBob = await request(alice, 'webrtc:offer', { callId, targetUserId: ids.bob, offer });
    assert.equal(toBob.error?.code, 'TARGET_NOT_IN_CALL', JSON.stringify(toBob));
    const fromBob = await request(bob, 'webrtc:offer', { callId, targetUserId: aliceId, offer });
    assert.equal(fromBob.error?.code, 'NOT_IN_CALL', JSON.stringify(fromBob));
    const toSfu = await request(bob, 'webrtc:offer', { callId, targetUserId: 'sfu', offer });
    assert.equal(toSfu.error?.code, 'NOT_IN_CALL', JSON.stringify(toSfu));
    assert.deepEqual(await aliceInbox, []);
    assert.deepEqual(await bobInbox, []);
  });

  test('relays to or from non-members and oversized ones are refused and delivered to nobody', async () => {
    const { alice, sockets: { bob }, ids, callId } = await callBetween(['bob']);
    const malloryId = uid('mallory');
    const mallory = await server.connect(malloryId);
    const bobInbox = collect(bob, 'webrtc:offer', 1500);
    const malloryInbox = collect(mallory, 'webrtc:offer', 1500);
    const offer = { type: 'offer', sdp: 'v=0' };
    const cases = [
      [mallory, { callId, targetUserId: ids.bob, offer }, 'NOT_A_MEMBER'],
      [alice, { callId, targetUserId: malloryId, offer }, 'NOT_A_MEMBER'],
      [alice, { callId, targetUserId: ids.bob, offer: { sdp: 'x'.repeat(70_000) } }, 'PAYLOAD_TOO_LARGE'],
      [alice, { callId, targetUserId: ids.bob }, 'VALIDATION_ERROR'],
      [alice, { callId: 'not-a-uuid', targetUserId: ids.bob, offer }, 'VALIDATION_ERROR'],
    ];
    for (const [from, payload, code] of cases) {
      const ack = await request(from, 'webrtc:offer', payload);
      assert.equal(ack.ok, false);
      assert.equal(ack.error.code, code, JSON.stringify(ack));
    }
    assert.deepEqual(await bobInbox, []);
    assert.deepEqual(await malloryInbox, []);
  });

  test('messages to the SFU from outsiders, with bad SDP, out of turn or in a p2p call are refused', async () => {
    const { alice, callId } = await callBetween(['bob']);
    const mallory = await server.connect(uid('mallory'));
    const offer = { type: 'offer', sdp: 'v=0' };
    const p2p = await request(alice, 'call:invite', { participantIds: [uid('carol')], type: 'video', mediaMode: 'p2p' });
    assert.equal(p2p.ok, true, JSON.stringify(p2p));
    assert.equal(p2p.call.mediaMode, 'p2p');
    const cases = [
      [mallory, 'webrtc:offer', { callId, targetUserId: 'sfu', offer }, 'NOT_A_MEMBER'],
      [alice, 'webrtc:offer', { callId, targetUserId: 'sfu', offer }, 'INVALID_SDP'],
      [alice, 'webrtc:offer', { callId, targetUserId: 'sfu', offer: { type: 'answer', sdp: 'v=0' } }, 'VALIDATION_ERROR'],
      [alice, 'webrtc:offer', { callId, targetUserId: 'sfu', offer, sources: { t: 'hologram' } }, 'VALIDATION_ERROR'],
      [alice, 'webrtc:answer', { callId, targetUserId: 'sfu', answer: { type: 'answer', sdp: 'v=0' } }, 'NO_OFFER_PENDING'],
      [alice, 'webrtc:offer', { callId: p2p.call.id, targetUserId: 'sfu', offer }, 'NOT_AN_SFU_CALL'],
    ];
    for (const [from, event, payload, code] of cases) {
      const ack = await request(from, event, payload);
      assert.equal(ack.ok, false);
      assert.equal(ack.error.code, code, `${event} ${JSON.stringify(payload).slice(0, 80)}: ${JSON.stringify(ack)}`);
    }
    const candidate = await request(alice, 'webrtc:ice_candidate', { callId, targetUserId: 'sfu', candidate: { candidate: '' } });
    assert.equal(candidate.ok, true, 'the ICE-lite SFU accepts (and needs no) candidates');
  });

  test('once the call has ended, its members can no longer relay', async () => {
    const { alice, ids, callId } = await callBetween(['bob']);
    await request(alice, 'call:end', { callId });
    const ack = await request(alice, 'webrtc:ice_candidate', { callId, targetUserId: ids.bob, candidate: { candidate: '' } });
    assert.equal(ack.error.code, 'CALL_ENDED');
  });
});

describe('echo', () => {
  test('echo answers with what was sent, for measuring signaling round trips', async () => {
    const socket = await server.connect(uid('probe'));
    assert.deepEqual(await request(socket, 'echo', { n: 1, t: 'x' }), { ok: true, data: { n: 1, t: 'x' } });
  });
});

describe('bad input', () => {
  test('malformed payloads are refused naming the field, and change nothing', async () => {
    const { sockets: { bob }, ids, callId } = await callBetween(['bob']);
    for (const [event, payload, field] of [
      ['call:accept', {}, 'callId'],
      ['call:accept', { callId: 42 }, 'callId'],
      ['call:accept', 'call', 'payload'],
      ['call:toggle_audio', { callId, enabled: 'off' }, 'enabled'],
      ['call:quality_update', { callId, packetLoss: -1 }, 'packetLoss'],
      ['call:end', { callId, reason: 'exploded' }, 'reason'],
      ['call:invite', { participantIds: ['x'] }, 'callId'],
    ]) {
      const ack = await request(bob, event, payload);
      assert.equal(ack.ok, false, `${event} ${JSON.stringify(payload)}`);
      assert.equal(ack.error.code, 'VALIDATION_ERROR');
      assert.equal(ack.error.field, field, JSON.stringify(ack));
    }
    const { body } = await server.rest('GET', `/api/v1/calls/${callId}`, ids.bob);
    assert.equal(body.data.call.state, 'ringing');
  });

  test('without an acknowledgement, a failure arrives as call:error', async () => {
    const mallory = await server.connect(uid('mallory'));
    const { callId } = await callBetween(['bob']);
    const error = next(mallory, 'call:error');
    mallory.emit('call:accept', { callId });
    const got = await error;
    assert.equal(got.error.code, 'NOT_A_MEMBER');
    assert.equal(got.event, 'call:accept');
    assert.equal(got.callId, callId);
  });

  test('unknown events are refused, by ack or call:error', async () => {
    const socket = await server.connect(uid('zed'));
    const ack = await request(socket, 'call:teleport', { callId: 'x' });
    assert.equal(ack.error.code, 'UNKNOWN_EVENT');
    const error = next(socket, 'call:error');
    socket.emit('call:teleport');
    assert.equal((await error).error.code, 'UNKNOWN_EVENT');
  });

  test('the server survives all of it', async () => {
    const { status } = await server.rest('GET', '/health', 'anyone');
    assert.equal(status, 200);
  });
});
