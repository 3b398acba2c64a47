// @ts-check
/**
 * Node.js client for clerk-broker: @grpc/grpc-js stubs for every .proto under
 * the repository's proto/ (loaded at run time with @grpc/proto-loader), and
 * `Client`, which adds the caller's token, a default deadline on every unary
 * call, permits that wait, and exports that resume after a broken connection.
 */

import { readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';

import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';
import healthCheck from 'grpc-health-check';

import { retryAfterMs } from './status.js';

export { retryAfterMs, statusDetails } from './status.js';
export { grpc };

/** The repository's proto/ directory (this package lives in client/node). */
export const PROTO_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../proto');
/** Where a broker listens by default (the demo's address). */
export const DEFAULT_TARGET = '127.0.0.1:50051';
/** Deadline of a unary call unless the client sets another. */
export const DEFAULT_TIMEOUT_MS = 10_000;
/** Trailer in which a draining broker repeats the last token it sent. */
const RESUME_TOKEN_TRAILER = 'x-resume-token';

/**
 * Every .proto file below `dir`, relative to it, in a stable order.
 * @param {string} dir
 * @returns {string[]}
 */
export function protoFiles(dir = PROTO_DIR) {
  return readdirSync(dir, { recursive: true, encoding: 'utf8' })
    .filter((file) => file.endsWith('.proto'))
    .map((file) => file.split(path.sep).join('/'))
    .sort();
}

/** Loaded packages by proto directory: parsing the protos once per process is enough. */
const packages = new Map();

/**
 * The `clerk_broker.v1` package: service constructors and message types.
 * Fields are camelCase (as in grpcurl's JSON); 64-bit integers are strings.
 * @param {string} protoDir
 * @returns {any}
 */
export function loadPackage(protoDir = PROTO_DIR) {
  const loaded = packages.get(protoDir);
  if (loaded) return loaded;
  const definition = protoLoader.loadSync(protoFiles(protoDir), {
    includeDirs: [protoDir],
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  const pkg = /** @type {any} */ (grpc.loadPackageDefinition(definition)).clerk_broker.v1;
  packages.set(protoDir, pkg);
  return pkg;
}

/** `acquirePermit` got no permit within its wait. */
export class PermitRefused extends Error {
  /**
   * @param {string} budget
   * @param {number} retryAfterMs
   */
  constructor(budget, retryAfterMs) {
    super(`permit refused on budget ${JSON.stringify(budget)}: retry after ${retryAfterMs} ms`);
    this.name = 'PermitRefused';
    /** The budget asked for. */
    this.budget = budget;
    /** The broker's estimate of when a permit could be granted. */
    this.retryAfterMs = retryAfterMs;
  }
}

/**
 * @param {{ seconds?: string | number, nanos?: number } | null | undefined} duration
 * @returns {number} milliseconds
 */
export function durationMs(duration) {
  return duration ? Number(duration.seconds ?? 0) * 1000 + (duration.nanos ?? 0) / 1e6 : 0;
}

/**
 * @param {number} ms
 * @returns {{ seconds: number, nanos: number }}
 */
function protoDuration(ms) {
  const seconds = Math.floor(ms / 1000);
  return { seconds, nanos: Math.round((ms - seconds * 1000) * 1e6) };
}

/**
 * @typedef {object} ClientOptions
 * @property {string} [token] the caller's bearer token (brokers with a policy file need one)
 * @property {number} [timeoutMs] deadline of every unary call (default 10 s)
 * @property {number} [resumeRetries] failures in a row an export survives (default 6)
 * @property {import('@grpc/grpc-js').ChannelCredentials} [credentials] default: plaintext
 * @property {string} [protoDir] where the .proto files are (default: the repository's proto/)
 */

/** A connection to a broker. */
export class Client {
  /** @type {import('@grpc/grpc-js').Metadata} */
  #metadata;

  /**
   * @param {string} target `host:port`, or `http://host:port`
   * @param {ClientOptions} options
   */
  constructor(target = DEFAULT_TARGET, options = {}) {
    const { token, timeoutMs = DEFAULT_TIMEOUT_MS, resumeRetries = 6, protoDir } = options;
    const credentials = options.credentials ?? grpc.credentials.createInsecure();
    this.#metadata = new grpc.Metadata();
    if (token !== undefined) {
      if (!/^[\x21-\x7e]+$/.test(token)) {
        // The token itself is never part of the message.
        throw new TypeError('the caller token must be non-empty visible ASCII');
      }
      this.#metadata.set('authorization', `Bearer ${token}`);
    }
    this.timeoutMs = timeoutMs;
    this.resumeRetries = resumeRetries;
    const address = target.replace(/^http:\/\//, '');
    const pkg = loadPackage(protoDir);
    /** The generated UserService stub, for anything the helpers do not cover. */
    this.users = new pkg.UserService(address, credentials);
    /** The generated QuotaService stub (shares the channel). */
    this.quota = new pkg.QuotaService(address, credentials, { channelOverride: this.users.getChannel() });
    const Health = grpc.makeGenericClientConstructor(healthCheck.service, 'Health');
    /** @type {any} the standard health service's stub */
    this.healthStub = new Health(address, credentials, { channelOverride: this.users.getChannel() });
  }

  /** Closes the connection. */
  close() {
    this.users.close();
  }

  /** @returns {{ deadline: Date }} */
  #options(extraMs = 0) {
    return { deadline: new Date(Date.now() + this.timeoutMs + extraMs) };
  }

  /**
   * A unary call with the token and the default deadline.
   * @param {any} stub
   * @param {string} method
   * @param {object} request
   * @param {number} [extraMs]
   * @returns {Promise<any>}
   */
  #unary(stub, method, request, extraMs = 0) {
    return new Promise((resolve, reject) => {
      stub[method](request, this.#metadata, this.#options(extraMs), (/** @type {any} */ error, /** @type {any} */ reply) =>
        error ? reject(error) : resolve(reply),
      );
    });
  }

  /**
   * One user; rejects with code NOT_FOUND (grpc.status) if Clerk has no such user.
   * @param {string} userId
   */
  getUser(userId) {
    return this.#unary(this.users, 'getUser', { userId });
  }

  /**
   * Many users at once; unknown ids come back in `missingUserIds`.
   * @param {string[]} userIds
   */
  batchGetUsers(userIds) {
    return this.#unary(this.users, 'batchGetUsers', { userIds });
  }

  /**
   * How many users match `filter` (none: all).
   * @param {object} [filter]
   * @returns {Promise<number>}
   */
  async countUsers(filter) {
    const reply = await this.#unary(this.users, 'countUsers', { filter });
    return Number(reply.totalCount);
  }

  /**
   * The messages of ListUsers, each with its `resumeToken`. When the stream
   * breaks with UNAVAILABLE (a lost connection, a draining broker, Clerk
   * down) the export is called again with the last token received, after a
   * backoff, so every user arrives once. Exports have no deadline.
   * @param {{ filter?: object, orderBy?: string, pageSize?: number, maxUsers?: number, resumeToken?: string }} request
   * @returns {AsyncGenerator<any>}
   */
  async *export(request = {}) {
    const maxUsers = request.maxUsers ?? 0;
    let token = request.resumeToken || undefined;
    let delivered = 0;
    let failures = 0;
    for (;;) {
      if (maxUsers && delivered >= maxUsers) return;
      const call = this.users.listUsers(
        token === undefined
          ? request
          : { resumeToken: token, pageSize: request.pageSize ?? 0, maxUsers: maxUsers ? maxUsers - delivered : 0 },
        this.#metadata,
      );
      try {
        for await (const message of call) {
          failures = 0;
          delivered += message.users.length;
          token = message.resumeToken;
          yield message;
        }
        return;
      } catch (error) {
        const failure = /** @type {any} */ (error);
        const trailer = failure?.metadata?.get?.(RESUME_TOKEN_TRAILER)?.[0];
        if (trailer) token = String(trailer);
        if (failure?.code !== grpc.status.UNAVAILABLE || failures >= this.resumeRetries) throw error;
        failures += 1;
        const backoff = Math.min(5000, 100 * 2 ** (failures - 1));
        await sleep(backoff / 2 + (Math.random() * backoff) / 2);
      } finally {
        call.cancel();
      }
    }
  }

  /**
   * Every user the request selects, one at a time (see `export`).
   * @param {{ filter?: object, orderBy?: string, pageSize?: number, maxUsers?: number, resumeToken?: string }} request
   * @returns {AsyncGenerator<any>}
   */
  async *listUsers(request = {}) {
    for await (const message of this.export(request)) yield* message.users;
  }

  /**
   * One AcquirePermit call: a refusal is `granted: false` with `retryAfter`,
   * not an error.
   * @param {{ budget?: string, cost?: number, maxWait?: { seconds: number, nanos: number }, priority?: string }} request
   */
  tryAcquirePermit(request) {
    // The broker may hold the call for maxWait: the deadline must allow it.
    return this.#unary(this.quota, 'acquirePermit', request, durationMs(request.maxWait));
  }

  /**
   * A permit for `cost` requests of `budget` ('' is the upstream Clerk
   * budget), waiting up to `waitMs`: in the broker's fair queue first, then,
   * if refused, `retryAfter` at a time while the wait allows. Rejects with
   * `PermitRefused` when it does not.
   * @param {{ cost?: number, budget?: string, waitMs?: number, bulk?: boolean }} [options]
   */
  async acquirePermit({ cost = 1, budget = '', waitMs = 0, bulk = false } = {}) {
    const deadline = Date.now() + waitMs;
    const priority = bulk ? 'PRIORITY_BULK' : 'PRIORITY_INTERACTIVE';
    for (;;) {
      const remaining = Math.max(0, deadline - Date.now());
      const maxWait = remaining > 0 ? protoDuration(remaining) : undefined;
      const answer = await this.tryAcquirePermit({ budget, cost, priority, maxWait });
      if (answer.granted) return answer;
      const delay = durationMs(answer.retryAfter);
      const pause = Math.max(delay, 10);
      if (Date.now() + pause > deadline) throw new PermitRefused(answer.budget || budget, delay);
      await sleep(pause);
    }
  }

  /**
   * The standard health status of `service` ('' for the broker as a whole,
   * 'liveness' for the process): 'SERVING', 'NOT_SERVING', ...
   * @param {string} [service]
   * @returns {Promise<string>}
   */
  async health(service = '') {
    const reply = await new Promise((resolve, reject) => {
      this.healthStub.check({ service }, this.#options(), (/** @type {any} */ error, /** @type {any} */ r) =>
        error ? reject(error) : resolve(r),
      );
    });
    return /** @type {any} */ (reply).status;
  }

  /** @returns {string} */
  toString() {
    return `Client(token=${this.#metadata.get('authorization').length ? '<redacted>' : 'none'})`;
  }

  [Symbol.for('nodejs.util.inspect.custom')]() {
    return this.toString();
  }
}

export { retryAfterMs as retryAfter };
