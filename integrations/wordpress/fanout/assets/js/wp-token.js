/**
 * Connection tokens from the plugin's REST route `fanout/v1/token`, with the `wp_rest` nonce
 * kept fresh so that a tab stays live for days.
 *
 * A nonce lives 12 to 24 hours (WordPress's `nonce_life`); the one printed into the page at
 * load time would make every token request fail after that. So:
 * - every answer of the REST API to a cookie-authenticated request carries a fresh nonce in
 *   its `X-WP-Nonce` header: each token request takes it for the next one;
 * - when the nonce has expired anyway (a laptop asleep overnight), WordPress answers 403
 *   `rest_cookie_invalid_nonce`: a new nonce comes from `admin-ajax.php?action=rest-nonce`
 *   (WordPress's own renewal, for a user still logged in), and the token request is tried
 *   once more.
 * The fresh nonce is written back to `config.nonce` (`window.fanoutWP.nonce`), where the
 * site's own scripts find it too.
 */

/** What a `wp_rest` nonce looks like: `wp_ajax_rest_nonce` answers `0` (or an error page) to a logged-out user. */
const NONCE = /^[0-9a-f]{10}$/;

function tokenRequest(config) {
  return fetch(config.tokenUrl, {
    method: 'POST',
    credentials: 'same-origin',
    headers: { 'X-WP-Nonce': config.nonce, Accept: 'application/json' },
  });
}

/** Takes the fresh nonce a REST answer carries. */
function rememberNonce(config, response) {
  const fresh = response.headers.get('X-WP-Nonce');
  if (fresh && NONCE.test(fresh)) config.nonce = fresh;
}

/** Asks WordPress for a new nonce; false when it gives none (logged out, no renewal URL). */
export async function renewNonce(config) {
  if (!config.nonceUrl) return false;
  const response = await fetch(config.nonceUrl, { credentials: 'same-origin', headers: { Accept: 'text/plain' } });
  if (!response.ok) return false;
  const nonce = (await response.text()).trim();
  if (!NONCE.test(nonce)) return false;
  config.nonce = nonce;
  return true;
}

/**
 * Fetches a token with the logged-in cookie and the `wp_rest` nonce (X-WP-Nonce), which
 * WordPress requires of cookie-authenticated REST requests. The client calls it to connect
 * and again before the token expires.
 *
 * @param {{tokenUrl: string, nonce: string, nonceUrl?: string}} config
 * @returns {Promise<string>}
 */
export async function fetchToken(config) {
  let response = await tokenRequest(config);
  if (response.status === 403 && (await renewNonce(config))) {
    response = await tokenRequest(config);
  }
  if (!response.ok) {
    throw new Error(`fanout token request failed: HTTP ${response.status}`);
  }
  rememberNonce(config, response);
  const body = await response.json();
  return body.token;
}
