// Support lines (issue 17) as their users see them: customers who queue and
// representatives who answer, each with a socket that records what it receives and
// REST calls under their own token (with the `role` claim). Shared by the single-node
// suite (support.test.mjs) and the cluster suite (../cluster/support.test.mjs): a
// person lives on `at`, a server from `startServer` or a cluster node (`Cluster.at`).

import assert from 'node:assert/strict';

import { arrival, eventually, of, record, request, sleep, uid } from './harness.mjs';

export const QUEUE = 'default';

/** A customer or a representative, with a socket on `at` recording what it receives. */
export class Person {
  /** A person named after `name` with role `role`, connected to `at`. */
  static async connect(at, name, role = 'customer') {
    const person = new Person(at, uid(name), role);
    await person.connect();
    return person;
  }

  constructor(at, id, role) {
    this.at = at;
    this.id = id;
    this.role = role;
    this.seen = []; // every event of every socket this person had, in order, with when it came
    this.taken = new Set(); // the records `take` handed out already
  }

  /** Connects a (new) socket to `at`; what it receives goes on `seen`. */
  async connect() {
    this.socket = await this.at.connect(this.id, { role: this.role });
    record(this.socket, this.seen, { stamped: true });
    return this;
  }

  disconnect() {
    this.socket.disconnect();
  }

  /** A REST call as this person; resolves to { status, body, headers }. */
  rest(method, path, body) {
    return this.at.rest(method, path, this.id, body, { role: this.role });
  }

  /** A REST call that must answer `status`; resolves to its `data`. */
  async ok(method, path, body, status = 200) {
    const { status: got, body: answer } = await this.rest(method, path, body);
    assert.equal(got, status, `${method} ${path} as ${this.id}: ${JSON.stringify(answer)}`);
    assert.equal(answer.success, true, JSON.stringify(answer));
    return answer.data;
  }

  /** A REST call that must be refused with `status` and error `code`; resolves to the error. */
  async refused(method, path, body, status, code) {
    const { status: got, body: answer } = await this.rest(method, path, body);
    assert.equal(got, status, `${method} ${path} as ${this.id}: ${JSON.stringify(answer)}`);
    assert.equal(answer.error?.code, code, JSON.stringify(answer));
    return answer.error;
  }

  /** Emits `event` with an acknowledgement that must be `ok`; resolves to it. */
  async act(event, data) {
    const ack = await request(this.socket, event, data);
    assert.equal(ack.ok, true, `${event} ${JSON.stringify(data)} by ${this.id}: ${JSON.stringify(ack)}`);
    return ack;
  }

  /** The records of `event` this person received (payloads passing `filter`). */
  of(event, filter) {
    return of(this.seen, event, filter).map((r) => r.data);
  }

  /**
   * The first `event` passing `filter` that no earlier `take` returned, received since
   * `since` (a length of `seen`), arrived already or arriving within `ms`.
   */
  async take(event, filter = () => true, { ms = 5000, since = 0 } = {}) {
    const match = (r, i) => i >= since && r.event === event && !this.taken.has(r) && filter(r.data);
    const record = await arrival(this.seen, match, ms, `${event} for ${this.id}`);
    this.taken.add(record);
    return record.data;
  }

  /** `POST /queue/join` (a customer); resolves to the entry. */
  join(body = { type: 'audio' }) {
    return this.ok('POST', '/api/v1/queue/join', body, 201);
  }

  /** `PUT /users/availability` (a representative); resolves to the profile, which must say `status`. */
  async setAvailability(status) {
    const { profile } = await this.ok('PUT', '/api/v1/users/availability', { status });
    assert.equal(profile.availability, status, JSON.stringify(profile));
    return profile;
  }

  /**
   * `GET /queue/stats?queue=` (a representative), once `queue`'s line has the figures
   * of `expected` (the server applies a call's end after announcing it); resolves to
   * { line, stats }.
   */
  lineStats(expected = {}, queue = QUEUE) {
    return eventually(async () => {
      const stats = await this.ok('GET', `/api/v1/queue/stats?queue=${queue}`);
      const line = stats.queues.find((q) => q.queue === queue);
      assert.ok(line, JSON.stringify(stats));
      for (const [key, value] of Object.entries(expected)) assert.equal(line[key], value, `${key}: ${JSON.stringify(line)}`);
      return { line, stats };
    });
  }

  /** Resolves once `GET /queue/position` answers 404 NOT_IN_QUEUE (served, abandoned, ...). */
  outOfLine() {
    return eventually(() => this.refused('GET', '/api/v1/queue/position', undefined, 404, 'NOT_IN_QUEUE'));
  }

  /** Resolves to the profile once it says `availability`. */
  availabilityIs(availability) {
    return eventually(async () => {
      const { profile } = await this.ok('GET', '/api/v1/users/profile');
      assert.equal(profile.availability, availability, JSON.stringify(profile));
      return profile;
    });
  }
}

