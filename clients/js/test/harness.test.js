// The test harness itself: an assertion that fails inside a client callback fails the test
// at once with that assertion (the client's callback guard would otherwise report it as an
// error event, and the test would only time out).

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { test } from "node:test";

const HERE = path.dirname(fileURLToPath(import.meta.url));

test("an assertion failing inside a client callback fails the test with that assertion, not a timeout", { timeout: 90000 }, () => {
  const flags = process.execArgv.filter((flag) => flag === "--experimental-websocket");
  // The fixture runs as a test file of its own (outside this runner's context).
  const { NODE_TEST_CONTEXT, ...env } = process.env;
  const run = spawnSync(process.execPath, [...flags, "--test-reporter=tap", path.join(HERE, "fixtures/callback-assertion.js")], {
    encoding: "utf8",
    env,
    timeout: 80000,
  });
  const output = `${run.stdout}${run.stderr}`;
  assert.equal(run.status, 1, `the fixture's test fails:\n${output}`);
  assert.match(output, /the callback's own assertion/, output);
  assert.match(output, /something else/, "the assertion's actual value is reported");
  assert.doesNotMatch(output, /timed out after/, "failed by the assertion, not by the wait's timeout");
});
