/**
 * Tokens from the plugin's REST routes, with the `wp_rest` nonce kept fresh so that a tab
 * stays live for days:
 * - `fanout/v1/token`: the connection token (`fetchToken`, the client's `getToken`);
 * - `fanout/v1/channel-token`: a channel token for the room of a post the user can edit
 *   (`fetchChannelToken`, the client's `getChannelToken`), which the connection token does
 *   not grant.
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

/**
 * How long to wait before asking for a channel token again after a failure that may pass
 * (the site unreachable, an HTTP 5xx or 429): the client ends the subscription when
 * `getChannelToken` gives nothing, so a short outage is waited out here, twice.
 */
const CHANNEL_TOKEN_RETRY_MS = [2000, 5000];

/** A POST to one of the plugin's routes with the logged-in cookie and the nonce (and a JSON body). */
function post(config, url, body) {
  const headers = { 'X-WP-Nonce': config.nonce, Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  return fetch(url, {
    method: 'POST',
    credentials: 'same-origin',
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
}

/** Takes the fresh nonce a REST answer carries. */
function rememberNonce(config, response) {
  const fresh = response.headers.get('X-WP-Nonce');
  if (fresh && NONCE.test(fresh)) config.nonce = fresh;
}

/**
 * Whether WordPress refused the request for its nonce (403 `rest_cookie_invalid_nonce`),
 * rather than for what it asked (a post the user may not edit: 403 too). A 403 without a
 * JSON body counts as the nonce's.
 */
async function nonceRefused(response) {
  if (response.status !== 403) return false;
  try {
    const body = await response.clone().json();
    return body?.code === 'rest_cookie_invalid_nonce';
  } catch {
    return true;
  }
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

/** Sends `request()`; after a 403 for an expired nonce, once more with a new nonce. */
async function withNonce(config, request) {
  let response = await request();
  if ((await nonceRefused(response)) && (await renewNonce(config))) {
    response = await request();
  }
  if (response.ok) rememberNonce(config, response);
  return response;
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
  const response = await withNonce(config, () => post(config, config.tokenUrl));
  if (!response.ok) {
    throw new Error(`fanout token request failed: HTTP ${response.status}`);
  }
  const body = await response.json();
  return body.token;
}

/**
 * A channel token for `channel`, the room of a post (`room:wp1.post-17`), from the route
 * `fanout/v1/channel-token`: the client's `getChannelToken`, which it calls when the gateway
 * refuses the room's subscribe (`forbidden`) and again before the token expires. Resolves
 * to null, and the client ends the subscription, when the site gives none: not one of its
 * post rooms (no request is made), a post the user may not edit (403), a user logged out
 * (401). A failure that may pass (no answer, 5xx, 429) is tried again twice, then thrown.
 *
 * @param {{channelTokenUrl?: string, postRoomPrefix?: string, nonce: string, nonceUrl?: string}} config
 * @param {string} channel
 * @returns {Promise<string|null>}
 */
export async function fetchChannelToken(config, channel) {
  if (!config.channelTokenUrl || !config.postRoomPrefix || !String(channel).startsWith(config.postRoomPrefix)) {
    return null;
  }
  for (let attempt = 0; ; attempt++) {
    let response;
    try {
      response = await withNonce(config, () => post(config, config.channelTokenUrl, { channel }));
    } catch (error) {
      if (attempt >= CHANNEL_TOKEN_RETRY_MS.length) throw error;
      await sleep(CHANNEL_TOKEN_RETRY_MS[attempt]);
      continue;
    }
    if (response.ok) {
      const body = await response.json();
      return typeof body.token === 'string' && body.token !== '' ? body.token : null;
    }
    if ((response.status >= 500 || response.status === 429) && attempt < CHANNEL_TOKEN_RETRY_MS.length) {
      await sleep(CHANNEL_TOKEN_RETRY_MS[attempt]);
      continue;
    }
    return null;
  }
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
