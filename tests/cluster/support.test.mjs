// A support line served by a three-node cluster (one PostgreSQL, one Redis), driven by
// the official socket.io client: customers and representatives spread over the nodes,
// each talking REST and Socket.IO to their own node, while every node's dispatcher
// assigns. Every customer is served exactly once, in the order they joined, no
// representative is in two calls at once, and no assignment is announced twice. See
// `crowd` and `checkCrowd` in ../socketio/support.mjs.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { Person, checkCrowd, crowd } from '../socketio/support.mjs';
import { assertNoDuplicates, startCluster } from './harness.mjs';

const NODES = ['a', 'b', 'c'];
const CUSTOMERS = 50;
const REPS = 10;

let cluster;
before(async () => {
  // Everyone connects from loopback: the per-address rate limit would count them all as one.
  cluster = await startCluster({ ids: NODES, env: { RATE_LIMIT_IP_PER_SEC: '0' } });
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