/**
 * Waits for `rep` to be assigned `customer`: call:assigned to the representative, the
 * call ringing the representative (the customer, for a `callback`), queue:your_turn
 * to the customer, all about one call. Resolves to { callId, entryId, assigned, turn, incoming }.
 */
export async function assignment(rep, customer, { callback = false, ms = 5000 } = {}) {
  const assigned = await rep.take('call:assigned', (d) => d.customerId === customer.id, { ms });
  const { callId, entryId } = assigned;
  const rung = callback ? customer : rep;
  const [incoming, turn] = await Promise.all([
    rung.take('call:incoming', (d) => d.callId === callId),
    customer.take('queue:your_turn', (d) => d.callId === callId),
  ]);
  assert.equal(assigned.queue, QUEUE, JSON.stringify(assigned));
  assert.equal(assigned.callback, callback, JSON.stringify(assigned));
  assert.ok(['audio', 'video'].includes(assigned.callType), JSON.stringify(assigned));
  assert.deepEqual(turn, { entryId, queue: QUEUE, callId, representativeId: rep.id, callback });
  assert.equal(incoming.invitation.from.userId, callback ? rep.id : customer.id, JSON.stringify(incoming));
  return { callId, entryId, assigned, turn, incoming };
}

/** `person` ends call `callId`; resolves once both sides heard call:ended. */
export async function hangUp(person, other, callId) {
  await person.act('call:end', { callId });
  await Promise.all([person, other].map((p) => p.take('call:ended', (d) => d.callId === callId)));
}

// ---- a crowd: many customers, many representatives, at random ----------------------

const between = (low, high) => low + Math.random() * (high - low);

/**
 * A support line under load: `customers` customers join the default queue one after
 * another, as fast as they can (spread over `places`, a function from a person's
 * index to where they connect), while two of `reps` representatives answer; the
 * others set themselves available together once everyone is in line. Every `declineEvery`-th assignment is
 * declined (the representative, made busy by it, sets themselves available again a
 * moment later), the others answered; the call is then ended after a while by the
 * representative or, with probability `customerHangsUp`, by the customer. Resolves,
 * once every customer was served or `ms` passed, to what happened (see `checkCrowd`).
 */
export async function crowd({ places, customers: count, reps: repCount, declineEvery = 8, customerHangsUp = 0.3, ms = 40_000 }) {
  const reps = await Promise.all(Array.from({ length: repCount }, (_, i) => Person.connect(places(i), `rep${i}`, 'representative')));
  const customers = await Promise.all(Array.from({ length: count }, (_, i) => Person.connect(places(repCount + i), `customer${i}`)));
  const byId = new Map(customers.map((c) => [c.id, c]));
  const log = {
    reps,
    customers,
    joins: new Map(), // customer id → { order, entryId, position (when joining), at }
    assignments: [], // { rep, customer, callId, entryId, createdAt }
    answers: [], // { rep, customer, callId }
    declines: [], // { rep, customer, callId, at }
    doubleBookings: [], // { rep, callId, open: [call ids] }
    failures: [], // what a representative could not do
  };
  for (const rep of reps) {
    rep.open = new Set(); // the calls assigned to this rep that have not ended, as their events tell
    rep.socket.on('call:ended', ({ callId }) => rep.open.delete(callId));
    rep.socket.on('call:assigned', (assigned) => serve(rep, assigned).catch((e) => log.failures.push(`${rep.id}: ${e.stack}`)));
  }
  async function serve(rep, { callId, customerId, entryId }) {
    if (rep.open.size > 0) log.doubleBookings.push({ rep: rep.id, callId, open: [...rep.open] });
    rep.open.add(callId);
    const incoming = await rep.take('call:incoming', (d) => d.callId === callId);
    const customer = byId.get(customerId);
    const nth = log.assignments.push({ rep: rep.id, customer: customerId, callId, entryId, createdAt: Date.parse(incoming.invitation.call.createdAt) });
    await sleep(between(20, 150));
    if (nth % declineEvery === 0) {
      await rep.act('call:decline', { callId });
      rep.open.delete(callId);
      log.declines.push({ rep: rep.id, customer: customerId, callId, at: Date.now() });
      await rep.availabilityIs('busy');
      await sleep(between(50, 300));
      await rep.setAvailability('available');
      return;
    }
    await rep.act('call:accept', { callId });
    log.answers.push({ rep: rep.id, customer: customerId, callId });
    await sleep(between(100, 600));
    const ender = Math.random() < customerHangsUp ? customer : rep;
    await ender.act('call:end', { callId });
    if (ender === rep) rep.open.delete(callId);
  }

  // Two representatives serve while the line forms, the others all come at once.
  const early = reps.slice(0, 2);
  await Promise.all(early.map((rep) => rep.setAvailability('available')));
  for (const [order, customer] of customers.entries()) {
    const entry = await customer.join();
    log.joins.set(customer.id, { order, entryId: entry.entryId, position: entry.position, at: Date.now() });
  }
  await Promise.all(reps.slice(early.length).map((rep) => rep.setAvailability('available')));
  const deadline = Date.now() + ms;
  while (log.answers.length < count || reps.some((r) => r.open.size > 0)) {
    if (Date.now() > deadline || log.failures.length) break;
    await sleep(50);
  }
  return log;
}

