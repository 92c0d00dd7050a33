// A support line under load, over REST and the official socket.io client: 50
// customers join the default queue one after another while 10 representatives
// answer and end calls after random delays, now and then declining one (and setting
// themselves available again). Everyone is served exactly once, in the order they
// joined (one put back after a decline keeps their place), and no representative is
// ever in two calls at once. See `crowd` and `checkCrowd` in support.mjs.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { startServer } from './harness.mjs';
import { checkCrowd, crowd } from './support.mjs';

test('50 customers, 10 representatives answering at random: everyone served once, in order, nobody double-booked', async (t) => {
  // Everyone connects from loopback: the per-address rate limit would count 60 people as one.
  const server = await startServer({ RATE_LIMIT_IP_PER_SEC: '0' });
  t.after(() => server.stop());
  const started = Date.now();
  const log = await crowd({ places: () => server, customers: 50, reps: 10 });
  console.log(`50 customers served in ${Date.now() - started} ms: ${log.assignments.length} assignments, ${log.declines.length} declined`);
  await checkCrowd(log);
  assert.ok(log.declines.length > 0, 'some calls were declined');
  await log.reps[0].lineStats({ served: 50, waiting: 0, abandoned: 0 });
});
