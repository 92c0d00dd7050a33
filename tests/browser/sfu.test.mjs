// The demo page (web/index.html, served at /) in headless Chromium, four people in one
// video call through Huddle's Socket.IO signaling and its SFU. Every step is done the
// way a person does it: on the page. Media is checked with getStats() on each page's
// subscribe connection, attributed to users through the SFU's mid -> user map.

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';

import { launchChromium, sleep, startServer, until } from './harness.mjs';

const root = new URL('../../', import.meta.url);
const read = (path) => readFileSync(new URL(path, root));

let server;
let browser;
before(async () => {
  browser = await launchChromium();
  server = await startServer();
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

/** One person on the demo page, in a browser context of their own. */
class Person {
  constructor(name, page) {
    this.name = name;
    this.userId = `${name.toLowerCase()}-${randomUUID().slice(0, 8)}`;
    this.page = page;
    this.errors = [];
    this.owners = new Map(); // sub mid -> userId, as last mapped by the SFU
    page.on('pageerror', (e) => this.errors.push(e.message));
  }

  static async signIn(name) {
    const context = await browser.newContext();
    const person = new Person(name, await context.newPage());
    await person.page.goto(server.url);
    await person.page.fill('#userId', person.userId);
    await person.page.fill('#name', name);
    await person.page.click('#getToken');
    await until(`${name} to be online`, () => person.page.evaluate(() => window.huddle.state === 'online'), {
      ms: 10_000,
      explain: () => person.explain(),
    });
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
    return `--- ${this.name} (${this.userId})\n${JSON.stringify({ ...state, stats, errors: this.errors }, null, 1)}\n--- server log (tail)\n${server.log().split('\n').slice(-30).join('\n')}`;
  }
}

const counter = { video: 'framesDecoded', audio: 'packetsReceived' };

/** `user`'s total of `kind`'s counter in `rows`; undefined while nothing of it arrived. */
function total(rows, user, kind) {
  const mine = rows.filter((r) => r.owner === user.userId && r.kind === kind);
  return mine.length ? mine.reduce((sum, r) => sum + r[counter[kind]], 0) : undefined;
}

/** Waits until `person` receives `kinds` from each of `senders`, its counters growing. */
async function receives(person, senders, kinds = ['video', 'audio']) {
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
async function countersOf(person, mids) {
  const rows = await person.inbound();
  return Object.fromEntries(rows.filter((r) => mids.includes(r.mid)).map((r) => [r.mid, r[counter[r.kind]]]));
}

/** The page shows a playing tile for `sender`, labelled with their name, with sound. */
async function showsTile(person, sender) {
  await until(`${person.name}'s tile for ${sender.name} to play`, () =>
    person.page.evaluate(({ userId, name }) => {
      const tile = window.huddle.tiles.get(userId);
      const el = document.querySelector(`.tile[data-user-id="${userId}"]`);
      if (!tile || !el || el.querySelector('.label').textContent !== name) return false;
      const video = el.querySelector('video');
      const audio = tile.stream.getAudioTracks();
      return video.videoWidth > 0 && !video.paused && !video.muted && audio.length === 1 && audio[0].readyState === 'live';
    }, { userId: sender.userId, name: sender.name }),
  { explain: () => person.explain() });
}

const click = (person, selector) => person.page.click(selector);

describe('the demo page', () => {
  test('is served at / with the official Socket.IO client beside it', async () => {
    const page = await fetch(server.url + '/');
    assert.equal(page.status, 200);
    assert.match(page.headers.get('content-type'), /^text\/html/);
    assert.equal(await page.text(), read('web/index.html').toString());
    const bundle = await fetch(server.url + '/demo/socket.io.min.js');
    assert.equal(bundle.status, 200);
    assert.match(bundle.headers.get('content-type'), /javascript/);
    const served = Buffer.from(await bundle.arrayBuffer());
    assert.ok(served.equals(read('web/socket.io.min.js')), 'serves web/socket.io.min.js');
    const official = readFileSync(new URL('node_modules/socket.io-client/dist/socket.io.min.js', import.meta.url));
    assert.ok(served.equals(official), 'web/socket.io.min.js is the socket.io-client bundle from the lock file');
  });

  test('demo tokens are handed out only when DEMO_TOKENS is on', async () => {
    const ask = (url) =>
      fetch(url + '/demo/token', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ userId: 'x', name: 'X' }) });
    const on = await ask(server.url);
    assert.equal(on.status, 200);
    const { success, data } = await on.json();
    assert.equal(success, true);
    assert.equal(JSON.parse(Buffer.from(data.token.split('.')[1], 'base64url')).sub, 'x');
    const quiet = await startServer({ DEMO_TOKENS: 'false' });
    try {
      assert.equal((await ask(quiet.url)).status, 404);
    } finally {
      await quiet.stop();
    }
  });
});

