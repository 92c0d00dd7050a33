// A call through Huddle's SFU between two independent WebRTC stacks: the demo page in
// headless Chromium (libwebrtc) and participant.py (Python's aiortc, with its own
// python-socketio connection). Each publishes audio and video and subscribes to the
// other's. Chromium's side is checked with getStats() on the page's subscribe
// connection; aiortc's side counts the frames it decoded on each mid (`track.recv()`).
//
// Chromium and the browser harness come from ../browser (its node_modules); the
// Python packages from .venv, which tests/aiortc.rs creates from requirements.txt.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';

import { launchChromium, startServer, until } from '../browser/harness.mjs';
import { Person, inCall, receives } from '../browser/people.mjs';

const PYTHON = fileURLToPath(new URL('.venv/bin/python', import.meta.url));
const SCRIPT = fileURLToPath(new URL('participant.py', import.meta.url));

// What each side must have decoded from the other before the call counts as working.
const ENOUGH = { video: 30, audio: 50 };

/** participant.py, running as `name`; its latest report and its stderr, for failures. */
class AiortcPeer {
  constructor(name, server) {
    this.name = name;
    this.userId = `${name.toLowerCase()}-${randomUUID().slice(0, 8)}`;
    this.server = server;
    this.events = [];
    this.stats = null;
    this.stderr = '';
    this.exit = null;
  }

  /** Starts participant.py; resolves once it is online. `stop()` ends it even if this failed. */
  async start() {
    if (!existsSync(PYTHON)) {
      throw new Error(`no Python venv at ${PYTHON}: cargo test --test aiortc creates it (python3 -m venv, pip install -r requirements.txt)`);
    }
    // stdin stays open as a lifeline: the script exits when it ends, even if we die.
    const child = (this.child = spawn(PYTHON, ['-u', SCRIPT, '--url', this.server.url, '--user-id', this.userId, '--name', this.name], {
      stdio: ['pipe', 'pipe', 'pipe'],
    }));
    child.stderr.on('data', (chunk) => (this.stderr += chunk));
    child.on('error', (e) => (this.exit = { error: e.message }));
    child.on('exit', (code, signal) => (this.exit = { code, signal }));
    createInterface({ input: child.stdout }).on('line', (line) => {
      let report;
      try {
        report = JSON.parse(line);
      } catch {
        this.stderr += `(stdout) ${line}\n`;
        return;
      }
      if (report.event === 'stats') this.stats = report;
      else this.events.push(report);
    });
    await this.until('to be online', () => this.events.some((e) => e.event === 'online'), 20_000);
  }

  /** Polls `probe` (sync, on our latest reports); fails early if the script has exited. */
  until(what, probe, ms = 15_000) {
    return until(`${this.name} (aiortc) ${what}`, async () => {
      if (this.exit) throw new Error(`participant.py exited (${JSON.stringify(this.exit)}):\n${this.explain()}`);
      return probe();
    }, { ms, explain: async () => this.explain() });
  }

  /** Frames decoded per kind from `sender`, summed over the mids the SFU gave them. */
  framesFrom(sender) {
    const totals = {};
    for (const row of Object.values(this.stats?.received ?? {})) {
      if (row.userId === sender.userId) totals[row.kind] = (totals[row.kind] ?? 0) + row.frames;
    }
    return totals;
  }

  /** Waits until `sender`'s video and audio frames reach ENOUGH and keep coming. */
  async receives(sender) {
    await this.until(`to decode ${ENOUGH.video} video and ${ENOUGH.audio} audio frames of ${sender.name}'s`, () => {
      const frames = this.framesFrom(sender);
      return frames.video >= ENOUGH.video && frames.audio >= ENOUGH.audio;
    }, 20_000);
    const before = this.framesFrom(sender);
    await this.until(`to keep decoding ${sender.name}'s frames`, () => {
      const now = this.framesFrom(sender);
      return now.video > before.video && now.audio > before.audio;
    }, 5_000);
  }

  explain() {
    const tail = (text, n) => text.split('\n').slice(-n).join('\n');
    return `--- ${this.name} (aiortc, ${this.userId})\nevents: ${JSON.stringify(this.events)}\nstats: ${JSON.stringify(this.stats)}\nstderr:\n${tail(this.stderr, 60)}\n--- server log (tail)\n${tail(this.server.log(), 30)}`;
  }

  async stop() {
    if (!this.child || this.exit) return;
    const exited = new Promise((resolve) => this.child.once('exit', resolve));
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 5_000);
    await exited;
    clearTimeout(timer);
  }
}

