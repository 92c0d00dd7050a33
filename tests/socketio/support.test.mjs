// Support lines (issue 17) with three customers and two representatives, driven over
// REST and the official socket.io client: positions and estimates move as others are
// served, assignments follow the order of the line, a representative who declines or
// lets it ring out is skipped, a customer who drops is abandoned, a callback rings the
// customer, and feedback is taken once per participant of an ended call. Each test has
// a server of its own (the default queue is shared by everyone on a server);
// CONNECTION_TIMEOUT and RINGING_TIMEOUT are the harness's (the shortest allowed).

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { CONNECTION_TIMEOUT, RINGING_TIMEOUT, sleep, startServer } from './harness.mjs';
import { Person, QUEUE, assignment, hangUp } from './support.mjs';

/** A fresh server for test `t`, stopped after it; `people(role, ...names)` connects people to it. */
async function line(t) {
  const server = await startServer();
  t.after(() => server.stop());
  return (role, ...names) => Promise.all(names.map((name) => Person.connect(server, name, role)));
}

/** Joins `customers` one after another; resolves to their entries. */
async function joinInOrder(customers) {
  const entries = [];
  for (const customer of customers) entries.push(await customer.join());
  return entries;
}

/** `POST /queue/callback` as `customer` (200 or 201: the contract names neither); resolves to the entry. */
async function askCallback(customer, body) {
  const { status, body: answer } = await customer.rest('POST', '/api/v1/queue/callback', body);
  assert.ok([200, 201].includes(status), `${status} ${JSON.stringify(answer)}`);
  return answer.data;
}

/** Long enough for the sweeper (every second) to act on an expired CONNECTION_TIMEOUT. */
const PAST_CONNECTION_TIMEOUT = CONNECTION_TIMEOUT * 1000 + 4000;

