// LiveKit as Huddle's tests see it, shared by the single-node LiveKit suite
// (./livekit.test.mjs, ./recording.test.mjs) and the cluster suite
// (../cluster/livekit.test.mjs): the stand-in for LiveKit's RoomService and Egress,
// the webhook bodies LiveKit sends and their signed delivery,
// all written with LiveKit's own Node server SDK (`livekit-server-sdk`) and its
// `@livekit/protocol` types (resolved from this folder's node_modules).
//
// No LiveKit server can run on this machine, so LiveKit's RoomService and Egress are
// played by a local STAND-IN (`startRoomService` below): a plain HTTP server that
// speaks Twirp the way LiveKit does (protobuf bodies in and out, `{code,msg}` JSON
// errors), checks every request's token with the SDK's TokenVerifier and records what
// it was sent. Its egresses only keep their state: no file is written.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createServer } from 'node:http';

import {
  CreateRoomRequest,
  DeleteRoomRequest,
  EgressInfo,
  EgressStatus,
  FileInfo,
  ListEgressRequest,
  ListEgressResponse,
  ParticipantInfo,
  Room,
  RoomCompositeEgressRequest,
  RoomParticipantIdentity,
  StopEgressRequest,
  WebhookEvent,
} from '@livekit/protocol';
import { AccessToken, TokenVerifier, WebhookReceiver } from 'livekit-server-sdk';

/** The API key and secret Huddle and the stand-in share (LIVEKIT_API_KEY/LIVEKIT_API_SECRET). */
export const API_KEY = 'APIhuddleTest';
export const API_SECRET = 'livekit-test-secret-0123456789abcdef';

/** The settings pointing a Huddle server at the stand-in at `url`. */
export const livekitEnv = (url) => ({ LIVEKIT_URL: url, LIVEKIT_API_KEY: API_KEY, LIVEKIT_API_SECRET: API_SECRET });

/** The request type of each Twirp method, by service. */
const REQUESTS = {
  RoomService: {
    CreateRoom: CreateRoomRequest,
    DeleteRoom: DeleteRoomRequest,
    RemoveParticipant: RoomParticipantIdentity,
  },
  Egress: {
    StartRoomCompositeEgress: RoomCompositeEgressRequest,
    ListEgress: ListEgressRequest,
    StopEgress: StopEgressRequest,
  },
};

/** Whether an egress in `status` is still running (what ListEgress's `active` keeps). */
const running = (status) =>
  [EgressStatus.EGRESS_STARTING, EgressStatus.EGRESS_ACTIVE, EgressStatus.EGRESS_ENDING].includes(status);

/**
 * The stand-in for LiveKit's RoomService and Egress (no LiveKit server can run here).
 * Every request is recorded as { service, method, contentType, token, claims |
 * authError, body }; `failCreate` makes CreateRoom answer 500 with a Twirp error.
 * Egresses started are kept in `egresses` (EgressInfo by id): StartRoomCompositeEgress
 * makes one ACTIVE, StopEgress makes it ENDING, ListEgress lists them, and
 * `endEgress` finishes one and writes its `egress_ended` webhook.
 */
