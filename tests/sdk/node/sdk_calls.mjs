// Clerk's official Node SDK (@clerk/backend) against a Clerk-compatible Backend API: the fake
// Clerk directly, or the broker's front in front of it.
//
// Each call below goes through the SDK to CLERK_API_URL and compares what the SDK returns with
// what the fake holds, read with plain HTTP from SDK_EXPECT_URL (default: CLERK_API_URL).
//
//   node sdk_calls.mjs          prints one JSON line per call; exits 1 on the first failure
//   node --test sdk.test.mjs    the same calls as a node:test suite
//
// Environment:
//   CLERK_API_URL     base URL without /v1 (required), e.g. http://127.0.0.1:8081
//   CLERK_SECRET_KEY  the key the SDK sends (default sk_test_fake)
//   SDK_EXPECT_URL    where to read the expected values (default CLERK_API_URL)
//   SDK_EXPECT_KEY    the key for SDK_EXPECT_URL (default CLERK_SECRET_KEY)
//   SDK_USER_IDS      comma-separated user ids, at least 3 (default: the 3 oldest users)
//   SDK_WRITE_USER    the user whose metadata is written (default: the first of SDK_USER_IDS)
//   SDK_ORG_ID        an organization id with members (default: the first one the oldest
//                     users belong to)
//
// The metadata writes add keys under `sdk_node` and remove them again, so the user ends as it
// was (but for updated_at). Each run invites a new address, sdk-node-<random>@example.com.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { pathToFileURL } from 'node:url';

import { createClerkClient } from '@clerk/backend';

/** The run's settings, from the environment. */
export function config(env = process.env) {
  const apiUrl = env.CLERK_API_URL;
  if (!apiUrl) {
    throw new Error('CLERK_API_URL is required: the base URL without /v1, e.g. http://127.0.0.1:8081');
  }
  const secretKey = env.CLERK_SECRET_KEY || 'sk_test_fake';
  return {
    apiUrl,
    secretKey,
    expectUrl: env.SDK_EXPECT_URL || apiUrl,
    expectKey: env.SDK_EXPECT_KEY || secretKey,
    userIds: env.SDK_USER_IDS ? env.SDK_USER_IDS.split(',').filter(Boolean) : null,
    writeUser: env.SDK_WRITE_USER || null,
    orgId: env.SDK_ORG_ID || null,
  };
}

/** GET `path` (under /v1) from the expectation source, as JSON. */
async function expected(cfg, path) {
  const response = await fetch(`${cfg.expectUrl}/v1${path}`, {
    headers: { Authorization: `Bearer ${cfg.expectKey}` },
  });
  const body = await response.json();
  if (!response.ok) {
    throw new Error(`GET ${path} from ${cfg.expectUrl}: ${response.status} ${JSON.stringify(body)}`);
  }
  return body;
}

/** The SDK client and the fixture ids, discovered from the expectation source when not given. */
export async function setup(cfg) {
  const clerk = createClerkClient({ secretKey: cfg.secretKey, apiUrl: cfg.apiUrl });
  let userIds = cfg.userIds;
  let orgId = cfg.orgId;
  if (!userIds || !orgId) {
    const oldest = await expected(cfg, '/users?limit=100&order_by=%2Bcreated_at');
    userIds ??= oldest.slice(0, 3).map((user) => user.id);
    orgId ??= oldest.flatMap((user) => user.public_metadata?.organization_ids ?? [])[0];
  }
  assert.ok(userIds.length >= 3, `at least 3 user ids are needed, got ${userIds}`);
  assert.ok(orgId, 'no organization found among the oldest users: set SDK_ORG_ID');
  const nonce = randomBytes(6).toString('hex');
  return { cfg, clerk, userIds, writeUser: cfg.writeUser || userIds[0], orgId, nonce };
}

/** Query string of repeated `user_id`s, as Clerk takes them. */
function userIdQuery(ids) {
  return ids.map((id) => `user_id=${encodeURIComponent(id)}`).join('&');
}

