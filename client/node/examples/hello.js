// Hello broker: one user, a count, the first users of an export, a permit.
//
//   cargo run --release -- demo          # in another terminal
//   node client/node/examples/hello.js [host:port]
//
// With a policy file, set CLERK_BROKER_TOKEN to the caller's token.

import { Client, durationMs, grpc, retryAfterMs } from '../src/index.js';

const target = process.argv[2] ?? process.env.CLERK_BROKER_URL ?? '127.0.0.1:50051';
const broker = new Client(target, { token: process.env.CLERK_BROKER_TOKEN, timeoutMs: 5000 });
try {
  try {
    const user = await broker.getUser('user_WjqhESHrprLoQRaGgNMIoIuAr9n');
    console.log('user:', user.id, user.primaryEmailAddress);
  } catch (error) {
    const name = Object.keys(grpc.status).find((k) => grpc.status[k] === error.code);
    console.log('lookup failed:', name, error.details, 'retry after (ms):', retryAfterMs(error));
  }
  console.log('users named frances:', await broker.countUsers({ nameQuery: 'frances' }));
  for await (const user of broker.listUsers({ orderBy: '+created_at', maxUsers: 3 })) {
    console.log('exported:', user.id);
  }
  const permit = await broker.acquirePermit({ cost: 1, waitMs: 2000 });
  console.log(`permit granted on ${permit.budget} (${permit.limit} per ${durationMs(permit.window)} ms)`);
} finally {
  broker.close();
}