describe('a group video call through the SFU, driven on the demo page', () => {
  test('everyone sees and hears everyone; leavers vanish; a late joiner gets everything', { timeout: 85_000 }, async (t) => {
    const [alice, bob, carol, dave] = await Promise.all(['Alice', 'Bob', 'Carol', 'Dave'].map((name) => Person.signIn(name)));
    // Each step builds on the one before: after a failure the rest would only add noise.
    let broken = false;
    const step = (name, body) =>
      t.test(name, async () => {
        if (broken) throw new Error('not run: an earlier step failed');
        try {
          await body();
        } catch (e) {
          broken = true;
          throw e;
        }
      });
    const inCall = async (person) =>
      until(`${person.name} to be in the call`, () => person.page.evaluate(() => window.huddle.state === 'in call' && !!window.huddle.callId), {
        explain: () => person.explain(),
      });

    await step('Alice calls Bob and Carol; they accept; all three get each other\'s video and audio', async () => {
      await alice.page.fill('#invitees', `${bob.userId}, ${carol.userId}`);
      await alice.page.selectOption('#callType', 'video');
      await click(alice, '#start');
      for (const person of [bob, carol]) {
        await person.page.waitForSelector('#incoming:not([hidden])', { timeout: 10_000 });
        assert.match(await person.page.textContent('#incomingText'), /Alice is calling \(video\)/);
        await click(person, '#accept');
      }
      await Promise.all([alice, bob, carol].map(inCall));
      const callId = await alice.page.evaluate(() => window.huddle.callId);
      for (const person of [bob, carol]) assert.equal(await person.page.evaluate(() => window.huddle.callId), callId);
      await Promise.all([
        receives(alice, [bob, carol]),
        receives(bob, [alice, carol]),
        receives(carol, [alice, bob]),
      ]);
      for (const [person, others] of [[alice, [bob, carol]], [bob, [alice, carol]], [carol, [alice, bob]]]) {
        for (const other of others) await showsTile(person, other);
      }
    });

    await step('Bob leaves: his media ends for Alice and Carol, and their call goes on', async () => {
      const bobsMids = new Map([alice, carol].map((p) => [p, p.midsOf(bob)]));
      for (const [person, mids] of bobsMids) {
        const counters = await countersOf(person, mids);
        assert.equal(Object.keys(counters).length, 2, `${person.name} had Bob's audio and video: ${JSON.stringify(counters)}`);
        assert.ok(Object.values(counters).every((n) => n > 0), `${person.name} received from Bob: ${JSON.stringify(counters)}`);
      }
      await click(bob, '#leave');
      assert.equal(await bob.page.evaluate(() => window.huddle.callId), null);
      for (const [person, mids] of bobsMids) {
        await until(`${person.name} to drop Bob's tracks`, () =>
          person.page.evaluate(({ userId, mids }) => {
            const { tracks, tiles, sub } = window.huddle;
            const receivers = sub.getTransceivers().filter((t) => mids.includes(t.mid)).map((t) => t.receiver.track);
            return (
              !tiles.has(userId) &&
              !document.querySelector(`.tile[data-user-id="${userId}"]`) &&
              mids.every((mid) => tracks[mid]?.userId !== userId) &&
              receivers.length === mids.length &&
              receivers.every((track) => track.muted || track.readyState === 'ended') &&
              [...tiles.values()].every((tile) => receivers.every((track) => !tile.stream.getTrackById(track.id)))
            );
          }, { userId: bob.userId, mids }),
        { explain: () => person.explain() });
      }
      // Chrome may drop a stopped receive stream's stats: absent counts as standing still.
      await sleep(300);
      const before = await Promise.all([alice, carol].map((p) => countersOf(p, bobsMids.get(p))));
      await sleep(1000);
      const later = await Promise.all([alice, carol].map((p) => countersOf(p, bobsMids.get(p))));
      assert.deepEqual(later, before, "Bob's inbound counters stand still once he left");
      await Promise.all([receives(alice, [carol]), receives(carol, [alice])]);
    });

    await step('Alice invites Dave into the running call: he gets Alice and Carol, they get him', async () => {
      await alice.page.fill('#more', dave.userId);
      await click(alice, '#invite');
      await dave.page.waitForSelector('#incoming:not([hidden])', { timeout: 10_000 });
      await click(dave, '#accept');
      await inCall(dave);
      await Promise.all([
        receives(dave, [alice, carol]),
        receives(alice, [dave, carol]),
        receives(carol, [alice, dave]),
      ]);
      for (const other of [alice, carol]) await showsTile(dave, other);
      for (const person of [alice, carol]) await showsTile(person, dave);
      assert.equal(await dave.page.evaluate((bobId) => window.huddle.tiles.has(bobId), bob.userId), false, 'no tile for Bob, who left');
    });

    await step("Carol mutes her microphone: the SFU stops her audio, not her video; unmuting resumes it", async () => {
      const mids = alice.midsOf(carol);
      const kindOf = Object.fromEntries((await alice.inbound()).filter((r) => mids.includes(r.mid)).map((r) => [r.mid, r.kind]));
      const audioMid = mids.find((mid) => kindOf[mid] === 'audio');
      assert.ok(audioMid, `Carol's audio mid on Alice's side among ${mids}`);
      await click(carol, '#mic');
      assert.equal(await carol.page.textContent('#mic'), 'Unmute');
      await until("Alice's page to show Carol muted", () =>
        alice.page.evaluate((id) => window.huddle.tiles.get(id)?.flags.textContent.includes('muted'), carol.userId),
      );
      await sleep(800);
      const before = (await countersOf(alice, [audioMid]))[audioMid];
      await sleep(1000);
      assert.equal((await countersOf(alice, [audioMid]))[audioMid], before, "Carol's audio stands still while she is muted");
      await receives(alice, [carol], ['video']);
      await click(carol, '#mic');
      await receives(alice, [carol], ['audio']);
    });

    for (const person of [alice, bob, carol, dave]) assert.deepEqual(person.errors, [], `${person.name}'s page threw`);
  });
});
