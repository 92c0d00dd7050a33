// Browser harness: runs the real `huddle` binary (HUDDLE_BIN) with its SFU on
// loopback and demo tokens on, and drives the demo page it serves in headless
// Chromium (Debian's /usr/bin/chromium, through playwright-core).

import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

export const SECRET = 'browser-test-secret-0123456789';
export const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';

const CHROMIUM_FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  '--allow-loopback-in-peer-connection',
  '--disable-features=WebRtcHideLocalIpsWithMdns',
  '--autoplay-policy=no-user-gesture-required',
];

/** Starts huddle; resolves once it announces its address. */
export async function startServer(extraEnv = {}) {
  const bin = process.env.HUDDLE_BIN;
  if (!bin) throw new Error('HUDDLE_BIN must name the huddle binary (cargo test sets it)');
  const dir = mkdtempSync(join(tmpdir(), 'huddle-browser-'));
  const child = spawn(bin, [], {
    env: {
      PATH: process.env.PATH,
      HOST: '127.0.0.1',
      PORT: '0',
      DATABASE_URL: `sqlite://${join(dir, 'huddle.db')}`,
      JWT_SECRET: SECRET,
      SFU_PORT: '0',
      TURN_HOST: '127.0.0.1',
      TURN_PORT: '0',
      SFU_PUBLIC_IP: '127.0.0.1',
      DEMO_TOKENS: 'true',
      LOG_LEVEL: 'info',
      ...extraEnv,
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let log = '';
  child.stderr.on('data', (chunk) => (log += chunk));
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`huddle did not start:\n${log}`)), 30_000);
    child.stderr.on('data', () => {
      const match = /\baddr=(\S+)/.exec(log);
      if (match) {
        clearTimeout(timer);
        resolve(`http://${match[1]}`);
      }
    });
    child.on('exit', (code) => reject(new Error(`huddle exited with ${code}:\n${log}`)));
  });
  return {
    url,
    log: () => log,
    async stop() {
      child.kill('SIGTERM');
      await new Promise((resolve) => (child.exitCode === null && child.signalCode === null ? child.once('exit', resolve) : resolve()));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Launches Chromium; fails (never skips) when it is not installed. */
export async function launchChromium() {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`Chromium is required at ${CHROMIUM} for the browser suite (Debian: apt-get install -y chromium)`);
  }
  return chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_FLAGS });
}

/** Polls `probe` (async, returns a truthy value when done) until it passes or `ms` run out. */
export async function until(what, probe, { ms = 15_000, every = 250, explain = async () => '' } = {}) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    last = await probe();
    if (last) return last;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}\n${await explain()}`);
    await new Promise((resolve) => setTimeout(resolve, every));
  }
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
