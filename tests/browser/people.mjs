// People on the demo page (web/index.html, served at /), each in a browser context of
// their own, and the checks the browser suites make of what they receive: getStats()
// on the page's subscribe connection, attributed to users through the SFU's
// mid -> user map.

import { randomUUID } from 'node:crypto';

import { until } from './harness.mjs';

/** One person on the demo page, in a browser context of their own. */
export class Person {
  constructor(name, page, server) {
    this.name = name;
    this.userId = `${name.toLowerCase()}-${randomUUID().slice(0, 8)}`;
    this.page = page;
    this.server = server;
    this.errors = [];
    this.owners = new Map(); // sub mid -> userId, as last mapped by the SFU
    this.blocked = []; // what the page's Content-Security-Policy refused
    page.on('pageerror', (e) => this.errors.push(e.message));
    page.on('console', (m) => {
      if (m.type() === 'error' && /Content Security Policy/i.test(m.text())) this.blocked.push(m.text());
    });
  }

  /** Opens the page (with `query`, e.g. `?relay=1`) and signs in with a demo token. */
  static async signIn({ browser, server }, name, { query = '' } = {}) {
    const context = await browser.newContext();
    const person = new Person(name, await context.newPage(), server);
    await person.page.goto(server.url + '/' + query);
    await person.page.fill('#userId', person.userId);
    await person.page.fill('#name', name);
    await person.page.click('#getToken');
    await until(`${name} to be online`, () => person.page.evaluate(() => window.huddle.state === 'online'), {
      ms: 10_000,
      explain: () => person.explain(),
    });
    // The page runs under the policy Huddle serves it with, and breaks none of it.
    if (person.blocked.length) throw new Error(`the demo page's CSP blocked:\n${person.blocked.join('\n')}`);
    return person;
  }

  /** Inbound RTP on the subscribe connection, one row per mid, with its owner. */
  async inbound() {
    const { rows, tracks } = await this.page.evaluate(async () => {
      const { sub, tracks } = window.huddle;
      if (!sub) return { rows: [], tracks };
      const midOf = new Map(sub.getTransceivers().map((t) => [t.receiver.track.id, t.mid]));
      const rows = [];
      for (const s of (await sub.getStats()).values()) {
        if (s.type !== 'inbound-rtp') continue;
        rows.push({
          mid: s.mid ?? midOf.get(s.trackIdentifier),
          kind: s.kind,
          framesDecoded: s.framesDecoded ?? 0,
          packetsReceived: s.packetsReceived ?? 0,
          ...(s.kind === 'video' && { keyFramesDecoded: s.keyFramesDecoded ?? 0, pliCount: s.pliCount ?? 0 }),
        });
      }
      return { rows, tracks };
    });
    for (const [mid, { userId }] of Object.entries(tracks)) this.owners.set(mid, userId);
    return rows.map((row) => ({ ...row, owner: this.owners.get(row.mid) }));
  }

  /** The sub mids that carried `user`'s media. */
  midsOf(user) {
    return [...this.owners].filter(([, owner]) => owner === user.userId).map(([mid]) => mid);
  }

  /** What the page knows, for failure messages. */
  async explain() {
    const state = await this.page
      .evaluate(() => {
        const { state, callId, tracks, tiles, log, pub, sub } = window.huddle;
        return { state, callId, tracks, tiles: [...tiles.keys()], pub: pub?.connectionState, sub: sub?.connectionState, log: log.slice(-25) };
      })
      .catch((e) => `page gone: ${e.message}`);
    const stats = await this.inbound().catch(() => []);
    return `--- ${this.name} (${this.userId})\n${JSON.stringify({ ...state, stats, errors: this.errors }, null, 1)}\n--- server log (tail)\n${this.server.log().split('\n').slice(-30).join('\n')}`;
  }
}

export const counter = { video: 'framesDecoded', audio: 'packetsReceived' };

/** `user`'s total of `kind`'s counter in `rows`; undefined while nothing of it arrived. */
function total(rows, user, kind) {
  const mine = rows.filter((r) => r.owner === user.userId && r.kind === kind);
  return mine.length ? mine.reduce((sum, r) => sum + r[counter[kind]], 0) : undefined;
}

/** Waits until `person` receives `kinds` from each of `senders`, its counters growing. */
export async function receives(person, senders, kinds = ['video', 'audio']) {
  const first = new Map();
  const names = senders.map((s) => s.name).join(' and ');
  await until(`${person.name} to receive ${kinds.join('+')} from ${names}`, async () => {
    const rows = await person.inbound();
    const growing = senders.flatMap((sender) =>
      kinds.map((kind) => {
        const now = total(rows, sender, kind);
        const key = `${sender.userId}/${kind}`;
        if (now === undefined) return false;
        if (!first.has(key)) first.set(key, now);
        return now > first.get(key);
      }),
    );
    return growing.every(Boolean);
  }, { explain: () => person.explain() });
}

/** `person`'s counters for the mids in `mids`. */
export async function countersOf(person, mids) {
  const rows = await person.inbound();
  return Object.fromEntries(rows.filter((r) => mids.includes(r.mid)).map((r) => [r.mid, r[counter[r.kind]]]));
}

/** Waits until `person`'s page is in a call. */
export async function inCall(person) {
  await until(`${person.name} to be in the call`, () => person.page.evaluate(() => window.huddle.state === 'in call' && !!window.huddle.callId), {
    explain: () => person.explain(),
  });
}

/** `caller` starts a `type` call with `callees` on the page; each accepts it; all are in. */
export async function call(caller, callees, type = 'video') {
  await caller.page.fill('#invitees', callees.map((p) => p.userId).join(', '));
  await caller.page.selectOption('#callType', type);
  await caller.page.click('#start');
  for (const person of callees) {
    await person.page.waitForSelector('#incoming:not([hidden])', { timeout: 10_000 });
    const text = await person.page.textContent('#incomingText');
    if (!text.includes(`${caller.name} is calling (${type})`)) throw new Error(`${person.name}'s incoming call reads ${JSON.stringify(text)}`);
    await person.page.click('#accept');
  }
  await Promise.all([caller, ...callees].map(inCall));
}