describe('three customers and two representatives', () => {
  test('positions and estimates update as others are served; assignments follow the order, the longest idle first', async (t) => {
    const people = await line(t);
    const [r1, r2] = await people('representative', 'rep1', 'rep2');
    const [c1, c2, c3] = await people('customer', 'c1', 'c2', 'c3');
    const entries = await joinInOrder([c1, c2, c3]);
    assert.deepEqual(entries.map((e) => e.position), [1, 2, 3]);
    for (const entry of entries) {
      assert.equal(entry.queue, QUEUE);
      assert.equal(entry.status, 'waiting');
      assert.equal(entry.callback, false);
      assert.ok(Number.isInteger(entry.estimatedWaitSeconds) && entry.estimatedWaitSeconds >= 0, JSON.stringify(entry));
    }
    const waits = entries.map((e) => e.estimatedWaitSeconds);
    assert.ok(waits[0] <= waits[1] && waits[1] <= waits[2] && waits[0] < waits[2], `estimates by position: ${waits}`);
    const position = await c2.ok('GET', '/api/v1/queue/position');
    assert.equal(position.entryId, entries[1].entryId);
    assert.equal(position.position, 2);
    // Representatives hear the line grow.
    const update = await r2.take('queue:update', (d) => d.queue === QUEUE && d.length === 3);
    assert.equal(update.availableRepresentatives, 0, JSON.stringify(update));
    assert.ok(update.longestWaitSeconds >= 0, JSON.stringify(update));

    // rep1 comes: the first in line is theirs; the others move up, their estimates down.
    const since = r2.seen.length;
    await r1.setAvailability('available');
    const first = await assignment(r1, c1);
    assert.equal(first.entryId, entries[0].entryId);
    const [up2, up3] = await Promise.all([
      c2.take('queue:position_update', (d) => d.position === 1),
      c3.take('queue:position_update', (d) => d.position === 2),
    ]);
    assert.deepEqual([up2.entryId, up2.queue, up3.entryId, up3.queue], [entries[1].entryId, QUEUE, entries[2].entryId, QUEUE]);
    assert.ok(up2.estimatedWaitSeconds < waits[1], `c2's estimate: ${waits[1]} s, then ${up2.estimatedWaitSeconds} s`);
    assert.ok(up3.estimatedWaitSeconds < waits[2], `c3's estimate: ${waits[2]} s, then ${up3.estimatedWaitSeconds} s`);
    assert.ok(up2.estimatedWaitSeconds <= up3.estimatedWaitSeconds);
    await r2.take('queue:update', (d) => d.queue === QUEUE && d.length === 2, { since });
    await r1.act('call:accept', { callId: first.callId });

    // rep2 comes while rep1 is busy: the next in line is theirs.
    await r2.setAvailability('available');
    const second = await assignment(r2, c2);
    await c3.take('queue:position_update', (d) => d.position === 1);
    await r2.act('call:accept', { callId: second.callId });

    // c1 hangs up: rep1 is free and takes c3.
    await hangUp(c1, r1, first.callId);
    const third = await assignment(r1, c3);
    await r1.act('call:accept', { callId: third.callId });
    await hangUp(r2, c2, second.callId); // rep2 idle from now
    await sleep(50);
    await hangUp(r1, c3, third.callId); // rep1 idle from later

    await r1.lineStats({ served: 3, waiting: 0, abandoned: 0 });
    for (const c of [c1, c2, c3]) await c.outOfLine();

    // c1 comes back: rep2 has been idle longer than rep1.
    const again = await c1.join();
    assert.equal(again.position, 1);
    assert.notEqual(again.entryId, entries[0].entryId);
    await assignment(r2, c1);

    assert.deepEqual(r1.of('call:assigned').map((a) => a.customerId), [c1.id, c3.id]);
    assert.deepEqual(r2.of('call:assigned').map((a) => a.customerId), [c2.id, c1.id]);
    assert.deepEqual([c1, c2, c3].map((c) => c.of('queue:your_turn').length), [2, 1, 1]);
  });

  const skips = {
    declines: (rep, callId) => rep.act('call:decline', { callId }),
    'lets it ring out': () => {},
  };
  for (const [how, skip] of Object.entries(skips)) {
    test(`a representative who ${how} is skipped and busy; the customer keeps their place and is served by the other`, async (t) => {
      const people = await line(t);
      const [r1, r2] = await people('representative', 'rep1', 'rep2');
      const [c1, c2] = await people('customer', 'c1', 'c2');
      await r1.setAvailability('available');
      const e1 = await c1.join();
      const first = await assignment(r1, c1);
      const e2 = await c2.join();
      assert.equal(e2.position, 1, 'c1 is no longer waiting while assigned');

      await skip(r1, first.callId);
      const ringing = RINGING_TIMEOUT * 1000 + 3000;
      const [ended] = await Promise.all([r1, c1].map((p) => p.take('call:ended', (d) => d.callId === first.callId, { ms: ringing })));
      assert.equal(ended.reason, how === 'declines' ? 'declined' : 'missed', JSON.stringify(ended));
      // c1 is back in line ahead of c2, and rep1 is busy until they say otherwise.
      await c2.take('queue:position_update', (d) => d.position === 2);
      const back = await c1.ok('GET', '/api/v1/queue/position');
      assert.deepEqual([back.entryId, back.position, back.status], [e1.entryId, 1, 'waiting']);
      await r1.availabilityIs('busy');

      await r2.setAvailability('available');
      const second = await assignment(r2, c1);
      assert.equal(second.entryId, e1.entryId);
      await r2.act('call:accept', { callId: second.callId });
      await sleep(500);
      assert.equal(r1.of('call:assigned').length, 1, 'a busy representative is assigned nobody');

      await r1.setAvailability('available');
      const third = await assignment(r1, c2);
      assert.equal(third.entryId, e2.entryId);
      assert.deepEqual([c1, c2].map((c) => c.of('queue:your_turn').length), [2, 1]);
      assert.equal(r2.of('call:assigned').length, 1);
    });
  }

  test('a customer whose sockets are gone past CONNECTION_TIMEOUT is abandoned; one who comes back in time is not', async (t) => {
    const people = await line(t);
    const [r1] = await people('representative', 'rep1');
    const [c1, c2, c3] = await people('customer', 'c1', 'c2', 'c3');
    await joinInOrder([c1, c2, c3]);
    c1.disconnect();
    c2.disconnect();
    await sleep(200);
    await c2.connect();
    const [up2, up3] = await Promise.all([
      c2.take('queue:position_update', (d) => d.position === 1, { ms: PAST_CONNECTION_TIMEOUT }),
      c3.take('queue:position_update', (d) => d.position === 2, { ms: PAST_CONNECTION_TIMEOUT }),
    ]);
    assert.equal(up2.queue, QUEUE);
    assert.equal(up3.queue, QUEUE);
    await c1.outOfLine();
    assert.equal((await c2.ok('GET', '/api/v1/queue/position')).position, 1);
    await r1.lineStats({ waiting: 2, abandoned: 1, served: 0 });
    assert.equal(c1.of('queue:your_turn').length, 0);
  });

  test('a callback request keeps the place through a dropped connection and is called back; one nobody answers is missed', async (t) => {
    const people = await line(t);
    const [r1] = await people('representative', 'rep1');
    const [c1, c2] = await people('customer', 'c1', 'c2');
    const entry = await c1.join();
    const kept = await askCallback(c1, {});
    assert.deepEqual([kept.entryId, kept.position, kept.callback, kept.status], [entry.entryId, 1, true, 'waiting']);
    // Not in the line yet: asking for a callback joins it.
    const joined = await askCallback(c2, { type: 'audio' });
    assert.deepEqual([joined.position, joined.callback, joined.status], [2, true, 'waiting']);

    c1.disconnect();
    c2.disconnect();
    await sleep(PAST_CONNECTION_TIMEOUT);
    const still = await c1.ok('GET', '/api/v1/queue/position');
    assert.deepEqual([still.position, still.callback], [1, true], 'a callback is not abandoned');
    await r1.lineStats({ callbacksPending: 2, abandoned: 0 });

    // c1 is back online when rep1 frees up: the call rings c1.
    await c1.connect();
    await r1.setAvailability('available');
    const back = await assignment(r1, c1, { callback: true });
    assert.equal(back.entryId, entry.entryId);
    await c1.act('call:accept', { callId: back.callId });
    await hangUp(r1, c1, back.callId);
    await c1.outOfLine();

    // c2 is not: the callback rings out, and rep1 stays available.
    const missed = await r1.take('call:assigned', (d) => d.customerId === c2.id);
    assert.equal(missed.callback, true);
    const ended = await r1.take('call:ended', (d) => d.callId === missed.callId, { ms: RINGING_TIMEOUT * 1000 + 3000 });
    assert.equal(ended.reason, 'missed', JSON.stringify(ended));
    await c2.outOfLine();
    await r1.lineStats({ served: 1, callbacksPending: 0, waiting: 0 });
    await r1.availabilityIs('available');
  });

  test('feedback: by a participant of an ended call, once; in the call details and the statistics', async (t) => {
    const people = await line(t);
    const [r1] = await people('representative', 'rep1');
    const [c1, outsider] = await people('customer', 'c1', 'outsider');
    await r1.setAvailability('available');
    await c1.join({ type: 'video' });
    const { callId, assigned } = await assignment(r1, c1);
    assert.equal(assigned.callType, 'video');
    await r1.act('call:accept', { callId });
    const path = `/api/v1/calls/${callId}/feedback`;
    await c1.refused('POST', path, { rating: 4 }, 409, 'CALL_NOT_ENDED');
    await outsider.refused('POST', path, { rating: 1 }, 403, 'NOT_A_MEMBER');

    await hangUp(r1, c1, callId);
    await outsider.refused('POST', path, { rating: 1 }, 403, 'NOT_A_MEMBER');
    const invalid = await c1.refused('POST', path, { rating: 6 }, 400, 'VALIDATION_ERROR');
    assert.equal(invalid.field, 'rating');
    const given = { rating: 4, comment: 'quick and kind', categories: ['speed', 'courtesy'] };
    const { feedback } = await c1.ok('POST', path, given, 201);
    assert.deepEqual([feedback.userId, feedback.rating, feedback.comment, feedback.categories], [c1.id, 4, given.comment, given.categories]);
    await c1.refused('POST', path, { rating: 5 }, 409, 'FEEDBACK_EXISTS');
    await r1.ok('POST', path, { rating: 5 }, 201);

    const details = await c1.ok('GET', `/api/v1/calls/${callId}`);
    assert.deepEqual(details.feedback.map((f) => [f.userId, f.rating]).sort(), [[c1.id, 4], [r1.id, 5]].sort());
    const mine = details.feedback.find((f) => f.userId === c1.id);
    assert.deepEqual([mine.comment, mine.categories], [given.comment, given.categories]);
    const { stats } = await r1.lineStats({ served: 1 });
    const rep = stats.representatives.find((r) => r.userId === r1.id);
    assert.deepEqual([rep.callsHandled, rep.averageRating], [1, 4], JSON.stringify(rep));
    const callStats = await c1.ok('GET', '/api/v1/calls/stats');
    assert.ok(callStats.averageRating >= 4 && callStats.averageRating <= 5, JSON.stringify(callStats));
  });
});