export async function startRoomService() {
  const verifier = new TokenVerifier(API_KEY, API_SECRET);
  const service = { requests: [], failCreate: false, egresses: new Map() };
  const server = createServer(async (req, res) => {
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    const raw = Buffer.concat(chunks);
    const twirpError = (status, code, msg) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ code, msg }));
    };
    const match = /^\/twirp\/livekit\.(RoomService|Egress)\/(\w+)$/.exec(req.url);
    const [name, method] = [match?.[1], match?.[2]];
    const type = REQUESTS[name]?.[method];
    const record = { service: name, method: method ?? req.url, contentType: req.headers['content-type'], token: null };
    service.requests.push(record);
    const auth = req.headers.authorization ?? '';
    record.token = auth.startsWith('Bearer ') ? auth.slice(7) : null;
    try {
      record.claims = await verifier.verify(record.token ?? '');
    } catch (e) {
      record.authError = String(e);
    }
    if (!type || req.method !== 'POST') return twirpError(404, 'bad_route', `no handler for ${req.url}`);
    try {
      record.body = type.fromBinary(new Uint8Array(raw));
    } catch (e) {
      record.bodyError = String(e);
      return twirpError(400, 'malformed', String(e));
    }
    if (record.authError) return twirpError(401, 'unauthenticated', record.authError);
    if (method === 'CreateRoom' && service.failCreate) return twirpError(500, 'internal', 'stand-in told to fail');
    if (name === 'Egress') {
      const answer = egress(method, record.body);
      if (!answer) return twirpError(404, 'not_found', 'egress not found');
      res.writeHead(200, { 'content-type': 'application/protobuf' });
      return res.end(Buffer.from(answer.toBinary()));
    }
    res.writeHead(200, { 'content-type': 'application/protobuf' });
    if (method === 'CreateRoom') {
      const room = new Room({
        sid: `RM_${record.body.name.slice(-12)}`,
        name: record.body.name,
        emptyTimeout: record.body.emptyTimeout,
        maxParticipants: record.body.maxParticipants,
        creationTime: BigInt(Math.floor(Date.now() / 1000)),
      });
      res.end(Buffer.from(room.toBinary()));
    } else {
      res.end(); // DeleteRoomResponse and RemoveParticipantResponse are empty messages
    }
  });
  /** Egress's answer to `method` with `body` (undefined: no such egress). */
  const egress = (method, body) => {
    const now = BigInt(Date.now()) * 1_000_000n;
    if (method === 'StartRoomCompositeEgress') {
      const info = new EgressInfo({
        egressId: `EG_${(service.egresses.size + 1).toString().padStart(6, '0')}`,
        roomName: body.roomName,
        status: EgressStatus.EGRESS_ACTIVE,
        startedAt: now,
        updatedAt: now,
        request: { case: 'roomComposite', value: body },
      });
      service.egresses.set(info.egressId, info);
      return info;
    }
    if (method === 'ListEgress') {
      const items = [...service.egresses.values()].filter(
        (e) =>
          (!body.roomName || e.roomName === body.roomName) &&
          (!body.egressId || e.egressId === body.egressId) &&
          (!body.active || running(e.status)),
      );
      return new ListEgressResponse({ items });
    }
    const info = service.egresses.get(body.egressId); // StopEgress
    if (!info || !running(info.status)) return undefined;
    info.status = EgressStatus.EGRESS_ENDING;
    info.updatedAt = now;
    return info;
  };
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  service.url = `http://127.0.0.1:${server.address().port}`;
  service.of = (method, room) =>
    service.requests.filter(
      (r) => r.method === method && (r.body?.name ?? r.body?.room ?? r.body?.roomName) === room,
    );
  /**
   * Finishes egress `egressId` with `status` (COMPLETE by default) as LiveKit does:
   * a COMPLETE or LIMIT_REACHED one gets its file's result ({ location, size,
   * duration in ns }), a FAILED one `error`. Returns the `egress_ended` webhook body.
   */
  service.endEgress = (egressId, { status = EgressStatus.EGRESS_COMPLETE, file, error = '' } = {}) => {
    const info = service.egresses.get(egressId);
    assert.ok(info, `no egress ${egressId}`);
    const now = BigInt(Date.now()) * 1_000_000n;
    info.status = status;
    info.endedAt = now;
    info.updatedAt = now;
    info.error = error;
    if (file) {
      const [output] = info.request.value.fileOutputs;
      info.fileResults = [
        new FileInfo({
          filename: output.filepath,
          startedAt: info.startedAt,
          endedAt: now,
          duration: BigInt(file.duration),
          size: BigInt(file.size),
          location: file.location,
        }),
      ];
    }
    return egressWebhookBody('egress_ended', info);
  };
  service.stop = () => new Promise((resolve) => server.close(resolve));
  return service;
}

/**
 * LiveKit's webhook body for `event` in `room`, as the protocol types write it. (The
 * protocol's WebhookEvent, not the SDK's subclass: the subclass's constructor resets
 * `event` to "" after the fields passed to it are set.)
 */
export function webhookBody(event, room, participant) {
  const body = new WebhookEvent({
    id: `EV_${Math.random().toString(36).slice(2, 12)}`,
    event,
    createdAt: BigInt(Math.floor(Date.now() / 1000)),
    room: new Room({ sid: 'RM_standin', name: room }),
    ...(participant ? { participant: new ParticipantInfo(participant) } : {}),
  }).toJsonString();
  assert.equal(JSON.parse(body).event, event);
  return body;
}

/** LiveKit's webhook body for `event` (`egress_started`, `egress_updated`, `egress_ended`) about egress `info`. */
export function egressWebhookBody(event, info) {
  const body = new WebhookEvent({
    id: `EV_${Math.random().toString(36).slice(2, 12)}`,
    event,
    createdAt: BigInt(Math.floor(Date.now() / 1000)),
    egressInfo: info,
  }).toJsonString();
  assert.equal(JSON.parse(body).egressInfo.egressId, info.egressId);
  return body;
}

/** The Authorization LiveKit puts on a webhook: a token of the API key whose sha256 claim is the body's digest. */
export async function sign(body, secret = API_SECRET) {
  const at = new AccessToken(API_KEY, secret);
  at.sha256 = createHash('sha256').update(body).digest('base64');
  return at.toJwt();
}

/** POSTs webhook `body` to the Huddle server at `url` (with `authorization`, if given); resolves to { status, body }. */
export async function post(url, body, authorization) {
  const headers = { 'content-type': 'application/webhook+json' };
  if (authorization !== undefined) headers.authorization = authorization;
  const response = await fetch(`${url}/webhooks/livekit`, { method: 'POST', headers, body });
  return { status: response.status, body: await response.json() };
}

/** Delivers webhook `body` to the Huddle server at `url` signed as LiveKit signs it; Huddle must accept it. */
export async function deliver(url, body) {
  const authorization = await sign(body);
  // What Huddle is sent is what LiveKit's own receiver accepts.
  const received = await new WebhookReceiver(API_KEY, API_SECRET).receive(body, authorization);
  assert.equal(received.event, JSON.parse(body).event);
  const res = await post(url, body, authorization);
  assert.equal(res.status, 200, JSON.stringify(res.body));
  assert.deepEqual(res.body, { success: true });
}
