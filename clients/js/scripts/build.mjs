#!/usr/bin/env node
// Builds the installable package into dist/ with esbuild (npm run build; `npm pack` runs it
// as prepack):
//
//   dist/index.mjs, dist/index.cjs      the root entry, ES module and CommonJS, ES2019
//   dist/react.mjs, dist/react.cjs      the React hooks; they import the root entry of the
//                                       same format (one Fanout class per format), and react
//   dist/fanout.min.js                  a minified browser bundle for a plain <script>: the
//                                       root entry as the global `FanoutClient`
//   dist/*.d.ts, *.d.mts, *.d.cts       the declarations of src/, for TypeScript's node10
//                                       (main/types and react/package.json), and node16 and
//                                       bundler resolution (exports: import and require)
//   LICENSE                             the repository's license, packed with it
//
// The sources in src/ stay what they are (ES modules that run unbuilt: the demo and the
// WordPress plugin load them as they are).

import { copyFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { build } from "esbuild";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const DIST = path.join(ROOT, "dist");
const pkg = JSON.parse(readFileSync(path.join(ROOT, "package.json"), "utf8"));
export const TARGET = "es2019";

/** The React entry imports the root entry (./index.js): in a build, the built one next to it. */
function rootEntryAsExternal(extension) {
  return {
    name: "root-entry-external",
    setup(b) {
      b.onResolve({ filter: /^\.\/index\.js$/ }, (args) => (args.importer.endsWith(`${path.sep}react.js`) ? { path: `./index${extension}`, external: true } : undefined));
    },
  };
}

export async function buildPackage() {
  rmSync(DIST, { recursive: true, force: true });
  mkdirSync(DIST, { recursive: true });
  const banner = `/*! ${pkg.name} ${pkg.version} | Apache-2.0 | the fanout gateway's client */`;
  const common = { bundle: true, target: TARGET, platform: "neutral", logLevel: "warning", legalComments: "none", banner: { js: banner } };
  for (const [format, extension] of [["esm", ".mjs"], ["cjs", ".cjs"]]) {
    await build({ ...common, entryPoints: [path.join(ROOT, "src/index.js")], format, outfile: path.join(DIST, `index${extension}`) });
    await build({
      ...common,
      entryPoints: [path.join(ROOT, "src/react.js")],
      format,
      outfile: path.join(DIST, `react${extension}`),
      external: ["react"],
      plugins: [rootEntryAsExternal(extension)],
    });
  }
  await build({
    ...common,
    platform: "browser",
    entryPoints: [path.join(ROOT, "src/index.js")],
    format: "iife",
    globalName: "FanoutClient",
    minify: true,
    // Internal properties (a leading underscore: nothing of the API) get short names.
    mangleProps: /^_[a-zA-Z]/,
    outfile: path.join(DIST, "fanout.min.js"),
  });
  // Declarations: one per resolution mode, their relative imports naming the file of the
  // same kind (./index.mjs -> index.d.mts, ./index.cjs -> index.d.cts).
  for (const name of ["index", "react", "events"]) {
    const source = readFileSync(path.join(ROOT, "src", `${name}.d.ts`), "utf8");
    for (const [suffix, extension] of [[".d.ts", ".js"], [".d.mts", ".mjs"], [".d.cts", ".cjs"]]) {
      const text = source.replace(/from "\.\/(index|events)\.js"/g, (_, file) => `from "./${file}${extension}"`);
      writeFileSync(path.join(DIST, `${name}${suffix}`), text);
    }
  }
  copyFileSync(path.resolve(ROOT, "../../LICENSE"), path.join(ROOT, "LICENSE"));
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  await buildPackage();
  // Quiet under `npm pack --json`, whose output must stay JSON.
  if (process.env.npm_lifecycle_event !== "prepack") console.log(`built ${path.relative(process.cwd(), DIST) || "dist"}/ (${TARGET})`);
}
