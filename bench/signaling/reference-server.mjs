// The Node reference for the signaling benchmark: socket.io 4.8 doing the same work
// as Huddle on the measured paths: an HS256 token check at connect, a room per user,
// `echo` answered through the ack, and `webrtc:ice_candidate` relayed to a fellow
// member of the call after a membership check (in memory, as Huddle's live cache).
// Prints "listening PORT" when ready.

import { createHmac, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { Server } from 'socket.io';

const secret = process.env.JWT_SECRET;
const calls = new Map(
  Object.entries(JSON.parse(readFileSync(process.env.CALLS_FILE, 'utf8'))).map(([id, users]) => [id, new Set(users)]),
);

/** The token's subject, or null if it is not a valid, unexpired HS256 token. */
function verify(token) {
  if (typeof token !== 'string') return null;
  const [header, payload, signature] = token.split('.');
  if (!signature) return null;
  if (JSON.parse(Buffer.from(header, 'base64url')).alg !== 'HS256') return null;
  const expected = createHmac('sha256', secret).update(`${header}.${payload}`).digest();
  const given = Buffer.from(signature, 'base64url');
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return null;
  const claims = JSON.parse(Buffer.from(payload, 'base64url'));
  if (typeof claims.exp !== 'number' || claims.exp < Date.now() / 1000) return null;
  return typeof claims.sub === 'string' && claims.sub ? claims.sub : null;
}

const http = createServer();
const io = new Server(http, { transports: ['websocket'], serveClient: false });
io.use((socket, next) => {
  const user = verify(socket.handshake.auth?.token);
  if (!user) return next(new Error('invalid token'));
  socket.data.user = user;
  next();
});
io.on('connection', (socket) => {
  const user = socket.data.user;
  socket.join(`user:${user}`);
  socket.on('echo', (data, ack) => {
    if (typeof ack === 'function') ack({ ok: true, data });
  });
  socket.on('webrtc:ice_candidate', (data, ack) => {
    const members = calls.get(data?.callId);
    const target = data?.targetUserId;
    const allowed = members && members.has(user) && members.has(target) && target !== user && data.candidate;
    if (allowed) {
      socket.to(`user:${target}`).emit('webrtc:ice_candidate', { callId: data.callId, fromUserId: user, candidate: data.candidate });
    }
    if (typeof ack === 'function') ack(allowed ? { ok: true } : { ok: false, error: { code: 'NOT_A_MEMBER' } });
  });
});
http.listen(0, '127.0.0.1', () => console.log(`listening ${http.address().port}`));
