// What the signaling benchmarks (run.mjs: Huddle against Node socket.io; cluster.mjs:
// Huddle's cluster mode, one node against three) measure with: pacing, CPU time from
// /proc, percentiles, the settings that turn the deployment limits off, and the
// summary of several rounds.

import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const TICKS_PER_SECOND = 100; // CLK_TCK on Linux

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export const now = () => Number(process.hrtime.bigint()) / 1e6; // ms

/** A number from the environment, else `fallback`. */
export const env = (name, fallback) => Number(process.env[name] ?? fallback);

/**
 * Huddle settings for a benchmark: every client here is one address and a few users,
 * at rates past what any real user sends, so the limits that protect a deployment
 * would refuse the benchmark.
 */
export const limitsOff = (connections) => ({
  RATE_LIMIT_USER_PER_SEC: '0',
  RATE_LIMIT_IP_PER_SEC: '0',
  HTTP_MAX_CONNECTIONS_PER_IP: String(connections + 1000),
});

/** CPU seconds (user + system) the process has used. */
export function cpuSeconds(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / TICKS_PER_SECOND;
}

/** Resident memory in KiB. */
export function rssKiB(pid) {
  const line = readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').find((l) => l.startsWith('VmRSS:'));
  return Number(line.split(/\s+/)[1]);
}

/** Calls `send(i)` `rate` times a second for `seconds`; resolves to the number sent. */
export async function paced(rate, seconds, send) {
  const start = now();
  let sent = 0;
  while (now() - start < seconds * 1000) {
    const due = Math.floor(((now() - start) / 1000) * rate);
    while (sent < due) send(sent++);
    await sleep(2);
  }
  return sent;
}

/** The `p`th percentile of an ascending array (NaN when empty). */
export function percentile(sorted, p) {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] : NaN;
}

/** `{ median, min, max }` of per-round figures. */
export function overRounds(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  const median = sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
  return { median, min: sorted[0], max: sorted.at(-1) };
}

/** The commit measured: `git rev-parse --short HEAD`, marked when the tree has changes. */
export function commit() {
  const git = (...args) => spawnSync('git', args, { cwd: fileURLToPath(new URL('.', import.meta.url)), encoding: 'utf8' }).stdout?.trim();
  const head = git('rev-parse', '--short', 'HEAD') || 'unknown';
  return git('status', '--porcelain', '--untracked-files=no') ? `${head} (with uncommitted changes)` : head;
}
