/**
 * Entry module of the fanout WordPress plugin: one connection per page, shared by the
 * admin-bar bell and, on post edit screens, the "who is here" indicator.
 *
 * Configuration comes from PHP as `window.fanoutWP` (FanoutWP\Assets::enqueue): the gateway
 * URL, the REST route that mints tokens and the `wp_rest` nonce it needs.
 */
import { Fanout } from './fanout/index.js';
import { mountBell } from './bell.js';
import { mountPresence } from './presence.js';

/**
 * Fetches a connection token from `fanout/v1/token` with the logged-in cookie and the REST
 * nonce. The client calls it to connect and again before the token expires.
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

function start(config) {
  const client = new Fanout({ url: config.url, getToken: () => fetchToken(config), transport: 'auto' });
  mountBell(client, config);
  if (config.postRoom) mountPresence(client, config);
  client.connect();
  window.fanoutWP.client = client; // for other scripts of the site: subscribe to more channels
}

if (window.fanoutWP) start(window.fanoutWP);