/** Chromium's inbound video and audio from `sender`, summed over the mids the SFU gave them. */
async function mediaFrom(person, sender) {
  await person.inbound(); // refreshes person.owners
  const mids = person.midsOf(sender);
  return person.page.evaluate(async (mids) => {
    const { sub } = window.huddle;
    const midOf = new Map(sub.getTransceivers().map((t) => [t.receiver.track.id, t.mid]));
    const video = { framesDecoded: 0, frameWidth: 0, frameHeight: 0, packetsLost: 0 };
    const audio = { packetsReceived: 0, totalSamplesReceived: 0, packetsLost: 0 };
    for (const s of (await sub.getStats()).values()) {
      if (s.type !== 'inbound-rtp' || !mids.includes(s.mid ?? midOf.get(s.trackIdentifier))) continue;
      if (s.kind === 'video') {
        video.framesDecoded += s.framesDecoded ?? 0;
        video.frameWidth = s.frameWidth ?? 0;
        video.frameHeight = s.frameHeight ?? 0;
        video.codec = s.codecId;
        video.packetsLost += s.packetsLost ?? 0;
      } else {
        audio.packetsReceived += s.packetsReceived ?? 0;
        audio.totalSamplesReceived += s.totalSamplesReceived ?? 0;
        audio.packetsLost += s.packetsLost ?? 0;
      }
    }
    return { video, audio };
  }, mids);
}

let server;
let browser;
let peer;
before(async () => {
  browser = await launchChromium();
  server = await startServer();
});
after(async () => {
  await peer?.stop();
  await browser?.close();
  await server?.stop();
});

test('Chromium and an aiortc participant see and hear each other through the SFU', { timeout: 60_000 }, async () => {
  const alice = await Person.signIn({ browser, server }, 'Alice');
  peer = new AiortcPeer('Pyro', server);
  await peer.start();

  // Alice calls the aiortc participant on the page; participant.py accepts by itself.
  await alice.page.fill('#invitees', peer.userId);
  await alice.page.selectOption('#callType', 'video');
  await alice.page.click('#start');
  await peer.until('to join the call', () => peer.events.some((e) => e.event === 'joined'));
  const callId = peer.events.find((e) => e.event === 'joined').callId;
  await inCall(alice);
  assert.equal(await alice.page.evaluate(() => window.huddle.callId), callId);

  // Both publish connections and both subscribe connections come up.
  await peer.until('to connect both its connections', () => peer.stats?.pub === 'connected' && peer.stats?.sub === 'connected');

  // Chromium decodes aiortc's video and receives its audio, counters growing...
  await receives(alice, [peer]);
  await until(`Alice to decode ${ENOUGH.video} frames and ${ENOUGH.audio} audio packets of Pyro's`, async () => {
    const { video, audio } = await mediaFrom(alice, peer);
    return video.framesDecoded >= ENOUGH.video && audio.packetsReceived >= ENOUGH.audio;
  }, { ms: 20_000, explain: () => alice.explain() });
  // ...of aiortc's own picture (MovingBars is 320x240; aiortc never rescales it).
  const chromium = await mediaFrom(alice, peer);
  assert.equal(`${chromium.video.frameWidth}x${chromium.video.frameHeight}`, '320x240', JSON.stringify(chromium));
  // The SFU names aiortc's tracks by the `sources` of its publish offer.
  const tracks = await alice.page.evaluate(() => window.huddle.tracks);
  const pyros = Object.values(tracks).filter((t) => t.userId === peer.userId).map((t) => t.source).sort();
  assert.deepEqual(pyros, ['camera', 'microphone'], `the SFU's tracks map on Alice's page: ${JSON.stringify(tracks)}`);

  // aiortc decodes Chromium's video and audio, on mids the SFU attributes to Alice.
  await peer.receives(alice);
  const rows = Object.values(peer.stats.received).filter((r) => r.userId === alice.userId);
  assert.deepEqual(rows.map((r) => `${r.kind}/${r.source}`).sort(), ['audio/microphone', 'video/camera']);
  const video = rows.find((r) => r.kind === 'video');
  assert.ok(video.width > 0 && video.height > 0, `aiortc decoded pictures of a size: ${JSON.stringify(video)}`);
  assert.equal(rows.find((r) => r.kind === 'audio').sampleRate, 48000, 'Opus decodes at 48 kHz');

  const aiortc = peer.framesFrom(alice);
  console.log(
    `figures: Chromium decoded ${chromium.video.framesDecoded} video frames (${chromium.video.frameWidth}x${chromium.video.frameHeight}, ` +
      `${chromium.video.packetsLost} lost) and received ${chromium.audio.packetsReceived} audio packets (${chromium.audio.packetsLost} lost) from aiortc; ` +
      `aiortc decoded ${aiortc.video} video frames (${video.width}x${video.height}) and ${aiortc.audio} audio frames from Chromium; ` +
      `aiortc sent ${peer.stats.sent.video} video and ${peer.stats.sent.audio} audio frames`,
  );
  assert.deepEqual(alice.errors, [], "Alice's page threw");
});
