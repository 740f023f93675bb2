/**
 * Connection tokens from the plugin's REST route `fanout/v1/token`.
 */

/**
 * Fetches a token with the logged-in cookie and the `wp_rest` nonce (X-WP-Nonce), which
 * WordPress requires of cookie-authenticated REST requests. The client calls it to connect
 * and again before the token expires.
 *
 * @param {{tokenUrl: string, nonce: string}} config
 * @returns {Promise<string>}
 */
export async function fetchToken(config) {
  const response = await fetch(config.tokenUrl, {
    method: 'POST',
    credentials: 'same-origin',
    headers: { 'X-WP-Nonce': config.nonce, Accept: 'application/json' },
  });
  if (!response.ok) {
    throw new Error(`fanout token request failed: HTTP ${response.status}`);
  }
  const body = await response.json();
  return body.token;
}
