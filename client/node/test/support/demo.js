// @ts-check
/**
 * One real broker in demo mode for the suite: the binary named by
 * CLERK_BROKER_BIN (scripts/test.sh sets it) or else built with cargo, on
 * 127.0.0.1:0, its address read from the banner it prints.
 */

import { spawn, execFileSync } from 'node:child_process';
import { createInterface } from 'node:readline';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../..');
/** The demo's budget: all of it may be taken at once, so one permit can exhaust it. */
export const BUDGET = { limit: 1000, window: '1s' };

/** @returns {string} the broker binary */
export function brokerBinary() {
  if (process.env.CLERK_BROKER_BIN) return process.env.CLERK_BROKER_BIN;
  const output = execFileSync(
    'cargo',
    ['build', '--bin', 'clerk-broker', '--message-format=json-render-diagnostics'],
    { cwd: REPO, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 64 << 20 },
  );
  for (const line of output.split('\n')) {
    if (!line.startsWith('{')) continue;
    const message = JSON.parse(line);
    if (message.reason === 'compiler-artifact' && message.executable && message.target.name === 'clerk-broker') {
      return message.executable;
    }
  }
  throw new Error('cargo built no clerk-broker binary');
}

/**
 * Starts the demo; resolves once it serves.
 * @returns {Promise<{ address: string, sampleIds: string[], stop: () => Promise<number | null> }>}
 */
export async function startDemo() {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('CLERK_')));
  env.CLERK_BROKER_UPSTREAM_RATE = `${BUDGET.limit}/${BUDGET.window}`;
  env.CLERK_BROKER_UPSTREAM_BURST = String(BUDGET.limit);
  const child = spawn(brokerBinary(), ['demo', '--listen', '127.0.0.1:0'], {
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  child.stderr.on('data', (chunk) => {
    log = (log + chunk).slice(-20_000);
  });
  const exited = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
  const lines = createInterface({ input: child.stdout });
  /** @type {string[]} */
  const banner = [];
  const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
  for await (const line of lines) {
    banner.push(line);
    if (line.startsWith('Press Ctrl-C')) break;
  }
  clearTimeout(timer);
  // Keep draining stdout so that the broker never blocks on it.
  child.stdout.resume();
  const address = banner[0]?.match(/serving gRPC on (\S+)/)?.[1];
  if (!address) throw new Error(`the demo printed no banner; its log:\n${log}`);
  const batch = banner.find((line) => line.includes('BatchGetUsers')) ?? '';
  const sampleIds = [...batch.matchAll(/"(user_[A-Za-z0-9]{20,})"/g)].map((m) => m[1]);
  return {
    address,
    sampleIds,
    stop: async () => {
      child.kill('SIGTERM');
      return /** @type {Promise<number | null>} */ (exited);
    },
  };
}
