// Browser harness: runs the real `huddle` binary (HUDDLE_BIN) with its SFU on
// loopback and demo tokens on, and drives the demo page it serves in headless
// Chromium (Debian's /usr/bin/chromium, through playwright-core).

import { execFileSync, spawn } from 'node:child_process';
import { createHash, createPublicKey } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
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

/**
 * Starts huddle; resolves once it announces its address (`url` is https:// when
 * `extraEnv` gives it a certificate). Its database is in a folder of its own,
 * removed when it stops, or in `dir` (kept), where a killed one left it.
 */
export async function startServer(extraEnv = {}, { dir: keep } = {}) {
  const bin = process.env.HUDDLE_BIN;
  if (!bin) throw new Error('HUDDLE_BIN must name the huddle binary (cargo test sets it)');
  const dir = keep ?? mkdtempSync(join(tmpdir(), 'huddle-browser-'));
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
        resolve(`${extraEnv.SSL_CERT_PATH ? 'https' : 'http'}://${match[1]}`);
      }
    });
    child.on('exit', (code) => reject(new Error(`huddle exited with ${code}:\n${log}`)));
  });
  const exit = (signal) => {
    child.kill(signal);
    return new Promise((resolve) => (child.exitCode === null && child.signalCode === null ? child.once('exit', resolve) : resolve()));
  };
  return {
    url,
    dir,
    log: () => log,
    async stop() {
      await exit('SIGTERM');
      if (!keep) rmSync(dir, { recursive: true, force: true });
    },
    /** SIGKILL, as a crash: the database stays in `dir` for a server started on it. */
    async kill() {
      await exit('SIGKILL');
    },
  };
}

/** Launches Chromium (with `extraFlags`); fails (never skips) when it is not installed. */
export async function launchChromium(extraFlags = []) {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`Chromium is required at ${CHROMIUM} for the browser suite (Debian: apt-get install -y chromium)`);
  }
  return chromium.launch({ executablePath: CHROMIUM, args: [...CHROMIUM_FLAGS, ...extraFlags] });
}

/** The CAs of testCertificate(), which httpGet trusts (and no other). */
const trustedCAs = [];

/**
 * GET `url` from Node, over http:// or https:// (trusting testCertificate()'s CAs;
 * Node's fetch takes no CA): resolves to `{ status, body }`.
 */
export function httpGet(url, headers = {}) {
  const { request } = url.startsWith('https:') ? https : http;
  return new Promise((resolve, reject) => {
    request(url, { headers, ca: trustedCAs }, (response) => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (chunk) => (body += chunk));
      response.on('end', () => resolve({ status: response.statusCode, body }));
    })
      .on('error', reject)
      .end();
  });
}

/**
 * A server certificate for 127.0.0.1 and localhost from a CA made for it (the
 * `openssl` CLI), in a folder of its own: `{ env, chromiumFlag, remove }`. `env`
 * points SSL_CERT_PATH and SSL_KEY_PATH at it; `chromiumFlag` makes Chromium trust
 * this certificate's key and nothing else (`--ignore-certificate-errors-spki-list`:
 * Chromium takes no CA by flag, and checks TURN servers' certificates as it does
 * pages').
 */
export function testCertificate() {
  const dir = mkdtempSync(join(tmpdir(), 'huddle-cert-'));
  const at = (name) => join(dir, name);
  const openssl = (...args) => execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  try {
    const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
    openssl('req', '-x509', ...ec, '-keyout', at('ca.key'), '-out', at('ca.pem'), '-days', '2', '-subj', '/CN=Huddle browser test CA',
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
    openssl('req', ...ec, '-keyout', at('key.pem'), '-out', at('server.csr'), '-subj', '/CN=localhost');
    writeFileSync(at('server.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n');
    openssl('x509', '-req', '-in', at('server.csr'), '-CA', at('ca.pem'), '-CAkey', at('ca.key'), '-CAcreateserial',
      '-out', at('cert.pem'), '-days', '2', '-extfile', at('server.ext'));
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`the openssl CLI is required to make a test certificate: ${e.stderr ?? e.message}`);
  }
  const spki = createPublicKey(readFileSync(at('key.pem'))).export({ type: 'spki', format: 'der' });
  trustedCAs.push(readFileSync(at('ca.pem'), 'utf8'));
  return {
    env: { SSL_CERT_PATH: at('cert.pem'), SSL_KEY_PATH: at('key.pem') },
    chromiumFlag: `--ignore-certificate-errors-spki-list=${createHash('sha256').update(spki).digest('base64')}`,
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
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
