// A support line served by a three-node cluster (one PostgreSQL, one Redis), driven by
// the official socket.io client: customers and representatives spread over the nodes,
// each talking REST and Socket.IO to their own node, while every node's dispatcher
// assigns. Every customer is served exactly once, in the order they joined, no
// representative is in two calls at once, and no assignment is announced twice. See
// `crowd` and `checkCrowd` in ../socketio/support.mjs.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { eventually } from '../socketio/harness.mjs';
import { Person, checkCrowd, crowd } from '../socketio/support.mjs';
import { assertNoDuplicates, startCluster } from './harness.mjs';

const NODES = ['a', 'b', 'c'];
const CUSTOMERS = 50;
const REPS = 10;
/** Seconds a customer without sockets keeps their place (short, for the lost-node test). */
const CONNECTION_TIMEOUT = 2;

let cluster;
before(async () => {
  // Everyone connects from loopback: the per-address rate limit would count them all as one.
  cluster = await startCluster({
    ids: NODES,
    env: { RATE_LIMIT_IP_PER_SEC: '0', CONNECTION_TIMEOUT: String(CONNECTION_TIMEOUT) },
  });
});
after(async () => {
  await cluster?.stop();
});

test('three nodes, one queue: every customer served once and in order, no representative double-booked', async () => {
  const started = Date.now();
  // Representatives end their calls themselves: the end's acknowledgement, not a
  // call:ended relayed by another node, tells them they are free.
  const log = await crowd({ places: (i) => cluster.at(NODES[i % NODES.length]), customers: CUSTOMERS, reps: REPS, customerHangsUp: 0 });
  console.log(`${CUSTOMERS} customers served across nodes in ${Date.now() - started} ms: ${log.assignments.length} assignments, ${log.declines.length} declined`);
  await checkCrowd(log);

  const people = [...log.reps, ...log.customers];
  const across = log.answers.filter((a) => people.find((p) => p.id === a.rep).at.id !== people.find((p) => p.id === a.customer).at.id);
  assert.ok(across.length > 0, 'some customers were served by a representative on another node');
  const once = ['call:assigned', 'call:incoming', 'queue:your_turn', 'call:ended'];
  assertNoDuplicates(Object.fromEntries(people.map((p) => [p.id, p.seen.filter((r) => once.includes(r.event))])));
  // Every node reads the same line.
  for (const id of NODES) {
    await new Person(cluster.at(id), log.reps[0].id, 'representative').lineStats({ served: CUSTOMERS, waiting: 0, abandoned: 0 });
  }
});

test('customers waiting on a node that is lost are abandoned after CONNECTION_TIMEOUT, unless they asked for a callback', async () => {
  // A queue of its own, which no representative serves: nobody is assigned meanwhile.
  const admin = new Person(cluster.at('a'), 'ops', 'admin');
  const queue = `lost-${Date.now()}`;
  await admin.ok('POST', '/api/v1/queues', { name: queue }, 201);
  const waiting = await Person.connect(cluster.at('c'), 'waiting-on-c');
  const calledBack = await Person.connect(cluster.at('c'), 'callback-on-c');
  await waiting.join({ queue, type: 'audio' });
  await calledBack.ok('POST', '/api/v1/queue/callback', { queue, type: 'audio' }, 201);

  // kill -9: node c never says they went away; another node reaps it and does.
  const killed = Date.now();
  await cluster.node('c').kill('SIGKILL');
  try {
    const onA = (person) => new Person(cluster.at('a'), person.id, 'customer');
    await eventually(() => onA(waiting).refused('GET', '/api/v1/queue/position', undefined, 404, 'NOT_IN_QUEUE'), 30_000);
    console.log(`node c killed: its waiting customer abandoned after ${Date.now() - killed} ms`);
    assert.ok(Date.now() - killed >= CONNECTION_TIMEOUT * 1000, 'not before CONNECTION_TIMEOUT');
    const kept = await onA(calledBack).ok('GET', '/api/v1/queue/position');
    assert.equal(kept.status, 'waiting', JSON.stringify(kept));
    assert.equal(kept.callback, true, JSON.stringify(kept));
    const { line } = await admin.lineStats({ abandoned: 1, waiting: 1, callbacksPending: 1 }, queue);
    assert.equal(line.served, 0, JSON.stringify(line));
    await onA(calledBack).ok('POST', '/api/v1/queue/leave');
  } finally {
    await cluster.node('c').start();
  }
});
