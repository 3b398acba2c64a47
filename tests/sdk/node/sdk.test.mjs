// The calls of sdk_calls.mjs as a node:test suite, one test per call, in order (the metadata
// write restores what it changed). Settings come from the environment: see sdk_calls.mjs.

import { before, test } from 'node:test';

import { calls, config, setup } from './sdk_calls.mjs';

let context;

before(async () => {
  context = await setup(config());
});

for (const call of calls) {
  test(call.name, async (t) => {
    const got = await call.run(context);
    t.diagnostic(JSON.stringify({ call: call.name, ...got }));
  });
}
