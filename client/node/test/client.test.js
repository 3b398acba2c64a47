// @ts-check
/**
 * Every RPC through the Node client against one demo broker: values,
 * NOT_FOUND, RESOURCE_EXHAUSTED with RetryInfo, exports with resume tokens
 * (and a cut connection), permits, the standard health service.
 */

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';

import { Client, PermitRefused, durationMs, grpc, loadPackage, retryAfterMs } from '../src/index.js';
import { startDemo } from './support/demo.js';
import { startProxy } from './support/proxy.js';

const TOTAL = 10_000; // the demo's users

/** @type {Awaited<ReturnType<typeof startDemo>>} */
let demo;
/** @type {Client} */
let client;

before(async () => {
  demo = await startDemo();
  client = new Client(demo.address);
});

after(async () => {
  client?.close();
  assert.equal(await demo?.stop(), 0, 'the broker exits 0 after SIGTERM');
});

/**
 * Collects an async iterable.
 * @template T
 * @param {AsyncIterable<T>} items
 * @returns {Promise<T[]>}
 */
async function collect(items) {
  const all = [];
  for await (const item of items) all.push(item);
  return all;
}

describe('lookups', () => {
  test('GetUser returns the seeded user', async () => {
    const user = await client.getUser(demo.sampleIds[0]);
    assert.equal(user.id, demo.sampleIds[0]);
    assert.match(user.rawJson, new RegExp(demo.sampleIds[0]));
    assert.ok(Number(user.createdAt.seconds) > 0);
  });

  test('an unknown user is NOT_FOUND', async () => {
    await assert.rejects(client.getUser('user_doesnotexist'), { code: grpc.status.NOT_FOUND });
  });

  test('a malformed id is INVALID_ARGUMENT', async () => {
    await assert.rejects(client.getUser('not an id!'), (error) => {
      assert.equal(/** @type {any} */ (error).code, grpc.status.INVALID_ARGUMENT);
      assert.equal(retryAfterMs(/** @type {any} */ (error)), undefined);
      return true;
    });
  });

  test('BatchGetUsers lists missing ids', async () => {
    const [first, second] = demo.sampleIds;
    const reply = await client.batchGetUsers([second, 'user_doesnotexist', first]);
    assert.deepEqual(reply.users.map((/** @type {any} */ u) => u.id), [second, first]);
    assert.deepEqual(reply.missingUserIds, ['user_doesnotexist']);
  });

  test('CountUsers with and without a filter', async () => {
    assert.equal(await client.countUsers(), TOTAL);
    assert.equal(await client.countUsers({ userIds: [demo.sampleIds[0]] }), 1);
  });
});

describe('exports', () => {
  test('ListUsers streams every matching user once', async () => {
    const filter = { nameQuery: 'frances' };
    const expected = await client.countUsers(filter);
    assert.ok(expected > 0 && expected < TOTAL);
    const ids = (await collect(client.listUsers({ filter, orderBy: '+created_at', pageSize: 250 }))).map((u) => u.id);
    assert.equal(ids.length, expected);
    assert.equal(new Set(ids).size, expected);
  });

  test('an export continues from a resume token', async () => {
    const messages = await collect(client.export({ orderBy: '+created_at', pageSize: 25, maxUsers: 60 }));
    assert.deepEqual(messages.map((m) => m.users.length), [25, 25, 10]);
    const first = messages.flatMap((m) => m.users.map((/** @type {any} */ u) => u.id));
    const resumeToken = messages.at(-1).resumeToken;
    const rest = (await collect(client.listUsers({ resumeToken, pageSize: 500, maxUsers: 140 }))).map((u) => u.id);
    assert.equal(rest.length, 140);
    const whole = (await collect(client.listUsers({ orderBy: '+created_at', maxUsers: 200 }))).map((u) => u.id);
    assert.deepEqual([...first, ...rest], whole);
  });

  test('a forged resume token is INVALID_ARGUMENT', async () => {
    await assert.rejects(collect(client.listUsers({ resumeToken: 'forged.token' })), {
      code: grpc.status.INVALID_ARGUMENT,
    });
  });

  test('an export resumes by itself after the connection is cut', async () => {
    const expected = (await collect(client.listUsers({ orderBy: '+created_at', maxUsers: 800 }))).map((u) => u.id);
    const proxy = await startProxy(demo.address);
    const throughProxy = new Client(proxy.address);
    try {
      const got = [];
      for await (const user of throughProxy.listUsers({ orderBy: '+created_at', pageSize: 10, maxUsers: 800 })) {
        got.push(user.id);
        if (got.length === 30) proxy.cut();
      }
      assert.ok(proxy.connections() >= 2, 'the export did not reconnect');
      assert.deepEqual(got, expected);
    } finally {
      throughProxy.close();
      proxy.close();
    }
  });
});

