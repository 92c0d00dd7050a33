// ICE on the demo page, for the suites that check relayed media: what a server says
// of its TURN and SFU addresses, its TURN counters, and what a page's two peer
// connections gathered and selected (getStats()), with the checks that a page's media
// goes only through a relay of the given embedded TURN server to the given SFU.

import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';

import { httpGet, until } from './harness.mjs';

/**
 * Where a server's TURN and SFU listen, from its (last) "huddle is listening" log line:
 * `{ turn, turnTls, sfu }`, TURN's `ip:port` (UDP and TCP), TURN over TLS's (when it
 * runs) and the SFU's announced `ip:port`.
 */
export function addresses(log) {
  const line = log.split('\n').filter((l) => l.includes('huddle is listening')).at(-1) ?? '';
  const turn = /\bturn=Some\((\S+?)\)/.exec(line)?.[1];
  const turnTls = /\bturn_tls=Some\((\S+?)\)/.exec(line)?.[1];
  const sfu = /\bsfu_announced=(\S+)/.exec(line)?.[1];
  assert.ok(turn && sfu, `the server logs its TURN and SFU addresses:\n${log}`);
  return { turn, turnTls, sfu };
}

/** An admin token signed with `secret` (the demo endpoint mints none). */
export function adminToken(secret) {
  const part = (json) => Buffer.from(JSON.stringify(json)).toString('base64url');
  const signed = `${part({ alg: 'HS256', typ: 'JWT' })}.${part({ sub: 'operator', role: 'admin', exp: Math.floor(Date.now() / 1000) + 600 })}`;
  return `${signed}.${createHmac('sha256', secret).update(signed).digest('base64url')}`;
}

/** The `turn` figures of the server at `url`'s /monitoring/metrics (JWT_SECRET `secret`). */
export async function turnFigures(url, secret) {
  const response = await httpGet(url + '/monitoring/metrics', { authorization: `Bearer ${adminToken(secret)}` });
  assert.equal(response.status, 200, 'an admin token reads /monitoring/metrics');
  return JSON.parse(response.body).turn;
}

/**
 * ICE as `person`'s page sees it on its two connections: the configuration it made
 * them with, every local candidate (stats and SDP), and each transport's selected pair.
 */
export function ice(person) {
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

/**
 * Waits until both of `person`'s connections are connected on one selected pair
 * (they settle once ICE has nominated: poll rather than sleep), and checks that their
 * media goes only through relays of the embedded TURN server at `turn` (over
 * `transports`, 'udp' and/or 'tcp', or 'tls' at `turnTls`, with REST credentials
 * minted for `person`) to the SFU at `sfu`. Resolves to the ICE report.
 */
export async function relayedOnly(person, { turn, turnTls, sfu, transports = ['udp', 'tcp'] }) {
  const urlOf = (transport) => (transport === 'tls' ? `turns:${turnTls}?transport=tcp` : `turn:${turn}?transport=${transport}`);
  const report = await until(
    `${person.name}'s connections to select relayed candidate pairs`,
    async () => {
      const r = await ice(person);
      const settled = r && ['pub', 'sub'].every((n) => r[n].connectionState === 'connected' && r[n].selected.length === 1 && r[n].selected[0].state === 'succeeded');
      return settled && r;
    },
    { explain: async () => `${JSON.stringify(await ice(person), null, 1)}\n${await person.explain()}` },
  );
  const why = `${person.name} (TURN ${turn}, SFU ${sfu}): ${JSON.stringify(report, null, 1)}`;
  for (const name of ['pub', 'sub']) {
    const { iceServers, iceTransportPolicy, locals, sdpCandidates, selected } = report[name];
    assert.equal(iceTransportPolicy, 'relay', why);
    // The TURN servers are the ones Huddle handed out: the embedded server, with
    // REST credentials minted for this user (and, for ?relay=tcp, only its TCP URL).
    const turnServers = iceServers.filter((s) => [s.urls].flat().some((u) => /^turns?:/.test(u)));
    assert.equal(turnServers.length, 1, why);
    const [{ urls, username, credential }] = turnServers;
    assert.deepEqual([urls].flat().sort(), transports.map(urlOf).sort(), why);
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
    assert.equal(local.url, urlOf(local.relayProtocol), why);
    // The relay address is on the embedded server: its public IP, a port of its
    // relay range (TURN_MIN_PORT..TURN_MAX_PORT, by default 49152..65535)...
    assert.equal(local.address, turn.replace(/:\d+$/, ''), why);
    assert.ok(local.port >= 49152 && `${local.address}:${local.port}` !== turn, why);
    // ...and the far end is the SFU's announced address.
    assert.equal(`${remote.address}:${remote.port}`, sfu, why);
  }
  return report;
}

/** RTP packets `person`'s page received on its subscribe connection. */
export function packetsReceived(person) {
  return person.page.evaluate(async () => {
    let sum = 0;
    for (const s of (await window.huddle.sub.getStats()).values()) if (s.type === 'inbound-rtp') sum += s.packetsReceived ?? 0;
    return sum;
  });
}
