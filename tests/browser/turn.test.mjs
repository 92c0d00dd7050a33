// Calls relayed through Huddle's embedded TURN server: two people on the demo page in
// headless Chromium, in a video call through the SFU, with relay-only peer connections
// (the page's `?relay=` hook sets iceTransportPolicy 'relay'). Their only candidates
// are relays the embedded server allocates with the credentials Huddle handed out; the
// relays reach the SFU's announced address, which TURN lets through. Checked on the
// pages with getStats() (media decoded; the selected pair's local candidate is a relay
// of the embedded server) and on the server's TURN counters.

import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { after, before, describe, test } from 'node:test';

import { SECRET, launchChromium, startServer, until } from './harness.mjs';
import { Person, call, receives } from './people.mjs';

let browser;
before(async () => {
  browser = await launchChromium();
});
after(async () => {
  await browser?.close();
});

/** Where the server's TURN and SFU listen, from its "huddle is listening" log line. */
function addresses(server) {
  const turn = /\bturn=Some\((\S+?)\)/.exec(server.log())?.[1];
  const sfu = /\bsfu_announced=(\S+)/.exec(server.log())?.[1];
  assert.ok(turn && sfu, `the server logs its TURN and SFU addresses:\n${server.log()}`);
  return { turn, sfu };
}

/** The Prometheus text at /metrics (no token), as name (with labels) -> number. */
async function prometheus(server) {
  const text = await (await fetch(server.url + '/metrics')).text();
  const figures = {};
  for (const line of text.split('\n')) {
    const match = /^([a-z_]+(?:\{[^}]*\})?) (\S+)$/.exec(line);
    if (match) figures[match[1]] = Number(match[2]);
  }
  return figures;
}

/** An admin token signed with the harness's JWT_SECRET (the demo endpoint mints none). */
function adminToken() {
  const part = (json) => Buffer.from(JSON.stringify(json)).toString('base64url');
  const signed = `${part({ alg: 'HS256', typ: 'JWT' })}.${part({ sub: 'operator', role: 'admin', exp: Math.floor(Date.now() / 1000) + 600 })}`;
  return `${signed}.${createHmac('sha256', SECRET).update(signed).digest('base64url')}`;
}

/** The `turn` figures of /monitoring/metrics. */
async function monitoring(server) {
  const response = await fetch(server.url + '/monitoring/metrics', { headers: { authorization: `Bearer ${adminToken()}` } });
  assert.equal(response.status, 200, 'an admin token reads /monitoring/metrics');
  return (await response.json()).turn;
}

/**
 * ICE as the page sees it on its two connections: the configuration it made them
 * with, every local candidate (stats and SDP), and each transport's selected pair.
 */
function ice(person) {
  return person.page.evaluate(async () => {
    const pick = (c) => c && { type: c.candidateType, relayProtocol: c.relayProtocol, protocol: c.protocol, address: c.address, port: c.port, url: c.url };
    const report = {};
    for (const name of ['pub', 'sub']) {
      const pc = window.huddle[name];
      if (!pc) return null;
      const stats = [...(await pc.getStats()).values()];
      const byId = new Map(stats.map((s) => [s.id, s]));
      const { iceServers, iceTransportPolicy } = pc.getConfiguration();
      report[name] = {
        connectionState: pc.connectionState,
        iceServers,
        iceTransportPolicy,
        locals: stats.filter((s) => s.type === 'local-candidate').map(pick),
        sdpCandidates: (pc.localDescription?.sdp ?? '').split(/\r?\n/).filter((l) => l.startsWith('a=candidate:')),
        selected: stats
          .filter((s) => s.type === 'transport')
          .map((t) => byId.get(t.selectedCandidatePairId))
          .filter(Boolean)
          .map((pair) => ({ state: pair.state, local: pick(byId.get(pair.localCandidateId)), remote: pick(byId.get(pair.remoteCandidateId)) })),
      };
    }
    return report;
  });
}

/** RTP packets the page received on its subscribe connection. */
function packetsReceived(person) {
  return person.page.evaluate(async () => {
    let sum = 0;
    for (const s of (await window.huddle.sub.getStats()).values()) if (s.type === 'inbound-rtp') sum += s.packetsReceived ?? 0;
    return sum;
  });
}

/**
 * Alice calls Bob on pages opened with `?relay=<mode>`; both must decode each other's
 * media through relays of the embedded server over `transports` ('udp', 'tcp').
 */
