// Media in a three-node cluster, on the demo page in headless Chromium: three people
// whose pages are on three different nodes share one SFU call, whose room lives on one
// of the nodes (its owner, from Redis). When the owner dies (kill -9) or shuts down
// (SIGTERM), every page starts its media over (call:media_restart, or its reconnect)
// and decodes the others again within 10 s; the call stays one call. A relay-only page
// (`?relay=1`) on a node that does not own the media gets its own node's embedded TURN
// server, whose relays reach the owner's SFU (the nodes' media addresses it learns from
// the registry).
//
// Each page reaches the cluster through a TCP proxy of its own (standing in for a load
// balancer; see `Cluster.proxy`), so a page whose node is gone reconnects to another.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { launchChromium, until } from '../browser/harness.mjs';
import { addresses, packetsReceived, relayedOnly, turnFigures } from '../browser/ice.mjs';
import { Person, call, counter, inCall, receives } from '../browser/people.mjs';
import { SECRET, startCluster } from './harness.mjs';

/** The spec's bound: from losing the owner to decoding everyone again. */
const RESUME_MS = 10_000;

let cluster;
let browser;
before(async () => {
  // Long enough for a page whose node died to come back through its proxy.
  cluster = await startCluster({ ids: ['a', 'b', 'c'], env: { CONNECTION_TIMEOUT: '20', DRAIN_TIMEOUT: '5' } });
  browser = await launchChromium();
});
after(async () => {
  await browser?.close();
  await cluster?.stop();
});

/** `name` on the demo page (opened with `query`), through a proxy to node `id`. */
async function signIn(name, id, { query = '' } = {}) {
  const proxy = await cluster.proxy(id);
  // What Person needs of a server: the page's address and a log for failures.
  const door = { url: proxy.url, log: () => cluster.logs() };
  const person = await Person.signIn({ browser, server: door }, name, { query });
  person.node = id;
  return person;
}

/** Alice, Bob and Carol on the demo page, through proxies to nodes a, b and c. */
async function threePeople() {
  const people = [];
  for (const [name, id] of [['Alice', 'a'], ['Bob', 'b'], ['Carol', 'c']]) people.push(await signIn(name, id));
  return people;
}

const others = (people, person) => people.filter((p) => p !== person);
const restartsOf = (person) => person.page.evaluate(() => window.huddle.mediaRestarts);

/**
 * Waits until `person` has started its media over (more than `since` restarts) and
 * decodes video and audio from each of `senders` on its new subscribe connection, the
 * counters growing; a further restart meanwhile starts the count again.
 */
async function decodesAgain(person, senders, since, deadline) {
  let restarts = since;
  let first = new Map();
  await until(`${person.name} to restart its media and decode ${senders.map((s) => s.name).join(' and ')} again`, async () => {
    const now = await restartsOf(person);
    if (now !== restarts) {
      restarts = now;
      first = new Map();
    }
    if (restarts <= since) return false;
    const rows = await person.inbound();
    return senders.every((sender) =>
      ['video', 'audio'].every((kind) => {
        const mine = rows.filter((r) => r.owner === sender.userId && r.kind === kind);
        if (!mine.length) return false;
        const total = mine.reduce((sum, r) => sum + r[counter[kind]], 0);
        const key = `${sender.userId}/${kind}`;
        if (!first.has(key)) first.set(key, total);
        return total > first.get(key);
      }),
    );
  }, { ms: Math.max(0, deadline - Date.now()), every: 200, explain: () => person.explain() });
}

/** Why each page restarted, from its log (`media restart (node_lost)`, `(reconnected)`, ...). */
const reasonsOf = (person) =>
  person.page.evaluate(() => window.huddle.log.filter((l) => l.startsWith('media restart (')).map((l) => l.slice(15, -1)));

/**
 * Three people in a call; the owner of its media is stopped with `signal`; everyone
 * decodes everyone again within RESUME_MS; the call is still one call, with all three.
 * Resolves to the stopped node's exit.
 */
