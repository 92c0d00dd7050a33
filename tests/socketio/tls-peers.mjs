// Driven by tests/tls.rs (not a suite of its own): Socket.IO over TLS with the
// official client, trusting only the test CA it is given (the `ca` option).
//   node tls-peers.mjs URL CA_FILE ALICE_TOKEN BOB_TOKEN CAROL_TOKEN
// alice connects over WSS, bob over HTTPS long-polling only; alice rings bob. The script prints one JSON line, then waits for a line on stdin (the test
// swaps the server's certificate meanwhile); then bob accepts on the same sockets,
// carol connects afresh, and it prints a second JSON line and exits 0. Any failure
// exits 1 with the reason on stderr.

import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { io } from 'socket.io-client';

const [url, caFile, aliceToken, bobToken, carolToken] = process.argv.slice(2);
const ca = readFileSync(caFile);
const TIMEOUT = 10_000;

const connect = (token, transports) =>
  new Promise((resolve, reject) => {
    const socket = io(url, { auth: { token }, ca, transports, reconnection: false, forceNew: true });
    socket.once('connect', () => resolve(socket));
    socket.once('connect_error', reject);
  });

const next = (socket, event) =>
  new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${event} within ${TIMEOUT} ms`)), TIMEOUT);
    socket.once(event, (payload) => {
      clearTimeout(timer);
      resolve(payload);
    });
  });

const transport = (socket) => socket.io.engine.transport.name;

try {
  const alice = await connect(aliceToken, ['websocket']);
  const bob = await connect(bobToken, ['polling']);
  const bobId = JSON.parse(Buffer.from(bobToken.split('.')[1], 'base64url')).sub;
  const ring = next(bob, 'call:incoming');
  const invited = await alice.timeout(TIMEOUT).emitWithAck('call:invite', { type: 'audio', participantIds: [bobId] });
  const incoming = await ring;
  console.log(JSON.stringify({
    invited: invited.ok,
    callId: invited.call?.id,
    rang: incoming.callId,
    iceServers: invited.iceServers,
    transports: [transport(alice), transport(bob)],
  }));

  const lines = createInterface({ input: process.stdin });
  await new Promise((resolve) => lines.once('line', resolve));
  lines.close();

  const accepted = next(alice, 'call:accepted');
  const ack = await bob.timeout(TIMEOUT).emitWithAck('call:accept', { callId: invited.call.id });
  const heard = await accepted;
  const carol = await connect(carolToken, ['websocket']);
  console.log(JSON.stringify({
    accepted: ack.ok,
    state: ack.call?.state,
    heardBy: heard.userId,
    stillConnected: [alice.connected, bob.connected],
    transports: [transport(alice), transport(bob)],
    carolConnected: carol.connected,
  }));
  for (const socket of [alice, bob, carol]) socket.disconnect();
  process.exit(0);
} catch (e) {
  console.error(`tls-peers: ${e?.stack ?? e}`);
  process.exit(1);
}
