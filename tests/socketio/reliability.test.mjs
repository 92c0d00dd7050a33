// Faults and abuse, with the official socket.io client against the real binary:
// crash and restart recovery, shutdown under load, no silent loss on a socket, and
// the limits on ringing people.

import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';

import { io } from 'socket.io-client';

import { collect, next, request, scratchDir, startServer, token, uid } from './harness.mjs';

// The test's users all connect from 127.0.0.1: only the tests of the limits keep them.
const NO_RATE_LIMITS = {
  RATE_LIMIT_USER_PER_SEC: '0',
  RATE_LIMIT_IP_PER_SEC: '0',
};

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** `caller` invites the users of `sockets`, who all accept; resolves to the call id. */
async function connectedCall(caller, sockets, ids) {
  const ack = await request(caller, 'call:invite', { type: 'video', participantIds: ids });
  assert.equal(ack.ok, true, JSON.stringify(ack));
  for (const socket of sockets) {
    const accepted = await request(socket, 'call:accept', { callId: ack.call.id });
    assert.equal(accepted.ok, true, JSON.stringify(accepted));
  }
  return ack.call.id;
}

const stateOf = (call, user) => call.participants.find((p) => p.userId === user)?.connectionState;

describe('after a crash or a shutdown', () => {
  const TIMEOUT = 3;

  for (const signal of ['SIGKILL', 'SIGTERM']) {
    test(`(${signal}) whoever reconnects within CONNECTION_TIMEOUT stays, whoever does not leaves`, { timeout: 60_000 }, async () => {
      const dir = scratchDir();
      const env = { CONNECTION_TIMEOUT: String(TIMEOUT) };
      let second;
      try {
        const first = await startServer(env, { dir });
        const [alice, bob, carol] = [uid('alice'), uid('bob'), uid('carol')];
        const sockets = await Promise.all([alice, bob, carol].map((u) => first.connect(u)));
        const callId = await connectedCall(sockets[0], sockets.slice(1), [bob, carol]);
        first.child.kill(signal);
        const { code } = await first.exited;
        if (signal === 'SIGTERM') assert.equal(code, 0, first.log());
        assert.doesNotMatch(first.log(), /panicked/);

        second = await startServer(env, { dir });
        const back = { alice: await second.connect(alice), bob: await second.connect(bob) };
        const left = await next(back.alice, 'call:participant_left', () => true, (TIMEOUT + 4) * 1000);
        assert.deepEqual(left, { callId, userId: carol });
        const seen = (await second.rest('GET', `/api/v1/calls/${callId}`, alice)).body.data;
        assert.equal(seen.call.state, 'connected');
        assert.equal(stateOf(seen, alice), 'connected');
        assert.equal(stateOf(seen, bob), 'connected');
        assert.equal(stateOf(seen, carol), 'left');
        const noticed = await collect(back.bob, 'call:participant_left', 1500);
        assert.deepEqual(noticed, [], 'those who came back went unnoticed');
      } finally {
        await second?.stop();
        rmSync(dir, { recursive: true, force: true });
      }
    });
  }

  test('a call whose other member never comes back ends', { timeout: 60_000 }, async () => {
    const dir = scratchDir();
    const env = { CONNECTION_TIMEOUT: String(TIMEOUT) };
    let second;
    try {
      const first = await startServer(env, { dir });
      const [alice, bob] = [uid('alice'), uid('bob')];
      const sockets = [await first.connect(alice), await first.connect(bob)];
      const callId = await connectedCall(sockets[0], [sockets[1]], [bob]);
      first.child.kill('SIGKILL');
      await first.exited;
      second = await startServer(env, { dir });
      const socket = await second.connect(alice);
      const ended = await next(socket, 'call:ended', () => true, (TIMEOUT + 4) * 1000);
      assert.equal(ended.callId, callId);
      assert.equal(ended.reason, 'normal');
    } finally {
      await second?.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('no silent loss on a socket', () => {
  let server;
  before(async () => {
    server = await startServer(NO_RATE_LIMITS);
  });
  after(async () => {
    await server.stop();
  });

  test('a burst of 10,000 events gets 10,000 answers, each its own', { timeout: 120_000 }, async () => {
    const socket = await server.connect(uid('burst'));
    const answers = await Promise.all(
      Array.from({ length: 10_000 }, (_, i) => socket.timeout(60_000).emitWithAck('echo', { i })),
    );
    assert.equal(answers.length, 10_000);
    answers.forEach((answer, i) => assert.deepEqual(answer, { ok: true, data: { i } }));
  });

  test('an event sent the moment `connect` fires is answered, on every one of 200 sockets', { timeout: 60_000 }, async () => {
    const answers = await Promise.all(Array.from({ length: 200 }, (_, i) => new Promise((resolve, reject) => {
      const socket = io(server.url, {
        auth: { token: token(uid('eager')) }, transports: ['websocket'], reconnection: false, forceNew: true,
      });
      socket.on('connect', () => {
        socket.timeout(10_000).emitWithAck('echo', { i }).then((answer) => {
          socket.disconnect();
          resolve(answer);
        }, reject);
      });
      socket.on('connect_error', reject);
    })));
    answers.forEach((answer, i) => assert.deepEqual(answer, { ok: true, data: { i } }));
  });

  test('numbers come back exactly as sent', async () => {
    const socket = await server.connect(uid('floats'));
    const sent = Array.from({ length: 1000 }, () => Math.random());
    const answer = await request(socket, 'echo', { sent });
    assert.deepEqual(answer.data.sent, sent);
  });

  test('1,000 relayed ICE candidates are each acknowledged and delivered in order', { timeout: 60_000 }, async () => {
    const [alice, bob] = [uid('alice'), uid('bob')];
    const a = await server.connect(alice);
    const b = await server.connect(bob);
    const callId = await connectedCall(a, [b], [bob]);
    const received = [];
    b.on('webrtc:ice_candidate', (m) => received.push(m.candidate.sdpMLineIndex));
    const acks = await Promise.all(
      Array.from({ length: 1000 }, (_, i) => a.timeout(30_000).emitWithAck('webrtc:ice_candidate', {
        callId, targetUserId: bob, candidate: { candidate: 'candidate:1 1 udp 1 127.0.0.1 9 typ host', sdpMLineIndex: i },
      })),
    );
    assert.ok(acks.every((ack) => ack.ok === true), JSON.stringify(acks.find((ack) => !ack.ok)));
    for (let waited = 0; received.length < 1000 && waited < 5000; waited += 50) await sleep(50);
    assert.deepEqual(received, Array.from({ length: 1000 }, (_, i) => i));
  });

  test("2,000 toggles sent at once by one socket all apply, in the order sent", { timeout: 60_000 }, async () => {
    const [alice, bob] = [uid('alice'), uid('bob')];
    const a = await server.connect(alice);
    const b = await server.connect(bob);
    const callId = await connectedCall(a, [b], [bob]);
    const acks = await Promise.all(
      Array.from({ length: 2000 }, (_, i) => b.timeout(60_000).emitWithAck('call:toggle_audio', { callId, enabled: i % 2 === 1 })),
    );
    acks.forEach((ack, i) => {
      assert.equal(ack.ok, true, JSON.stringify(ack));
      assert.equal(ack.participant.audioEnabled, i % 2 === 1, `toggle ${i}`);
    });
    const seen = (await server.rest('GET', `/api/v1/calls/${callId}`, bob)).body.data;
    assert.equal(seen.participants.find((p) => p.userId === bob).audioEnabled, true, 'the last one sent wins');
  });
});

describe('limits', () => {
  let server;
  before(async () => {
    server = await startServer();
  });
  after(async () => {
    await server.stop();
  });

  test('past the rate limit every event is still answered: RATE_LIMITED with retryAfter', { timeout: 60_000 }, async () => {
    const socket = await server.connect(uid('eager'));
    const answers = await Promise.all(
      Array.from({ length: 300 }, (_, i) => socket.timeout(30_000).emitWithAck('echo', { i })),
    );
    const limited = answers.filter((a) => a.ok === false);
    assert.ok(limited.length >= 150, `${limited.length} of 300 refused`);
    for (const answer of limited) {
      assert.equal(answer.error.code, 'RATE_LIMITED');
      assert.ok(answer.error.retryAfter >= 1, JSON.stringify(answer));
    }
    answers.filter((a) => a.ok).forEach((a) => assert.equal(typeof a.data.i, 'number'));
  });

  test('a user is rung by at most RINGING_LIMIT calls at once', async () => {
    const bob = uid('bob');
    const b = await server.connect(bob);
    const rings = collect(b, 'call:incoming', 2000);
    const callers = await Promise.all([1, 2, 3, 4].map(() => server.connect(uid('caller'))));
    for (const caller of callers.slice(0, 3)) {
      const ack = await request(caller, 'call:invite', { type: 'audio', participantIds: [bob] });
      assert.equal(ack.ok, true, JSON.stringify(ack));
    }
    const refused = await request(callers[3], 'call:invite', { type: 'audio', participantIds: [bob] });
    assert.equal(refused.ok, false);
    assert.equal(refused.error.code, 'RINGING_LIMIT');
    assert.equal((await rings).length, 3);
  });

  test('whoever declined is not rung again by that caller during the cooldown', async () => {
    const [alice, bob] = [uid('alice'), uid('bob')];
    const a = await server.connect(alice);
    const b = await server.connect(bob);
    const rings = collect(b, 'call:incoming', 2000);
    const first = await request(a, 'call:invite', { type: 'video', participantIds: [bob] });
    assert.equal((await request(b, 'call:decline', { callId: first.call.id })).ok, true);
    for (let i = 0; i < 5; i++) {
      const again = await request(a, 'call:invite', { type: 'video', participantIds: [bob] });
      assert.equal(again.error?.code, 'DECLINED_RECENTLY', JSON.stringify(again));
      assert.ok(again.error.retryAfter >= 1);
    }
    assert.equal((await rings).length, 1, 'rung once');
  });

  test('someone already in a call is rung with call waiting (inCall: true)', async () => {
    const [alice, bob, carol, dave] = [uid('alice'), uid('bob'), uid('carol'), uid('dave')];
    const [a, b, c, d] = await Promise.all([alice, bob, carol, dave].map((u) => server.connect(u)));
    await connectedCall(c, [b], [bob]);
    const waiting = next(b, 'call:incoming');
    const free = next(d, 'call:incoming');
    const ack = await request(a, 'call:invite', { type: 'video', participantIds: [bob, dave] });
    assert.equal(ack.ok, true, JSON.stringify(ack));
    assert.equal((await waiting).inCall, true);
    assert.equal((await free).inCall, false);
  });
});

describe('shutdown under load', () => {
  test('SIGTERM answers what is in flight, refuses the rest, and exits 0 without a panic', { timeout: 90_000 }, async () => {
    const server = await startServer({ ...NO_RATE_LIMITS, DRAIN_TIMEOUT: '10' });
    const losses = [];
    let sigterm = Infinity;
    const counts = { ok: 0, refused: 0, acks: 0, shuttingDown: 0 };

    // Hundreds of sockets, each sending an event with an acknowledgement in a loop.
    const sockets = await Promise.all(Array.from({ length: 300 }, () => server.connect(uid('load'))));
    const socketLoops = sockets.map(async (socket) => {
      while (socket.connected) {
        const sent = Date.now();
        try {
          const ack = await socket.timeout(15_000).emitWithAck('echo', { sent });
          counts.acks += 1;
          if (ack.ok === false) {
            assert.equal(ack.error.code, 'SHUTTING_DOWN', JSON.stringify(ack));
            counts.shuttingDown += 1;
            return;
          }
        } catch (e) {
          if (sent < sigterm) losses.push(`event sent before SIGTERM unanswered: ${e.message}`);
          return;
        }
        await sleep(100);
      }
    });
    // A steady stream of REST requests on keep-alive connections.
    const users = Array.from({ length: 8 }, () => uid('rest'));
    const restLoops = users.map(async (user) => {
      for (;;) {
        try {
          const { status, body } = await server.rest('GET', '/api/v1/calls/active', user);
          if (status === 503) {
            assert.equal(body.error.code, 'SHUTTING_DOWN');
            counts.refused += 1;
            return;
          }
          assert.equal(status, 200, JSON.stringify(body));
          counts.ok += 1;
        } catch (e) {
          const code = e.cause?.code;
          if (code !== 'ECONNREFUSED') losses.push(`request lost: ${e.message} (${code})`);
          return;
        }
      }
    });

    await sleep(1500);
    sigterm = Date.now();
    server.child.kill('SIGTERM');
    const { code } = await server.exited;
    const took = Date.now() - sigterm;
    await Promise.all([...socketLoops, ...restLoops]);

    assert.deepEqual(losses, []);
    assert.equal(code, 0, server.log());
    assert.doesNotMatch(server.log(), /panicked/);
    assert.ok(took < 12_000, `exit took ${took} ms`);
    assert.ok(counts.ok > 0 && counts.acks > 0, JSON.stringify(counts));
    console.log(`shutdown under load: ${JSON.stringify(counts)}, exit after ${took} ms`);
    await server.stop();
  });
});