async function loseTheOwner(signal) {
  const people = await threePeople();
  const [alice, bob, carol] = people;
  try {
    await call(alice, [bob, carol], 'video');
    const callId = await alice.page.evaluate(() => window.huddle.callId);
    await Promise.all(people.map((p) => receives(p, others(people, p))));
    const owner = await cluster.ownerOf(callId);
    const since = await Promise.all(people.map(restartsOf));

    const killedAt = Date.now();
    const exit = cluster.node(owner).kill(signal);
    const deadline = killedAt + RESUME_MS;
    // Every page's outcome, so that a failure explains all of them.
    const settled = await Promise.allSettled(
      people.map(async (p, i) => {
        await decodesAgain(p, others(people, p), since[i], deadline);
        return Date.now() - killedAt;
      }),
    );
    const failed = settled.filter((s) => s.status === 'rejected').map((s) => s.reason.message);
    if (failed.length) {
      const passed = people.filter((_, i) => settled[i].status === 'fulfilled');
      const states = await Promise.all(passed.map((p) => p.explain()));
      assert.fail([...failed, ...states.map((s) => `(resumed) ${s}`)].join('\n\n'));
    }
    const resumed = settled.map((s) => s.value);
    const reasons = await Promise.all(people.map(reasonsOf));
    console.log(
      `${signal} of owner ${owner}: decoding again after ` +
        people.map((p, i) => `${p.name} (node ${p.node}) ${resumed[i]} ms [${reasons[i].join(', ')}]`).join('; '),
    );

    const { code, signal: killedBy } = await exit;
    const newOwner = await cluster.ownerOf(callId);
    assert.notEqual(newOwner, owner, 'the room moved off the stopped node');
    assert.ok(cluster.node(newOwner).alive, `the new owner ${newOwner} runs`);
    for (const p of people) {
      const state = await p.page.evaluate(() => ({ callId: window.huddle.callId, state: window.huddle.state }));
      assert.deepEqual(state, { callId, state: 'in call' }, `${p.name}'s page is still in the call`);
    }
    const live = cluster.live()[0].id;
    const { status, body } = await cluster.rest(live, 'GET', `/api/v1/calls/${callId}`, alice.userId);
    assert.equal(status, 200, JSON.stringify(body));
    assert.equal(body.data.call.state, 'connected', JSON.stringify(body.data.call));
    const joined = body.data.participants.filter((p) => p.connectionState === 'connected').map((p) => p.userId).sort();
    assert.deepEqual(joined, people.map((p) => p.userId).sort(), 'all three are still joined');
    for (const p of people) assert.deepEqual(p.errors, [], `${p.name}'s page threw`);
    return { owner, code, signal: killedBy };
  } finally {
    for (const p of people) await p.page.context().close().catch(() => {});
  }
}

describe('a relay-only page on a node that does not own the call\'s media', () => {
  test('its own node\'s TURN relays it to the owner\'s SFU: every candidate is a relay there, and everyone decodes everyone', { timeout: 120_000 }, async (t) => {
    const people = [];
    try {
      // Bob (node b) calls Carol (node c); both publish, so the room is placed.
      const bob = await signIn('Bob', 'b');
      const carol = await signIn('Carol', 'c');
      people.push(bob, carol);
      await call(bob, [carol], 'video');
      const callId = await bob.page.evaluate(() => window.huddle.callId);
      await Promise.all([receives(bob, [carol]), receives(carol, [bob])]);
      const owner = await cluster.ownerOf(callId);

      // Alice signs in relay-only through a node that is not the owner: the iceServers
      // of her join ack are that node's embedded TURN server.
      const id = ['a', 'b', 'c'].find((n) => n !== owner);
      const { turn } = addresses(cluster.node(id).log());
      const sfu = cluster.media(owner);
      assert.equal(sfu, addresses(cluster.node(owner).log()).sfu, `the registry has owner ${owner}'s announced SFU address`);
      assert.notEqual(sfu, addresses(cluster.node(id).log()).sfu, 'two nodes, two SFU addresses');
      const alice = await signIn('Alice', id, { query: '?relay=1' });
      people.push(alice);
      const before = await turnFigures(cluster.node(id).url, SECRET);

      // Bob invites her into the call; she accepts.
      await bob.page.fill('#more', alice.userId);
      await bob.page.click('#invite');
      await alice.page.waitForSelector('#incoming:not([hidden])', { timeout: 10_000 });
      await alice.page.click('#accept');
      await inCall(alice);
      await Promise.all(people.map((p) => receives(p, others(people, p))));

      // Alice's only candidates are relays of her node's TURN server, and the pair in
      // use goes from one of them to the owner's SFU.
      const report = await relayedOnly(alice, { turn, sfu });
      assert.equal(await cluster.ownerOf(callId), owner, 'the room stayed where it was placed');

      // Every RTP packet Alice received came through her node's relays.
      const received = await packetsReceived(alice);
      const after = await turnFigures(cluster.node(id).url, SECRET);
      assert.ok(received > 50, `Alice received ${received} RTP packets`);
      assert.ok(after.relayedPackets - before.relayedPackets >= received, `node ${id} relayed ${after.relayedPackets - before.relayedPackets} packets in the meantime, Alice received ${received}`);
      assert.ok(after.allocations >= 2, `allocations alive on node ${id}: ${JSON.stringify(after)}`);
      assert.equal(after.refused.peer, 0, `node ${id} refused no peer: ${JSON.stringify(after)}`);
      for (const p of people) assert.deepEqual(p.errors, [], `${p.name}'s page threw`);
      t.diagnostic(
        `owner ${owner} (SFU ${sfu}); Alice on node ${id} (TURN ${turn}): ` +
          report.sub.selected.map(({ local, remote }) => `${local.url} ${local.address}:${local.port} -> ${remote.address}:${remote.port}`).join() +
          `; relayed ${after.relayedPackets - before.relayedPackets} packets, Alice received ${received}`,
      );
    } finally {
      for (const p of people) await p.page.context().close().catch(() => {});
    }
  });
});

describe('an SFU call across three nodes', () => {
  test('kill -9 of the node owning the media: every page decodes the others again within 10 s', { timeout: 120_000 }, async () => {
    const { owner, signal } = await loseTheOwner('SIGKILL');
    assert.equal(signal, 'SIGKILL');
    // The next case starts with three nodes again.
    await cluster.node(owner).start();
  });

  test('SIGTERM of the node owning the media: the same, no page loses the call, and the node exits 0', { timeout: 120_000 }, async () => {
    const { code } = await loseTheOwner('SIGTERM');
    assert.equal(code, 0, 'the draining node exits 0');
  });
});
