// Recording an SFU call, end to end: people on the demo page (headless Chromium, fake
// camera and microphone) in a group call through Huddle's SFU, recorded through the
// REST API, the file downloaded from Huddle and checked with Debian's ffmpeg tools
// (`ffprobe`, `ffmpeg`; the suite fails when they are missing, it never skips): one
// Opus and one VP8 stream per participant, the duration recorded, frames that
// decode, and a late joiner's and a leaver's tracks at the offsets they joined and
// left at.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { io } from 'socket.io-client';

import { launchChromium, sleep, startServer, until } from './harness.mjs';
import { Person, call, inCall, receives } from './people.mjs';

/** How far the recording's figures may be from what the test measured, in seconds. */
const TOLERANCE = 1;

/** Runs `tool` with `args`; fails loudly (never skips) when it is not installed. */
function run(tool, args) {
  try {
    const stdout = execFileSync(tool, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 64 << 20 });
    return { stdout, stderr: '' };
  } catch (e) {
    if (e.code === 'ENOENT') throw new Error(`${tool} is required for the recording tests (Debian: apt-get install -y ffmpeg)`);
    if (e.status !== undefined) return { stdout: e.stdout, stderr: e.stderr || `${tool} exited with ${e.status}` };
    throw e;
  }
}

/** ffprobe's JSON about `file` with `args`; an error on stderr fails. */
function probe(file, args) {
  const { stdout, stderr } = run('ffprobe', ['-v', 'error', ...args, '-of', 'json', file]);
  assert.equal(stderr, '', `ffprobe ${args.join(' ')}: ${stderr}`);
  return JSON.parse(stdout);
}

/** Per stream of `file` (by index): the first packet's time and the last packet's end, in seconds. */
function packetSpans(file) {
  const { packets = [] } = probe(file, ['-show_entries', 'packet=stream_index,pts_time,duration_time']);
  const spans = new Map();
  for (const { stream_index: index, pts_time: pts, duration_time: duration } of packets) {
    const at = Number(pts);
    if (!Number.isFinite(at)) continue;
    const end = at + (Number(duration) || 0);
    const span = spans.get(index) ?? { first: at, last: end };
    spans.set(index, { first: Math.min(span.first, at), last: Math.max(span.last, end) });
  }
  return spans;
}

/** The decoded frames of video stream `n` (of the video streams) of `file`: { count, seconds }. */
function decodedVideo(file, n) {
  const { frames = [] } = probe(file, ['-select_streams', `v:${n}`, '-show_entries', 'frame=pts_time,best_effort_timestamp_time']);
  const times = frames.map((f) => Number(f.pts_time ?? f.best_effort_timestamp_time)).filter(Number.isFinite);
  return { count: times.length, seconds: times.length ? Math.max(...times) - Math.min(...times) : 0 };
}

/** A REST call to `server` with bearer `jwt`; resolves to { status, headers, body }. */
async function rest(server, jwt, method, path, body) {
  const response = await fetch(server.url + path, {
    method,
    headers: { authorization: `Bearer ${jwt}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = text;
  }
  return { status: response.status, headers: response.headers, body: json };
}

/** The Bearer token of `person` (a demo token for their user id). */
async function jwtOf(server, person) {
  const response = await fetch(server.url + '/demo/token', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ userId: person.userId, name: person.name }),
  });
  assert.equal(response.status, 200);
  return (await response.json()).data.token;
}

/** The first `event` on `socket`; rejects after `ms` (a rejection nobody awaits is not an error). */
function first(socket, event, ms) {
  const notice = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${event} within ${ms} ms`)), ms);
    timer.unref();
    socket.once(event, (data) => {
      clearTimeout(timer);
      resolve(data);
    });
  });
  notice.catch(() => {});
  return notice;
}

/** The call `person`'s page is in. */
const callOf = (person) => person.page.evaluate(() => window.huddle.callId);

