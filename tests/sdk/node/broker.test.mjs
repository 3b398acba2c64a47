// What the broker's front promises to a service using @clerk/backend, checked through the SDK
// itself (run by `tests/sdk/run.sh --broker`): many getUser calls share a few upstream
// requests and repeats cost none, a metadata write is seen by the next read here and over
// gRPC, ten times Clerk's per-user write limit never meets Clerk's 429, a route outside the
// caller's allow-list is refused at no cost, private_metadata reaches only callers with its
// scope, and the broker's key never shows.
//
// Environment (set by run.sh --broker):
//   CLERK_API_URL          the front, without /v1
//   CLERK_SECRET_KEY       a caller token with read_users, read_private_metadata, write_users
//   SDK_READER_KEY         a caller token with read_users only
//   SDK_EXPECT_URL/KEY     the fake Clerk and its key (expectations)
//   SDK_BROKER_METRICS     the broker's /metrics URL (upstream requests are counted there)
//   SDK_BROKER_GRPC        host:port of the broker's gRPC listener (checked with grpcurl)

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { before, test } from 'node:test';

import { createClerkClient } from '@clerk/backend';

const env = process.env;
const trusted = createClerkClient({ secretKey: env.CLERK_SECRET_KEY, apiUrl: env.CLERK_API_URL });
const reader = createClerkClient({ secretKey: env.SDK_READER_KEY, apiUrl: env.CLERK_API_URL });
let users;

/** Requests the broker sent Clerk so far, by HTTP status, from its metrics. */
async function upstream() {
  const text = await (await fetch(env.SDK_BROKER_METRICS)).text();
  const byStatus = {};
  for (const line of text.split('\n')) {
    const match = line.match(/^clerk_broker_upstream_requests_total\{.*status="([^"]+)".*\} (\d+)/);
    if (match) byStatus[match[1]] = (byStatus[match[1]] ?? 0) + Number(match[2]);
  }
  const total = Object.values(byStatus).reduce((a, b) => a + b, 0);
  return { total, byStatus };
}

before(async () => {
  const response = await fetch(`${env.SDK_EXPECT_URL}/v1/users?limit=500&order_by=%2Bcreated_at`, {
    headers: { Authorization: `Bearer ${env.SDK_EXPECT_KEY}` },
  });
  users = await response.json();
  assert.ok(users.length >= 450, `the fake holds ${users.length} users`);
});

test('200 concurrent getUser of 200 cold ids cost at most 3 upstream requests, repeats none', async () => {
  const ids = users.slice(200, 400).map((user) => user.id);
  // Warm connections, as a service's pool has them (refused calls cost nothing upstream).
  const nobody = createClerkClient({ secretKey: 'sk_live_nobody', apiUrl: env.CLERK_API_URL });
  await Promise.allSettled(ids.map(() => nobody.users.getUser('user_x')));
  const start = await upstream();
  const got = await Promise.all(ids.map((id) => reader.users.getUser(id)));
  assert.deepEqual(got.map((user) => user.id), ids);
  const cold = (await upstream()).total - start.total;
  assert.ok(cold <= 3, `200 cold ids cost ${cold} upstream requests`);
  await Promise.all(ids.map((id) => reader.users.getUser(id)));
  assert.equal((await upstream()).total - start.total, cold, 'repeated calls cost nothing');
});

test('getUserList by ids (a list and a count) of cached users costs nothing; getCount', async () => {
  const ids = users.slice(200, 205).map((user) => user.id);
  const start = (await upstream()).total;
  const list = await reader.users.getUserList({ userId: ids });
  assert.deepEqual(new Set(list.data.map((user) => user.id)), new Set(ids));
  assert.equal(list.totalCount, 5);
  assert.equal((await upstream()).total, start, 'list and count answered from the cache');
  assert.equal(await reader.users.getCount(), users.length >= 500 ? await totalUsers() : users.length);
});

async function totalUsers() {
  const response = await fetch(`${env.SDK_EXPECT_URL}/v1/users/count`, {
    headers: { Authorization: `Bearer ${env.SDK_EXPECT_KEY}` },
  });
  return (await response.json()).total_count;
}

test('a metadata write is seen by the next getUser and over gRPC', async () => {
  const id = users[10].id;
  await trusted.users.getUser(id);
  const stamp = `node-${Date.now()}`;
  const written = await trusted.users.updateUserMetadata(id, { publicMetadata: { stamp } });
  assert.equal(written.publicMetadata.stamp, stamp);
  const read = await trusted.users.getUser(id);
  assert.equal(read.publicMetadata.stamp, stamp);
  const grpc = execFileSync('grpcurl', [
    '-plaintext', '-H', `authorization: Bearer ${env.CLERK_SECRET_KEY}`,
    '-d', JSON.stringify({ user_id: id }), env.SDK_BROKER_GRPC,
    'clerk_broker.v1.UserService/GetUser',
  ]).toString();
  assert.equal(JSON.parse(JSON.parse(grpc).rawJson).public_metadata.stamp, stamp);
});

test('ten times the per-user limit: each write succeeds or gets 429 with Retry-After', async () => {
  const id = users[11].id;
  const before429 = (await upstream()).byStatus['429'] ?? 0;
  const outcomes = await Promise.allSettled(
    Array.from({ length: 100 }, (_, n) => trusted.users.updateUserMetadata(id, { publicMetadata: { n } })),
  );
  let ok = 0;
  for (const outcome of outcomes) {
    if (outcome.status === 'fulfilled') {
      ok += 1;
    } else {
      assert.equal(outcome.reason.status, 429, String(outcome.reason));
      assert.ok(outcome.reason.retryAfter >= 1, `Retry-After ${outcome.reason.retryAfter}`);
    }
  }
  assert.ok(ok >= 1 && ok <= 10, `${ok} writes in one window`);
  assert.equal((await upstream()).byStatus['429'] ?? 0, before429, 'Clerk never answered 429');
});

test('a route outside the allow-list is refused before any upstream request', async () => {
  const org = users.flatMap((user) => user.public_metadata?.organization_ids ?? [])[0];
  const start = (await upstream()).total;
  await assert.rejects(reader.organizations.getOrganization({ organizationId: org }), (error) => {
    assert.equal(error.status, 403);
    return true;
  });
  assert.equal((await upstream()).total, start);
});

test('private_metadata reaches only callers with its scope', async () => {
  const holder = users.find((user) => Object.keys(user.private_metadata ?? {}).length > 0);
  assert.ok(holder, 'a seeded user with private metadata');
  const seen = await reader.users.getUser(holder.id);
  assert.deepEqual(seen.privateMetadata ?? {}, {});
  const list = await reader.users.getUserList({ userId: [holder.id] });
  assert.deepEqual(list.data[0].privateMetadata ?? {}, {});
  const full = await trusted.users.getUser(holder.id);
  assert.deepEqual(full.privateMetadata, holder.private_metadata);
});

test('the broker key never shows in an answer', async () => {
  const response = await fetch(`${env.CLERK_API_URL}/v1/users?limit=3`, {
    headers: { Authorization: `Bearer ${env.CLERK_SECRET_KEY}` },
  });
  const text = JSON.stringify([...response.headers]) + (await response.text());
  assert.ok(!text.includes(env.SDK_EXPECT_KEY));
});
