// The demo page (web/index.html, served at /) in headless Chromium, four people in one
// video call through Huddle's Socket.IO signaling and its SFU. Every step is done the
// way a person does it: on the page. Media is checked with getStats() on each page's
// subscribe connection, attributed to users through the SFU's mid -> user map.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';

import { launchChromium, sleep, startServer, until } from './harness.mjs';
import { Person, call, countersOf, inCall, receives } from './people.mjs';

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
    const [alice, bob, carol, dave] = await Promise.all(['Alice', 'Bob', 'Carol', 'Dave'].map((name) => Person.signIn({ browser, server }, name)));
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

    await step('Alice calls Bob and Carol; they accept; all three get each other\'s video and audio', async () => {
      await call(alice, [bob, carol], 'video');
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
