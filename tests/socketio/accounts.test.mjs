// Accounts (AUTH_ACCOUNTS=true, issue 17) end to end: register, log in and refresh
// over REST; the access token a login hands out works on REST and connects to
// Socket.IO; a refresh token presented twice is refused with its whole family; wrong
// passwords get the same answer as unknown usernames and lock the account after five.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { next, request, startServer, uid } from './harness.mjs';

const PASSWORD = 'correct horse battery staple';

let server;
before(async () => {
  server = await startServer({ AUTH_ACCOUNTS: 'true' });
});
after(async () => {
  await server?.stop();
});

/** `POST /api/v1/auth/<what>` without a token; resolves to { status, body, headers }. */
const auth = (what, body, on = server) => on.rest('POST', `/api/v1/auth/${what}`, null, body);

/** A REST call bearing `accessToken`. */
const bearing = (accessToken, method, path, body) => server.rest(method, path, null, body, { bearer: accessToken });

/** The claims of a JWT. */
const claims = (jwt) => JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url'));

/** Checks an answer of register, login or refresh (`status`); resolves to its data. */
function session({ status, body }, expected) {
  assert.equal(status, expected, JSON.stringify(body));
  const { user, accessToken, refreshToken, expiresIn } = body.data;
  assert.equal(user.role, 'customer', JSON.stringify(user));
  assert.equal(expiresIn, 900, 'ACCESS_TOKEN_TTL defaults to 900 s');
  const { sub, role, exp } = claims(accessToken);
  assert.deepEqual([sub, role], [user.userId, 'customer']);
  assert.ok(Math.abs(exp - Date.now() / 1000 - expiresIn) < 10, `exp ${exp}`);
  assert.ok(typeof refreshToken === 'string' && refreshToken.length >= 40, JSON.stringify(refreshToken));
  return body.data;
}

/** Registers a fresh account; resolves to { username, ...session }. */
async function register(displayName) {
  const username = uid('ada');
  return { username, ...session(await auth('register', { username, password: PASSWORD, displayName }), 201) };
}

/** An error answer with `status` and `code`. */
function refused({ status, body }, expected, code) {
  assert.equal(status, expected, JSON.stringify(body));
  assert.equal(body.success, false, JSON.stringify(body));
  if (code) assert.equal(body.error.code, code, JSON.stringify(body));
  return body.error;
}

describe('accounts', () => {
  test('register, log in, refresh: the access token works on REST and connects to Socket.IO', async () => {
    const username = uid('ada');
    // Self-registration makes customers, whatever the body says.
    const registered = session(await auth('register', { username, password: PASSWORD, displayName: 'Ada L', role: 'admin' }), 201);
    const { userId } = registered.user;
    assert.deepEqual([registered.user.username, registered.user.displayName], [username, 'Ada L']);
    assert.notEqual(userId, username);
    refused(await auth('register', { username, password: PASSWORD }), 409);

    const login = session(await auth('login', { username, password: PASSWORD }), 200);
    assert.equal(login.user.userId, userId);
    assert.notEqual(login.refreshToken, registered.refreshToken);

    const profile = await bearing(login.accessToken, 'GET', '/api/v1/users/profile');
    assert.equal(profile.status, 200, JSON.stringify(profile.body));
    const { profile: mine } = profile.body.data;
    assert.deepEqual([mine.userId, mine.username, mine.role], [userId, username, 'customer']);
    const active = await bearing(login.accessToken, 'GET', '/api/v1/calls/active');
    assert.deepEqual([active.status, active.body.data.calls], [200, []]);

    // On Socket.IO the account is who it says: its call rings Bob as from Ada.
    const ada = await server.connect(null, { auth: { token: login.accessToken } });
    const bobId = uid('bob');
    const bob = await server.connect(bobId);
    const ring = next(bob, 'call:incoming');
    const ack = await request(ada, 'call:invite', { type: 'audio', participantIds: [bobId] });
    assert.equal(ack.ok, true, JSON.stringify(ack));
    const { invitation } = await ring;
    assert.deepEqual([invitation.from.userId, invitation.from.displayName], [userId, 'Ada L']);

    const refreshed = session(await auth('refresh', { refreshToken: login.refreshToken }), 200);
    assert.equal(refreshed.user.userId, userId);
    assert.notEqual(refreshed.refreshToken, login.refreshToken);
    const again = await bearing(refreshed.accessToken, 'GET', '/api/v1/users/profile');
    assert.deepEqual([again.status, again.body.data?.profile?.userId], [200, userId]);
    await server.connect(null, { auth: { token: refreshed.accessToken } });
  });

  test('a refresh token presented twice is refused, and so is the rest of its family; other sessions go on', async () => {
    const first = await register();
    const second = session(await auth('refresh', { refreshToken: first.refreshToken }), 200);
    refused(await auth('refresh', { refreshToken: first.refreshToken }), 401, 'REFRESH_TOKEN_REUSED');
    refused(await auth('refresh', { refreshToken: second.refreshToken }), 401, 'REFRESH_TOKEN_REUSED');
    refused(await auth('refresh', { refreshToken: 'not-a-refresh-token-0123456789-abcdefghijkl' }), 401);
    // A login starts a family of its own.
    const login = session(await auth('login', { username: first.username, password: PASSWORD }), 200);
    session(await auth('refresh', { refreshToken: login.refreshToken }), 200);
  });

  test('a wrong password is answered like an unknown username; five lock the account, not the others', async () => {
    const ada = await register();
    const other = await register();
    const unknown = refused(await auth('login', { username: uid('nobody'), password: PASSWORD }), 401, 'INVALID_CREDENTIALS');
    for (let i = 0; i < 5; i++) {
      const wrong = refused(await auth('login', { username: ada.username, password: `${PASSWORD}!` }), 401, 'INVALID_CREDENTIALS');
      assert.equal(wrong.message, unknown.message);
    }
    const answer = await auth('login', { username: ada.username, password: PASSWORD });
    const locked = refused(answer, 429, 'TOO_MANY_ATTEMPTS');
    const retryAfter = locked.retryAfter ?? Number(answer.headers.get('retry-after'));
    assert.ok(retryAfter > 0 && retryAfter <= 15 * 60, `retryAfter ${retryAfter}`);
    session(await auth('login', { username: other.username, password: PASSWORD }), 200);
  });

  test('usernames and passwords are checked', async () => {
    const short = refused(await auth('register', { username: uid('ada'), password: 'short' }), 400, 'VALIDATION_ERROR');
    assert.equal(short.field, 'password');
    const spaced = refused(await auth('register', { username: 'ada lovelace', password: PASSWORD }), 400, 'VALIDATION_ERROR');
    assert.equal(spaced.field, 'username');
  });

  test('without AUTH_ACCOUNTS the routes answer 404 ACCOUNTS_DISABLED', async (t) => {
    const plain = await startServer();
    t.after(() => plain.stop());
    for (const what of ['register', 'login', 'refresh']) {
      const body = { username: uid('ada'), password: PASSWORD, refreshToken: 'x'.repeat(43) };
      refused(await auth(what, body, plain), 404, 'ACCOUNTS_DISABLED');
    }
  });
});