async function relayedCall(mode, transports) {
  const server = await startServer();
  const people = [];
  try {
    const { turn, sfu } = addresses(server);
    const [alice, bob] = await Promise.all(['Alice', 'Bob'].map((name) => Person.signIn({ browser, server }, name, { query: `?relay=${mode}` })));
    people.push(alice, bob);
    const started = Date.now();
    await call(alice, [bob], 'video');
    await Promise.all([receives(alice, [bob]), receives(bob, [alice])]);
    const mediaAfter = Date.now() - started;
    const chosen = []; // each person's selected pair on the subscribe connection

    for (const person of people) {
      // The selected pairs settle once ICE has nominated; poll rather than sleep.
      const report = await until(
        `${person.name}'s connections to select relayed candidate pairs`,
        async () => {
          const r = await ice(person);
          const settled = r && ['pub', 'sub'].every((n) => r[n].connectionState === 'connected' && r[n].selected.length === 1 && r[n].selected[0].state === 'succeeded');
          return settled && r;
        },
        { explain: async () => `${JSON.stringify(await ice(person), null, 1)}\n${await person.explain()}` },
      );
      const why = `${person.name}: ${JSON.stringify(report, null, 1)}`;
      for (const name of ['pub', 'sub']) {
        const { iceServers, iceTransportPolicy, locals, sdpCandidates, selected } = report[name];
        assert.equal(iceTransportPolicy, 'relay', why);
        // The TURN servers are the ones Huddle handed out: the embedded server, with
        // REST credentials minted for this user (and, for ?relay=tcp, only its TCP URL).
        const turnServers = iceServers.filter((s) => [s.urls].flat().some((u) => u.startsWith('turn:')));
        assert.equal(turnServers.length, 1, why);
        const [{ urls, username, credential }] = turnServers;
        assert.deepEqual([urls].flat().sort(), transports.map((t) => `turn:${turn}?transport=${t}`).sort(), why);
        assert.match(username, new RegExp(`^\\d+:${person.userId}$`), why);
        assert.ok(credential, why);
        // Every candidate the connection gathered, and the one it uses, is a relay.
        // (The local SDP may not list them yet: candidates trickle, and an answer's
        // description can lag behind getStats(); what it lists must be relays.)
        assert.ok(locals.length > 0, why);
        for (const c of locals) assert.equal(c.type, 'relay', why);
        for (const line of sdpCandidates) assert.match(line, / typ relay /, why);
        const [{ local, remote }] = selected;
        assert.equal(local.type, 'relay', why);
        assert.ok(transports.includes(local.relayProtocol), `relayProtocol ${local.relayProtocol} is one of ${transports}: ${why}`);
        assert.equal(local.url, `turn:${turn}?transport=${local.relayProtocol}`, why);
        // The relay address is on the embedded server: its public IP, a port of its
        // relay range (TURN_MIN_PORT..TURN_MAX_PORT, by default 49152..65535)...
        assert.equal(local.address, turn.replace(/:\d+$/, ''), why);
        assert.ok(local.port >= 49152 && `${local.address}:${local.port}` !== turn, why);
        // ...and the far end is the SFU's announced address.
        assert.equal(`${remote.address}:${remote.port}`, sfu, why);
      }
      chosen.push(report.sub.selected[0]);
    }

    // Every RTP packet the pages received came through a relay socket, where the
    // server counts it: the server's count is at least theirs.
    let received = 0;
    for (const person of people) received += await packetsReceived(person);
    const figures = await prometheus(server);
    assert.ok(received > 50, `the pages received ${received} RTP packets`);
    assert.ok(figures.huddle_turn_relayed_packets_total >= received, `relayed ${figures.huddle_turn_relayed_packets_total} packets, the pages received ${received}`);
    assert.ok(figures.huddle_turn_relayed_bytes_total > figures.huddle_turn_relayed_packets_total, JSON.stringify(figures));
    // Two people, two connections each: at least four allocations alive in the call.
    assert.ok(figures.huddle_turn_allocations >= 4, `allocations alive: ${figures.huddle_turn_allocations}`);
    assert.ok(figures.huddle_turn_allocations_created_total >= 4, JSON.stringify(figures));
    const json = await monitoring(server);
    assert.equal(json.enabled, true);
    assert.ok(json.allocations >= 4, JSON.stringify(json));
    assert.ok(json.relayedPackets >= figures.huddle_turn_relayed_packets_total, JSON.stringify(json));
    // The relays sent only to the SFU, which TURN always lets them reach.
    assert.equal(json.refused.peer, 0, `no peer refused: ${JSON.stringify(json)}`);

    for (const person of people) assert.deepEqual(person.errors, [], `${person.name}'s page threw`);
    return { mediaAfter, received, relayed: figures.huddle_turn_relayed_packets_total, allocations: json.allocations, refused: json.refused, selected: chosen.map(({ local, remote }) => `${local.url} ${local.address}:${local.port} -> ${remote.address}:${remote.port}`) };
  } finally {
    await Promise.all(people.map((p) => p.page.context().close().catch(() => {})));
    await server.stop();
  }
}

describe('a video call through the SFU with relay-only pages, via the embedded TURN server', () => {
  test('?relay=1: both see and hear each other; every candidate used is a relay of the embedded server', { timeout: 30_000 }, async (t) => {
    const result = await relayedCall('1', ['udp', 'tcp']);
    t.diagnostic(JSON.stringify(result));
  });

  test('?relay=tcp: TURN over TCP only, and media still flows', { timeout: 30_000 }, async (t) => {
    const result = await relayedCall('tcp', ['tcp']);
    t.diagnostic(JSON.stringify(result));
  });
});
