// Huddle's LiveKit media plane, checked with LiveKit's own Node server SDK
// (`livekit-server-sdk` and its `@livekit/protocol` types): the access tokens Huddle
// mints, the RoomService requests it makes, how it fails when LiveKit does, and the
// signed webhooks it accepts.
//
// No LiveKit server can run on this machine: LiveKit's RoomService is played by the
// local STAND-IN of ./stand-in.mjs, which also writes and signs the webhooks.

import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { createServer } from 'node:http';
import { after, before, describe, test } from 'node:test';

import { TokenVerifier, WebhookReceiver } from 'livekit-server-sdk';

import { SECRET, eventually, next, startServer, token, uid } from '../socketio/harness.mjs';
import {
  API_KEY,
  API_SECRET,
  deliver as deliverTo,
  livekitEnv as standInEnv,
  post as postTo,
  sign,
  startRoomService,
  webhookBody,
} from './stand-in.mjs';

const TOKEN_TTL = 600;
const EMPTY_TIMEOUT = 120;
const MAX_PARTICIPANTS = 6;

/** A port nothing listens on. */
async function closedPort() {
  const server = createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

const livekitEnv = (url) => ({
  ...standInEnv(url),
  LIVEKIT_TOKEN_TTL: String(TOKEN_TTL),
  LIVEKIT_EMPTY_TIMEOUT: String(EMPTY_TIMEOUT),
  MAX_CALL_PARTICIPANTS: String(MAX_PARTICIPANTS),
});

const displayName = (user) => `${user} name`;

/** A REST call to `server` as `user` (with a display name); resolves to { status, body }. */
async function rest(server, method, path, user, body) {
  const response = await fetch(server.url + path, {
    method,
    headers: {
      authorization: `Bearer ${token(user, { name: displayName(user) })}`,
      'content-type': 'application/json',
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: response.status, body: await response.json() };
}

async function livekitRooms(server) {
  const text = await (await fetch(`${server.url}/metrics`)).text();
  const match = /^huddle_livekit_rooms (\d+)$/m.exec(text);
  assert.ok(match, `no huddle_livekit_rooms in /metrics:\n${text}`);
  return Number(match[1]);
}

/** `/monitoring/metrics`' `livekit` section (it needs an admin, which the harness's tokens are not). */
async function monitoringLivekit(server) {
  const b64url = (data) => Buffer.from(data).toString('base64url');
  const head = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const body = b64url(JSON.stringify({ sub: 'ops', role: 'admin', exp: Math.floor(Date.now() / 1000) + 600 }));
  const admin = `${head}.${body}.${createHmac('sha256', SECRET).update(`${head}.${body}`).digest('base64url')}`;
  const res = await fetch(`${server.url}/monitoring/metrics`, { headers: { authorization: `Bearer ${admin}` } });
  const json = await res.json();
  assert.equal(res.status, 200, JSON.stringify(json));
  return (json.data ?? json).livekit;
}

/** Checks a LiveKit access token as LiveKit would, and its grants. */
async function checkMediaToken(media, { user, roomName, sources }) {
  assert.deepEqual(Object.keys(media).sort(), ['identity', 'roomName', 'token', 'url']);
  assert.equal(media.url, standIn.url);
  assert.equal(media.roomName, roomName);
  assert.equal(media.identity, user);
  const claims = await new TokenVerifier(API_KEY, API_SECRET).verify(media.token);
  assert.equal(claims.iss, API_KEY);
  assert.equal(claims.sub, user);
  assert.equal(claims.name, displayName(user));
  assert.equal(claims.video.roomJoin, true);
  assert.equal(claims.video.room, roomName);
  assert.equal(claims.video.canPublish, true);
  assert.equal(claims.video.canSubscribe, true);
  assert.equal(claims.video.canPublishData, true);
  assert.deepEqual(claims.video.canPublishSources, sources);
  for (const admin of ['roomCreate', 'roomAdmin', 'roomList', 'roomRecord'])
    assert.ok(!claims.video[admin], `a participant token must not grant ${admin}`);
  const issued = claims.nbf ?? claims.iat;
  assert.ok(Number.isInteger(issued), `token has neither nbf nor iat: ${JSON.stringify(claims)}`);
  const now = Math.floor(Date.now() / 1000);
  assert.ok(Math.abs(issued - now) <= 5, `issued at ${issued}, now ${now}`);
  assert.ok(claims.exp - issued <= TOKEN_TTL, `lifetime ${claims.exp - issued}s > LIVEKIT_TOKEN_TTL ${TOKEN_TTL}s`);
  assert.ok(claims.exp - issued >= TOKEN_TTL - 5, `lifetime ${claims.exp - issued}s, expected ~${TOKEN_TTL}s`);
  await assert.rejects(new TokenVerifier(API_KEY, 'another-secret-0123456789abcdef').verify(media.token));
  await assert.rejects(new TokenVerifier('APIsomeoneElse', API_SECRET).verify(media.token));
  return claims;
}

/** alice ends `call`; resolves once LiveKit was asked to delete its room and Huddle counts it closed. */
async function endCall(user, call) {
  const res = await rest(server, 'POST', `/api/v1/calls/${call.id}/end`, user, {});
  assert.equal(res.status, 200, JSON.stringify(res.body));
  await eventually(() => assert.equal(standIn.of('DeleteRoom', call.roomId).length, 1, `DeleteRoom for ${call.roomId}`));
  await eventually(async () => assert.equal(await livekitRooms(server), 0));
}

const VIDEO_SOURCES = ['microphone', 'camera', 'screen_share', 'screen_share_audio'];

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

/** alice starts a livekit call to `invitees`; returns the users, call and alice's data. */
async function livekitCall(invitees, type = 'video') {
  const alice = uid('alice');
  const ids = Object.fromEntries(invitees.map((name) => [name, uid(name)]));
  const res = await rest(server, 'POST', '/api/v1/calls/start', alice, {
    type,
    participantIds: Object.values(ids),
    mediaMode: 'livekit',
  });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  const { call } = res.body.data;
  return { alice, ids, call, data: res.body.data };
}

describe('access tokens', () => {
  test('start, join and /token hand out LiveKit tokens for the call room and that user', async () => {
    const { alice, ids, call, data } = await livekitCall(['bob']);
    assert.equal(call.mediaMode, 'livekit');
    assert.match(call.roomId, /^room_[0-9a-f]{32}$/);
    await checkMediaToken(data.token, { user: alice, roomName: call.roomId, sources: VIDEO_SOURCES });

    const join = await rest(server, 'POST', `/api/v1/calls/${call.id}/join`, ids.bob, {});
    assert.equal(join.status, 200, JSON.stringify(join.body));
    await checkMediaToken(join.body.data.token, { user: ids.bob, roomName: call.roomId, sources: VIDEO_SOURCES });

    const fresh = await rest(server, 'POST', `/api/v1/calls/${call.id}/token`, ids.bob);
    assert.equal(fresh.status, 200, JSON.stringify(fresh.body));
    await checkMediaToken(fresh.body.data.token, { user: ids.bob, roomName: call.roomId, sources: VIDEO_SOURCES });

    // Someone outside the call gets no token.
    const outsider = await rest(server, 'POST', `/api/v1/calls/${call.id}/token`, uid('mallory'));
    assert.notEqual(outsider.status, 200, JSON.stringify(outsider.body));
    assert.equal(outsider.body.data, undefined);

    await endCall(alice, call);
  });

  test('an audio call may publish the microphone only', async () => {
    const { alice, call, data } = await livekitCall(['bob'], 'audio');
    await checkMediaToken(data.token, { user: alice, roomName: call.roomId, sources: ['microphone'] });
    await endCall(alice, call);
  });
});

describe('rooms', () => {
  test('a call opens its room, removes who leaves and deletes the room when it ends', async () => {
    assert.equal(await livekitRooms(server), 0, 'the earlier tests closed their rooms');
    const { alice, ids, call } = await livekitCall(['bob', 'carol']);

    const created = standIn.of('CreateRoom', call.roomId);
    assert.equal(created.length, 1, 'exactly one CreateRoom for the call room');
    const [create] = created;
    assert.equal(create.contentType, 'application/protobuf');
    assert.equal(create.authError, undefined, create.authError);
    assert.equal(create.claims.iss, API_KEY);
    assert.equal(create.claims.video.roomCreate, true);
    assert.equal(create.body.maxParticipants, call.maxParticipants);
    assert.equal(call.maxParticipants, MAX_PARTICIPANTS);
    assert.equal(create.body.emptyTimeout, EMPTY_TIMEOUT);
    assert.equal(await livekitRooms(server), 1);
    assert.deepEqual(await monitoringLivekit(server), { enabled: true, activeRooms: 1 });

    // bob joins then leaves; alice and carol keep the call going.
    assert.equal((await rest(server, 'POST', `/api/v1/calls/${call.id}/join`, ids.bob, {})).status, 200);
    const leave = await rest(server, 'POST', `/api/v1/calls/${call.id}/end`, ids.bob, {});
    assert.equal(leave.status, 200, JSON.stringify(leave.body));
    assert.equal(leave.body.data.outcome, 'left');
    const removed = await eventually(() => {
      const found = standIn.requests.filter((r) => r.method === 'RemoveParticipant' && r.body?.room === call.roomId);
      assert.equal(found.length, 1, 'one RemoveParticipant for the room');
      return found[0];
    });
    assert.equal(removed.body.identity, ids.bob);
    assert.equal(removed.authError, undefined, removed.authError);
    assert.equal(removed.claims.video.roomAdmin, true);
    assert.equal(removed.claims.video.room, call.roomId);
    assert.equal(standIn.of('DeleteRoom', call.roomId).length, 0, 'the room stays while the call goes on');

    // alice ends the call: the room is deleted.
    const end = await rest(server, 'POST', `/api/v1/calls/${call.id}/end`, alice, {});
    assert.equal(end.status, 200, JSON.stringify(end.body));
    assert.equal(end.body.data.outcome, 'ended');
    const deleted = await eventually(() => {
      const found = standIn.of('DeleteRoom', call.roomId);
      assert.equal(found.length, 1, 'one DeleteRoom for the room');
      return found[0];
    });
    assert.equal(deleted.authError, undefined, deleted.authError);
    assert.equal(deleted.claims.video.roomCreate, true);
    await eventually(async () => assert.equal(await livekitRooms(server), 0));
    assert.deepEqual(await monitoringLivekit(server), { enabled: true, activeRooms: 0 });
  });
});

describe('when LiveKit fails', () => {
  test('a livekit call whose room cannot be created is not stored; an sfu call still starts', async () => {
    const alice = uid('alice');
    const bob = uid('bob');
    const rooms = await livekitRooms(server);
    const createsBefore = standIn.requests.filter((r) => r.method === 'CreateRoom').length;
    standIn.failCreate = true;
    try {
      const res = await rest(server, 'POST', '/api/v1/calls/start', alice, {
        type: 'video',
        participantIds: [bob],
        mediaMode: 'livekit',
      });
      assert.equal(res.status, 502, JSON.stringify(res.body));
      assert.equal(res.body.success, false);
      assert.equal(res.body.error.code, 'MEDIA_UNAVAILABLE');
      assert.equal(standIn.requests.filter((r) => r.method === 'CreateRoom').length, createsBefore + 1);
      for (const user of [alice, bob]) {
        const active = await rest(server, 'GET', '/api/v1/calls/active', user);
        assert.deepEqual(active.body.data.calls, [], `${user} has no active call`);
        const history = await rest(server, 'GET', '/api/v1/calls/history', user);
        assert.deepEqual(history.body.data.calls, [], `${user} has no call in history`);
        assert.equal(history.body.data.pagination.total, 0);
      }
      assert.equal(await livekitRooms(server), rooms);

      const sfu = await rest(server, 'POST', '/api/v1/calls/start', alice, {
        type: 'video',
        participantIds: [bob],
        mediaMode: 'sfu',
      });
      assert.equal(sfu.status, 200, JSON.stringify(sfu.body));
      assert.equal(sfu.body.data.call.mediaMode, 'sfu');
      assert.equal(sfu.body.data.token, null);
      await rest(server, 'POST', `/api/v1/calls/${sfu.body.data.call.id}/end`, alice, {});
    } finally {
      standIn.failCreate = false;
    }
  });

  test('with LiveKit unreachable a livekit start fails fast with 502 and an sfu start works', async () => {
    const unreachable = await startServer(livekitEnv(`http://127.0.0.1:${await closedPort()}`));
    try {
      const alice = uid('alice');
      const bob = uid('bob');
      const started = Date.now();
      const res = await rest(unreachable, 'POST', '/api/v1/calls/start', alice, {
        type: 'audio',
        participantIds: [bob],
        mediaMode: 'livekit',
      });
      const took = Date.now() - started;
      assert.equal(res.status, 502, JSON.stringify(res.body));
      assert.equal(res.body.error.code, 'MEDIA_UNAVAILABLE');
      assert.ok(took < 15_000, `took ${took} ms`);
      assert.deepEqual((await rest(unreachable, 'GET', '/api/v1/calls/active', alice)).body.data.calls, []);

      const sfu = await rest(unreachable, 'POST', '/api/v1/calls/start', alice, {
        type: 'audio',
        participantIds: [bob],
        mediaMode: 'sfu',
      });
      assert.equal(sfu.status, 200, JSON.stringify(sfu.body));
    } finally {
      await unreachable.stop();
    }
  });
});

describe('webhooks', () => {
  const post = (body, authorization) => postTo(server.url, body, authorization);
  const deliver = (body) => deliverTo(server.url, body);

  const getCall = async (user, id) => {
    const res = await rest(server, 'GET', `/api/v1/calls/${id}`, user);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    return res.body.data;
  };
  const stateOf = (data, user) => data.participants.find((p) => p.userId === user)?.connectionState;

  test('unsigned, tampered or wrongly signed webhooks are refused and change nothing', async () => {
    const { alice, ids, call } = await livekitCall(['bob']);
    const body = webhookBody('participant_joined', call.roomId, { identity: ids.bob, name: 'Bob' });
    const other = webhookBody('participant_joined', call.roomId, { identity: ids.bob, name: 'Bob ' });
    const refusals = [
      ['no Authorization', await post(body)],
      ['signature of another body', await post(body, await sign(other))],
      ['signed with the wrong secret', await post(body, await sign(body, 'wrong-secret-0123456789abcdefghij'))],
    ];
    for (const [what, res] of refusals) {
      assert.equal(res.status, 401, `${what}: ${JSON.stringify(res.body)}`);
      assert.equal(res.body.error.code, 'UNAUTHORIZED', what);
    }
    await assert.rejects(new WebhookReceiver(API_KEY, API_SECRET).receive(body, await sign(other)));
    const data = await getCall(alice, call.id);
    assert.equal(data.call.state, 'ringing');
    assert.notEqual(stateOf(data, ids.bob), 'connected');
    await endCall(alice, call);
  });

  test('participant_joined connects the invitee, participant_left lets them go, room_finished ends the call', async () => {
    const alice = uid('alice');
    const aliceSocket = await server.connect(alice);
    const bob = uid('bob');
    const carol = uid('carol');
    const res = await rest(server, 'POST', '/api/v1/calls/start', alice, {
      type: 'video',
      participantIds: [bob, carol],
      mediaMode: 'livekit',
    });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const { call } = res.body.data;
    assert.equal(call.state, 'ringing');

    const accepted = next(aliceSocket, 'call:accepted', (e) => e.callId === call.id);
    const joinedEvent = next(aliceSocket, 'call:participant_joined', (e) => e.participant?.userId === bob);
    await deliver(webhookBody('participant_joined', call.roomId, { identity: bob, name: 'Bob from LiveKit' }));
    let data = await getCall(alice, call.id);
    assert.equal(data.call.state, 'connected');
    assert.equal(stateOf(data, bob), 'connected');
    assert.deepEqual(await accepted, { callId: call.id, userId: bob });
    assert.equal((await joinedEvent).participant.connectionState, 'connected');

    // The same event again (LiveKit retries) is harmless.
    await deliver(webhookBody('participant_joined', call.roomId, { identity: bob, name: 'Bob from LiveKit' }));

    await deliver(webhookBody('participant_left', call.roomId, { identity: bob, name: 'Bob from LiveKit' }));
    data = await getCall(alice, call.id);
    assert.equal(stateOf(data, bob), 'left');
    assert.notEqual(data.call.state, 'ended', 'alice and carol are still in the call');

    await deliver(webhookBody('room_finished', call.roomId));
    data = await getCall(alice, call.id);
    assert.equal(data.call.state, 'ended');
    assert.deepEqual((await rest(server, 'GET', '/api/v1/calls/active', alice)).body.data.calls, []);
  });

  test('a webhook for a room that is not a call of Huddle is accepted and ignored', async () => {
    await deliver(webhookBody('room_finished', 'someone-elses-room'));
  });
});