/** Starts recording `callId` as the holder of `jwt`; returns the recording and when it started (ms). */
async function startRecording(server, jwt, callId) {
  const res = await rest(server, jwt, 'POST', `/api/v1/calls/${callId}/recording/start`, {});
  const startedAt = Date.now();
  assert.equal(res.status, 201, JSON.stringify(res.body));
  const { recording } = res.body.data;
  assert.equal(recording.status, 'recording');
  assert.equal(recording.callId, callId);
  return { recording, startedAt };
}

/** Stops recording `callId`; returns when it stopped (ms). */
async function stopRecording(server, jwt, callId) {
  const res = await rest(server, jwt, 'POST', `/api/v1/calls/${callId}/recording/stop`);
  const stoppedAt = Date.now();
  assert.equal(res.status, 200, JSON.stringify(res.body));
  assert.equal(res.body.data.recording.status, 'processing');
  return stoppedAt;
}

/** Waits (up to 30 s) for recording `id` of `callId` to be completed; returns it. */
async function completed(server, jwt, callId, id) {
  return until(`recording ${id} to be completed`, async () => {
    const res = await rest(server, jwt, 'GET', `/api/v1/calls/${callId}/recording`);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const recording = res.body.data.recordings.find((r) => r.id === id);
    assert.ok(recording, `recording ${id} is listed: ${JSON.stringify(res.body.data)}`);
    assert.notEqual(recording.status, 'failed', `the recording failed: ${JSON.stringify(recording)}`);
    return recording.status === 'completed' && recording;
  }, { ms: 30_000, every: 500, explain: async () => server.log().split('\n').slice(-30).join('\n') });
}

/**
 * Downloads completed `recording`: 200 `video/webm` with its size, and a Range
 * request answers 206 with those bytes. Writes it to `dir`; returns the file's path.
 */
async function download(server, jwt, recording, dir) {
  assert.equal(recording.url, `/api/v1/calls/${recording.callId}/recording?download=true&recordingId=${recording.id}`);
  const whole = await fetch(server.url + recording.url, { headers: { authorization: `Bearer ${jwt}` } });
  assert.equal(whole.status, 200);
  assert.equal(whole.headers.get('content-type'), 'video/webm');
  assert.equal(whole.headers.get('accept-ranges'), 'bytes');
  const bytes = Buffer.from(await whole.arrayBuffer());
  assert.equal(bytes.length, recording.size, 'the file has the size the API gives');
  assert.ok(bytes.length > 1000, `a recording of several seconds: ${bytes.length} bytes`);

  const [from, to] = [100, 1099];
  const part = await fetch(server.url + recording.url, { headers: { authorization: `Bearer ${jwt}`, range: `bytes=${from}-${to}` } });
  assert.equal(part.status, 206);
  assert.equal(part.headers.get('content-range'), `bytes ${from}-${to}/${bytes.length}`);
  assert.ok(Buffer.from(await part.arrayBuffer()).equals(bytes.subarray(from, to + 1)), 'the range holds those bytes of the file');

  const file = join(dir, `${recording.id}.webm`);
  writeFileSync(file, bytes);
  return file;
}

/** ffprobe's streams and format of `file`, and ffmpeg decoding all of it without a word on stderr. */
function checkFile(file) {
  const { streams, format } = probe(file, ['-show_streams', '-show_format']);
  const { stderr } = run('ffmpeg', ['-v', 'error', '-i', file, '-f', 'null', '-']);
  assert.equal(stderr, '', `ffmpeg decoding the recording: ${stderr}`);
  return { streams, format };
}

const codecs = (streams, type) => streams.filter((s) => s.codec_type === type).map((s) => s.codec_name);

let server;
let browser;
let recordings;
let scratch;
before(async () => {
  recordings = mkdtempSync(join(tmpdir(), 'huddle-recordings-'));
  scratch = mkdtempSync(join(tmpdir(), 'huddle-recorded-'));
  browser = await launchChromium();
  server = await startServer({ RECORDINGS_DIR: recordings });
});
after(async () => {
  await browser?.close();
  await server?.stop();
  for (const dir of [recordings, scratch]) if (dir) rmSync(dir, { recursive: true, force: true });
});

