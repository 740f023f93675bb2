// The TypeScript side: the generated event types match docs/events.schema.json, and the
// hand-written declarations compile against an example of their use (tsc --strict).

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { test } from "node:test";

import { OUTPUT_PATH, generateFromRepository } from "../scripts/gen-event-types.mjs";

const PACKAGE_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

test("src/events.d.ts is what scripts/gen-event-types.mjs makes of docs/events.schema.json", () => {
  assert.equal(readFileSync(OUTPUT_PATH, "utf8"), generateFromRepository(), "out of date: run node clients/js/scripts/gen-event-types.mjs");
});

test("the declarations compile with tsc --strict against an example of their use", { timeout: 120000 }, () => {
  const tsc = path.join(PACKAGE_ROOT, "node_modules/typescript/bin/tsc");
  try {
    execFileSync(process.execPath, [tsc, "--noEmit", "--strict", "--target", "es2022", "--module", "nodenext", "--moduleResolution", "nodenext", "--lib", "es2022,dom", "--types", "react", "test/types/usage.ts"], { cwd: PACKAGE_ROOT, stdio: "pipe" });
  } catch (error) {
    assert.fail(`tsc failed:\n${error.stdout}${error.stderr}`);
  }
});