describe('permits', () => {
  test('a permit on the upstream budget is granted', async () => {
    const answer = await client.acquirePermit({ cost: 2, waitMs: 5000 });
    assert.equal(answer.granted, true);
    assert.equal(answer.budget, 'clerk');
    assert.equal(answer.limit, 1000);
    assert.equal(durationMs(answer.window), 1000);
  });

  test('an unknown budget is NOT_FOUND', async () => {
    await assert.rejects(client.acquirePermit({ budget: 'no-such-budget' }), { code: grpc.status.NOT_FOUND });
  });

  test('RESOURCE_EXHAUSTED carries RetryInfo once a permit took the whole budget', async () => {
    const short = new Client(demo.address, { timeoutMs: 300 });
    try {
      const everything = await short.tryAcquirePermit({ cost: 1000, maxWait: { seconds: 5, nanos: 0 } });
      assert.equal(everything.granted, true);
      const started = Date.now();
      // A fresh id: never cached, so the lookup needs the budget.
      await assert.rejects(short.getUser(`user_exhausted${randomUUID().replaceAll('-', '')}`), (error) => {
        assert.equal(/** @type {any} */ (error).code, grpc.status.RESOURCE_EXHAUSTED);
        const delay = retryAfterMs(/** @type {any} */ (error));
        assert.ok(delay !== undefined && delay > 300 && delay <= 1100, String(delay));
        return true;
      });
      assert.ok(Date.now() - started < 800);
      const refused = await short.tryAcquirePermit({ cost: 1 });
      assert.equal(refused.granted, false);
      assert.ok(durationMs(refused.retryAfter) > 0);
      await assert.rejects(short.acquirePermit({ waitMs: 50 }), (error) => {
        assert.ok(error instanceof PermitRefused);
        assert.ok(error.retryAfterMs > 0);
        return true;
      });
      // The budget frees within its window: a permit that may wait gets it.
      assert.equal((await client.acquirePermit({ waitMs: 3000 })).granted, true);
    } finally {
      short.close();
    }
  });
});

describe('health and tokens', () => {
  test('the standard health service reports SERVING', async () => {
    for (const service of ['', 'liveness', 'clerk_broker.v1.UserService', 'clerk_broker.v1.QuotaService']) {
      assert.equal(await client.health(service), 'SERVING', service);
    }
    await assert.rejects(client.health('no.such.Service'), { code: grpc.status.NOT_FOUND });
  });

  test('the token is sent and never shown', async () => {
    const withToken = new Client(demo.address, { token: 'node-secret-token' });
    try {
      assert.doesNotMatch(String(withToken), /node-secret-token/);
      assert.equal(await withToken.countUsers(), TOTAL);
    } finally {
      withToken.close();
    }
    assert.throws(() => new Client(demo.address, { token: 'bad token' }), (error) => {
      assert.doesNotMatch(String(error), /bad token/);
      return true;
    });
  });

  test('every proto under proto/ is loaded', () => {
    const pkg = loadPackage();
    assert.ok(pkg.UserService && pkg.QuotaService);
  });
});