/** People signed in on the demo page, each in a browser context of their own. */
async function people(...names) {
  return Promise.all(names.map((name) => Person.signIn({ browser, server }, name)));
}

/** Those of `persons` still in a call hang up (the initiator's hang-up ends it); then their pages close. */
async function leaveAll(persons) {
  for (const person of persons) {
    const inCall = await person.page.evaluate(() => !!window.huddle.callId).catch(() => false);
    if (inCall) await person.page.click('#leave').catch(() => {});
  }
  await Promise.all(persons.map((p) => p.page.context().close().catch(() => {})));
}

describe('recording a group call through the SFU', () => {
  test('three participants, 6 s: three Opus and three VP8 streams that decode, of the recorded length', { timeout: 120_000 }, async () => {
    const [alice, bob, carol] = await people('Alice', 'Bob', 'Carol');
    let file;
    let listener;
    try {
      await call(alice, [bob, carol], 'video');
      await Promise.all([receives(alice, [bob, carol]), receives(bob, [alice, carol]), receives(carol, [alice, bob])]);
      const callId = await callOf(alice);
      const jwt = await jwtOf(server, alice);

      // A second socket of Bob's (the official client) hears the recording finish.
      listener = io(server.url, { auth: { token: await jwtOf(server, bob) }, transports: ['websocket'], forceNew: true });
      const finished = first(listener, 'call:recording_finished', 60_000);
      await new Promise((resolve, reject) => listener.once('connect', resolve).once('connect_error', reject));

      const { recording, startedAt } = await startRecording(server, jwt, callId);
      await sleep(6000);
      const stoppedAt = await stopRecording(server, jwt, callId);
      const recorded = (stoppedAt - startedAt) / 1000;

      const done = await completed(server, jwt, callId, recording.id);
      const notice = await finished;
      assert.equal(notice.callId, callId);
      assert.equal(notice.recording.id, recording.id);
      assert.equal(notice.recording.status, 'completed');
      assert.equal(notice.recording.url, done.url);
      assert.equal(done.format, 'webm');
      assert.equal(done.reason, 'asked');
      assert.ok(Math.abs(done.duration - recorded) <= TOLERANCE, `the API's duration ${done.duration} s, recorded ${recorded} s`);
      const tracks = done.tracks.map((t) => `${t.userId}/${t.kind}`).sort();
      const expected = [alice, bob, carol].flatMap((p) => [`${p.userId}/audio`, `${p.userId}/video`]).sort();
      assert.deepEqual(tracks, expected, 'one audio and one video track per participant');

      file = await download(server, jwt, done, scratch);
      const { streams, format } = checkFile(file);
      assert.deepEqual(codecs(streams, 'audio'), ['opus', 'opus', 'opus'], JSON.stringify(streams));
      assert.deepEqual(codecs(streams, 'video'), ['vp8', 'vp8', 'vp8'], JSON.stringify(streams));
      assert.equal(streams.length, 6);
      const duration = Number(format.duration);
      assert.ok(Math.abs(duration - recorded) <= TOLERANCE, `the file lasts ${duration} s, recorded ${recorded} s`);
      for (const n of [0, 1, 2]) {
        const { count, seconds } = decodedVideo(file, n);
        assert.ok(seconds >= 4, `video stream ${n}: ${seconds.toFixed(2)} s of decoded frames (${count} frames)`);
        assert.ok(count >= 4 * 10, `video stream ${n}: ${count} frames decoded in ${seconds.toFixed(2)} s`);
      }
      for (const person of [alice, bob, carol]) assert.deepEqual(person.errors, [], `${person.name}'s page threw`);
    } finally {
      listener?.close();
      if (file) rmSync(file, { force: true });
      await leaveAll([alice, bob, carol]);
    }
  });

  test("a late joiner's and a leaver's tracks start and end where they joined and left", { timeout: 150_000 }, async () => {
    const [alice, bob, carol, dave] = await people('Alice', 'Bob', 'Carol', 'Dave');
    let file;
    try {
      await call(alice, [bob, carol], 'video');
      await Promise.all([receives(alice, [bob, carol]), receives(bob, [alice, carol]), receives(carol, [alice, bob])]);
      const callId = await callOf(alice);
      const jwt = await jwtOf(server, alice);
      const { recording, startedAt } = await startRecording(server, jwt, callId);
      const offset = (at) => (at - startedAt) / 1000;
      await sleep(3000);

      // Dave joins: his media is recorded from when it flows (after he accepts, by
      // the time the others receive it).
      await alice.page.fill('#more', dave.userId);
      await alice.page.click('#invite');
      await dave.page.waitForSelector('#incoming:not([hidden])', { timeout: 10_000 });
      const accepted = offset(Date.now());
      await dave.page.click('#accept');
      await inCall(dave);
      await Promise.all([receives(alice, [dave]), receives(carol, [dave])]);
      const flowing = offset(Date.now());
      await sleep(3000);

      // Bob leaves: his tracks end there.
      const left = offset(Date.now());
      await bob.page.click('#leave');
      await sleep(3000);
      const stoppedAt = await stopRecording(server, jwt, callId);
      const end = offset(stoppedAt);

      const done = await completed(server, jwt, callId, recording.id);
      const tracksOf = (person) => done.tracks.filter((t) => t.userId === person.userId);
      for (const person of [alice, bob, carol, dave]) {
        assert.deepEqual(tracksOf(person).map((t) => t.kind).sort(), ['audio', 'video'], `${person.name}'s tracks: ${JSON.stringify(done.tracks)}`);
      }
      const near = (value, expected, what) => assert.ok(Math.abs(value - expected) <= TOLERANCE, `${what}: ${value} s, expected ${expected.toFixed(2)} s ±${TOLERANCE}`);
      const within = (value, from, to, what) =>
        assert.ok(value >= from - TOLERANCE && value <= to + TOLERANCE, `${what}: ${value} s, expected ${from.toFixed(2)}–${to.toFixed(2)} s ±${TOLERANCE}`);
      for (const track of tracksOf(dave)) {
        within(track.start, accepted, flowing, `Dave's ${track.kind} starts`);
        near(track.end, end, `Dave's ${track.kind} ends`);
      }
      for (const track of tracksOf(bob)) {
        near(track.start, 0, `Bob's ${track.kind} starts`);
        near(track.end, left, `Bob's ${track.kind} ends`);
      }
      for (const person of [alice, carol]) {
        for (const track of tracksOf(person)) {
          near(track.start, 0, `${person.name}'s ${track.kind} starts`);
          near(track.end, end, `${person.name}'s ${track.kind} ends`);
        }
      }

      // The file agrees: for each of Dave's and Bob's tracks, a stream of its kind whose
      // packets span the same offsets.
      file = await download(server, jwt, done, scratch);
      const { streams } = checkFile(file);
      assert.deepEqual(codecs(streams, 'audio'), ['opus', 'opus', 'opus', 'opus'], JSON.stringify(streams));
      assert.deepEqual(codecs(streams, 'video'), ['vp8', 'vp8', 'vp8', 'vp8'], JSON.stringify(streams));
      const spans = packetSpans(file);
      const startTimes = new Map(streams.map((s) => [s.index, Number(s.start_time)]));
      for (const track of [...tracksOf(dave), ...tracksOf(bob)]) {
        const match = streams.find((s) => {
          const span = spans.get(s.index);
          return (
            s.codec_type === track.kind &&
            span &&
            Math.abs(startTimes.get(s.index) - track.start) <= TOLERANCE &&
            Math.abs(span.first - track.start) <= TOLERANCE &&
            Math.abs(span.last - track.end) <= TOLERANCE
          );
        });
        assert.ok(
          match,
          `a ${track.kind} stream spanning ${track.start}–${track.end} s: ` +
            JSON.stringify(streams.map((s) => ({ index: s.index, type: s.codec_type, start: s.start_time, ...spans.get(s.index) }))),
        );
      }
      for (const person of [alice, bob, carol, dave]) assert.deepEqual(person.errors, [], `${person.name}'s page threw`);
    } finally {
      if (file) rmSync(file, { force: true });
      await leaveAll([alice, bob, carol, dave]);
    }
  });

  test('killed mid-recording, the restarted server finishes the file up to the crash', { timeout: 120_000 }, async () => {
    // A server of its own (same RECORDINGS_DIR and database after the restart).
    let first = await startServer({ RECORDINGS_DIR: recordings });
    const dir = first.dir;
    let second;
    const persons = await Promise.all(['Alice', 'Bob'].map((name) => Person.signIn({ browser, server: first }, name)));
    const [alice, bob] = persons;
    let file;
    try {
      await call(alice, [bob], 'video');
      await Promise.all([receives(alice, [bob]), receives(bob, [alice])]);
      const callId = await callOf(alice);
      const jwt = await jwtOf(first, alice);
      const { recording, startedAt } = await startRecording(first, jwt, callId);
      await sleep(5000);
      await first.kill();
      const recorded = (Date.now() - startedAt) / 1000;
      first = null;
      await Promise.all(persons.map((p) => p.page.context().close().catch(() => {})));

      second = await startServer({ RECORDINGS_DIR: recordings }, { dir });
      const done = await completed(second, jwt, callId, recording.id);
      assert.equal(done.reason, 'failed', 'it stopped with the process');
      assert.deepEqual(done.tracks.map((t) => t.kind).sort(), ['audio', 'audio', 'video', 'video'], JSON.stringify(done.tracks));
      file = await download(second, jwt, done, scratch);
      const { streams, format } = checkFile(file);
      assert.deepEqual(codecs(streams, 'video'), ['vp8', 'vp8'], JSON.stringify(streams));
      assert.deepEqual(codecs(streams, 'audio'), ['opus', 'opus'], JSON.stringify(streams));
      const duration = Number(format.duration);
      assert.ok(duration >= 4 && duration <= recorded + TOLERANCE, `the file lasts ${duration} s; recorded ${recorded.toFixed(2)} s until the crash`);
    } finally {
      if (file) rmSync(file, { force: true });
      await first?.kill();
      await second?.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('an audio call records audio tracks only', { timeout: 90_000 }, async () => {
    const [alice, bob, carol] = await people('Alice', 'Bob', 'Carol');
    let file;
    try {
      await call(alice, [bob, carol], 'audio');
      await Promise.all([receives(alice, [bob, carol], ['audio']), receives(bob, [alice, carol], ['audio'])]);
      const callId = await callOf(alice);
      const jwt = await jwtOf(server, alice);
      const { recording, startedAt } = await startRecording(server, jwt, callId);
      await sleep(4000);
      const recorded = ((await stopRecording(server, jwt, callId)) - startedAt) / 1000;

      const done = await completed(server, jwt, callId, recording.id);
      assert.deepEqual(done.tracks.map((t) => t.kind), ['audio', 'audio', 'audio'], JSON.stringify(done.tracks));
      assert.deepEqual(done.tracks.map((t) => t.userId).sort(), [alice, bob, carol].map((p) => p.userId).sort());
      file = await download(server, jwt, done, scratch);
      const { streams, format } = checkFile(file);
      assert.deepEqual(streams.map((s) => s.codec_name), ['opus', 'opus', 'opus'], JSON.stringify(streams));
      assert.ok(Math.abs(Number(format.duration) - recorded) <= TOLERANCE, `the file lasts ${format.duration} s, recorded ${recorded} s`);
    } finally {
      if (file) rmSync(file, { force: true });
      await leaveAll([alice, bob, carol]);
    }
  });
});