/**
 * How far apart (ms) two things may be and still count as happening at once: two
 * dispatchers' assignments, or a client's clock reading and the server's change it
 * follows (a join's answer, a decline's acknowledgement).
 */
const SLACK = 100;

/**
 * Checks a `crowd`'s log: every customer served exactly once (one answered call each,
 * a queue:your_turn per assignment, no longer in the queue), never a representative
 * in two calls at once (by the events each received, and by the calls' times as the
 * server stored them), and customers assigned in the order they joined (a customer
 * put back after a decline keeps their place).
 */
export async function checkCrowd(log) {
  const { reps, customers, assignments, answers, declines } = log;
  assert.deepEqual(log.failures, []);
  assert.deepEqual(log.doubleBookings, [], 'a representative was assigned a call while in another');
  assert.equal(answers.length, customers.length, `${answers.length} of ${customers.length} customers were served`);
  assert.equal(assignments.length, answers.length + declines.length);
  for (const customer of customers) {
    const served = answers.filter((a) => a.customer === customer.id);
    assert.equal(served.length, 1, `${customer.id} was served ${served.length} times`);
    const mine = assignments.filter((a) => a.customer === customer.id);
    const turns = customer.of('queue:your_turn');
    assert.deepEqual(turns.map((t) => t.callId).sort(), mine.map((a) => a.callId).sort(), `${customer.id}: one queue:your_turn per assignment`);
    assert.ok(mine.every((a) => a.entryId === log.joins.get(customer.id).entryId), `${customer.id} kept one entry`);
    await customer.outOfLine();
  }
  for (const rep of reps) {
    const calls = [];
    for (const { callId } of assignments.filter((a) => a.rep === rep.id)) {
      const { call } = await rep.ok('GET', `/api/v1/calls/${callId}`);
      assert.equal(call.state, 'ended', JSON.stringify(call));
      calls.push({ callId, from: Date.parse(call.createdAt), to: Date.parse(call.endedAt) });
    }
    calls.sort((a, b) => a.from - b.from);
    for (let i = 1; i < calls.length; i++) {
      assert.ok(calls[i - 1].to <= calls[i].from, `${rep.id}'s call ${calls[i].callId} began before ${calls[i - 1].callId} ended`);
    }
    assert.equal(rep.of('call:incoming').length, calls.length, `${rep.id} was rung once per assignment`);
  }
  // The line was long enough for its order to matter.
  const longest = Math.max(...[...log.joins.values()].map((j) => j.position));
  assert.ok(longest >= customers.length / 2, `the line was ${longest} long at most`);
  assertJoinOrder(log);
}

/**
 * No customer was assigned while one who joined before them had been waiting (since
 * joining, or since being put back after a decline) for longer than SLACK and went on
 * waiting past it.
 */
function assertJoinOrder({ joins, assignments, declines, customers }) {
  const byId = new Map(customers.map((c) => [c.id, c]));
  const waits = new Map(); // customer id → their spells in the line: [{ from, to, since }]
  for (const [customer, { at }] of joins) {
    const assigned = assignments.filter((a) => a.customer === customer).map((a) => a.createdAt).sort((a, b) => a - b);
    const putBack = declines.filter((d) => d.customer === customer).map((d) => d.at).sort((a, b) => a - b);
    waits.set(customer, assigned.map((to, i) => ({ from: i === 0 ? at : putBack[i - 1], to, since: i === 0 ? 'joining' : 'a decline' })));
  }
  const skipped = [];
  for (const a of assignments) {
    const order = joins.get(a.customer).order;
    for (const [other, join] of joins) {
      if (join.order >= order) continue;
      for (const spell of waits.get(other)) {
        if (spell.from + SLACK < a.createdAt && spell.to > a.createdAt + SLACK) {
          // When the one put back heard of their place again, if they did.
          const told = byId.get(other).seen.find((r) => r.event === 'queue:position_update' && r.at > spell.from);
          const heard = told ? `, told their place ${told.at - spell.from} ms after it` : '';
          const waited = `waited since ${spell.since} (${a.createdAt - spell.from} ms before${heard}) and ${spell.to - a.createdAt} ms more`;
          skipped.push(`${a.customer} (joined #${order}) was assigned while ${other} (joined #${join.order}) ${waited}`);
        }
      }
    }
  }
  assert.deepEqual(skipped, [], 'customers were assigned out of their order');
}
