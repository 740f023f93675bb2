/**
 * Reading a JWT's `exp` without verifying it. The client only needs to know when to ask
 * for a new token; the gateway is the one that verifies signatures.
 *
 * @module
 */

/**
 * The `exp` claim of a JWT (Unix seconds), or `undefined` when the token is not a JWT or
 * has no numeric `exp`.
 * @param {string} token
 * @returns {number | undefined}
 */
export function tokenExpiry(token) {
  const parts = typeof token === "string" ? token.split(".") : [];
  if (parts.length !== 3) return undefined;
  try {
    const base64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
    const binary = atob(base64.padEnd(base64.length + ((4 - (base64.length % 4)) % 4), "="));
    const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    // (`claims` null: reading `exp` throws, which answers undefined too.)
    return typeof claims.exp === "number" && Number.isFinite(claims.exp) ? claims.exp : undefined;
  } catch {
    return undefined;
  }
}
