// Calls relayed through Huddle's embedded TURN server: two people on the demo page in
// headless Chromium, in a video call through the SFU, with relay-only peer connections
// (the page's `?relay=` hook sets iceTransportPolicy 'relay'), over UDP and TCP, and
// over TLS (`turns:`) with a server serving HTTPS from a test certificate that
// Chromium is told to trust. Their only candidates
// are relays the embedded server allocates with the credentials Huddle handed out; the
// relays reach the SFU's announced address, which TURN lets through. Checked on the
// pages with getStats() (media decoded; the selected pair's local candidate is a relay
// of the embedded server) and on the server's TURN counters.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { SECRET, httpGet, launchChromium, startServer, testCertificate } from './harness.mjs';
import { addresses, packetsReceived, relayedOnly, turnFigures } from './ice.mjs';
import { Person, call, receives } from './people.mjs';

let browser;
let certificate;
before(async () => {
  certificate = testCertificate();
  browser = await launchChromium([certificate.chromiumFlag]);
});
after(async () => {
  await browser?.close();
  certificate?.remove();
});

/** The Prometheus text at /metrics (no token), as name (with labels) -> number. */
async function prometheus(server) {
  const { body: text } = await httpGet(server.url + '/metrics');
  const figures = {};
  for (const line of text.split('\n')) {
    const match = /^([a-z_]+(?:\{[^}]*\})?) (\S+)$/.exec(line);
    if (match) figures[match[1]] = Number(match[2]);
  }
  return figures;
}

/**
 * Alice calls Bob on pages opened with `?relay=<mode>`; both must decode each other's
 * media through relays of the embedded server over `transports` ('udp', 'tcp',
 * 'tls'), on a server started with `env`.
 */
async function relayedCall(mode, transports, env = {}) {
  const server = await startServer(env);
  const people = [];
  try {
    const { turn, turnTls, sfu } = addresses(server.log());
    const [alice, bob] = await Promise.all(['Alice', 'Bob'].map((name) => Person.signIn({ browser, server }, name, { query: `?relay=${mode}` })));
    people.push(alice, bob);
    const started = Date.now();
    await call(alice, [bob], 'video');
    await Promise.all([receives(alice, [bob]), receives(bob, [alice])]);
    const mediaAfter = Date.now() - started;
    const chosen = []; // each person's selected pair on the subscribe connection

    for (const person of people) {
      const report = await relayedOnly(person, { turn, turnTls, sfu, transports });
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
    const json = await turnFigures(server.url, SECRET);
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

  test('?relay=tls: TURN over TLS only (turns:, the HTTPS certificate), and media still flows', { timeout: 30_000 }, async (t) => {
    const result = await relayedCall('tls', ['tls'], { ...certificate.env, TURN_TLS_PORT: '0' });
    t.diagnostic(JSON.stringify(result));
  });
});
