/**
 * The global object, also where `globalThis` does not exist yet (the package targets
 * ES2019 engines; `globalThis` is ES2020).
 *
 * @module
 */

/** @type {Record<string, any>} */
export const root =
  typeof globalThis !== "undefined" ? globalThis : typeof self !== "undefined" ? self : typeof window !== "undefined" ? window : {};