/** The calls, in order; each returns what it prints and throws on any mismatch. */
export const calls = [
  {
    name: 'users.getUser',
    async run({ cfg, clerk, userIds }) {
      const user = await clerk.users.getUser(userIds[0]);
      assert.deepEqual(user.raw, await expected(cfg, `/users/${userIds[0]}`));
      return { id: user.id, email: user.primaryEmailAddress?.emailAddress ?? null };
    },
  },
  {
    name: 'users.getUserList(userId)',
    async run({ cfg, clerk, userIds }) {
      const { data, totalCount } = await clerk.users.getUserList({ userId: userIds });
      const want = await expected(cfg, `/users?${userIdQuery(userIds)}`);
      assert.deepEqual(data.map((user) => user.raw), want);
      const count = await expected(cfg, `/users/count?${userIdQuery(userIds)}`);
      assert.equal(totalCount, count.total_count);
      return { ids: data.map((user) => user.id), totalCount };
    },
  },
  {
    name: 'users.getUserList(page)',
    async run({ cfg, clerk }) {
      const { data, totalCount } = await clerk.users.getUserList({
        limit: 2,
        offset: 1,
        orderBy: '+created_at',
      });
      const want = await expected(cfg, '/users?limit=2&offset=1&order_by=%2Bcreated_at');
      assert.deepEqual(data.map((user) => user.id), want.map((user) => user.id));
      assert.equal(totalCount, (await expected(cfg, '/users/count')).total_count);
      return { ids: data.map((user) => user.id), totalCount };
    },
  },
  {
    name: 'users.getCount',
    async run({ cfg, clerk }) {
      const count = await clerk.users.getCount();
      assert.equal(count, (await expected(cfg, '/users/count')).total_count);
      return { count };
    },
  },
  {
    name: 'users.getUser(missing)',
    async run({ clerk }) {
      const error = await clerk.users.getUser('user_sdkcheckmissing').then(
        () => assert.fail('a missing user must throw'),
        (error) => error,
      );
      assert.equal(error.status, 404);
      assert.equal(error.errors[0].code, 'resource_not_found');
      return { status: error.status, code: error.errors[0].code, traceId: error.clerkTraceId };
    },
  },
  {
    name: 'users.updateUserMetadata',
    async run({ cfg, clerk, writeUser, nonce }) {
      const before = await expected(cfg, `/users/${writeUser}`);
      const merged = await clerk.users.updateUserMetadata(writeUser, {
        publicMetadata: { sdk_node: { run: nonce, nested: { a: 1 } } },
        privateMetadata: { sdk_node_secret: nonce },
      });
      assert.deepEqual(merged.publicMetadata, {
        ...before.public_metadata,
        sdk_node: { run: nonce, nested: { a: 1 } },
      });
      assert.deepEqual(merged.privateMetadata, { ...before.private_metadata, sdk_node_secret: nonce });
      assert.ok(merged.updatedAt > before.updated_at, 'updated_at moves forward');
      assert.deepEqual(merged.raw, await expected(cfg, `/users/${writeUser}`));
      // A null removes a key at any depth: back to the metadata the user had.
      const restored = await clerk.users.updateUserMetadata(writeUser, {
        publicMetadata: { sdk_node: null },
        privateMetadata: { sdk_node_secret: null },
      });
      assert.deepEqual(restored.publicMetadata, before.public_metadata);
      assert.deepEqual(restored.privateMetadata, before.private_metadata ?? {});
      return { id: writeUser, merged: merged.publicMetadata.sdk_node, restored: restored.publicMetadata };
    },
  },
  {
    name: 'organizations.getOrganization',
    async run({ cfg, clerk, orgId }) {
      const org = await clerk.organizations.getOrganization({ organizationId: orgId });
      const want = await expected(cfg, `/organizations/${orgId}`);
      assert.deepEqual(org.raw, want);
      const bySlug = await clerk.organizations.getOrganization({ slug: want.slug });
      assert.equal(bySlug.id, orgId);
      return { id: org.id, slug: org.slug, name: org.name };
    },
  },
  {
    name: 'organizations.getOrganizationMembershipList',
    async run({ cfg, clerk, orgId }) {
      const { data, totalCount } = await clerk.organizations.getOrganizationMembershipList({
        organizationId: orgId,
        limit: 5,
      });
      const want = await expected(cfg, `/organizations/${orgId}/memberships?limit=5`);
      assert.deepEqual(data.map((m) => m.raw), want.data);
      assert.equal(totalCount, want.total_count);
      return { totalCount, userIds: data.map((m) => m.publicUserData.userId), roles: data.map((m) => m.role) };
    },
  },
  {
    name: 'invitations.createInvitation',
    async run({ clerk, nonce }) {
      const emailAddress = `sdk-node-${nonce}@example.com`;
      const invitation = await clerk.invitations.createInvitation({
        emailAddress,
        publicMetadata: { source: 'sdk-node' },
      });
      assert.equal(invitation.emailAddress, emailAddress);
      assert.equal(invitation.status, 'pending');
      assert.deepEqual(invitation.publicMetadata, { source: 'sdk-node' });
      assert.match(invitation.id, /^inv_/);
      return { id: invitation.id, status: invitation.status, emailAddress };
    },
  },
  {
    name: 'jwks.getJwks',
    async run({ cfg, clerk }) {
      const jwks = await clerk.jwks.getJwks();
      assert.deepEqual(jwks, await expected(cfg, '/jwks'));
      return { kids: jwks.keys.map((key) => key.kid) };
    },
  },
  {
    name: 'wrong key',
    async run({ cfg }) {
      const stranger = createClerkClient({ secretKey: 'sk_test_not_the_key', apiUrl: cfg.apiUrl });
      const error = await stranger.users.getCount().then(
        () => assert.fail('a wrong key must be refused'),
        (error) => error,
      );
      assert.equal(error.status, 401);
      return { status: error.status, code: error.errors[0]?.code ?? null };
    },
  },
];

/** Runs every call, printing one JSON line each; false if any failed. */
export async function main() {
  const context = await setup(config());
  let ok = true;
  for (const call of calls) {
    try {
      const got = await call.run(context);
      console.log(JSON.stringify({ call: call.name, ok: true, ...got }));
    } catch (error) {
      ok = false;
      console.log(JSON.stringify({ call: call.name, ok: false, error: String(error?.stack ?? error) }));
    }
  }
  return ok;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main().then(
    (ok) => process.exit(ok ? 0 : 1),
    (error) => {
      console.error(error);
      process.exit(1);
    },
  );
}
