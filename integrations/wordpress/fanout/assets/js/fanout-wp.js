/**
 * Entry module of the fanout WordPress plugin: one connection per page, shared by the
 * admin-bar bell and, on post edit screens, the "who is here" indicator.
 *
 * Configuration comes from PHP as `window.fanoutWP` (FanoutWP\Assets::enqueue): the gateway
 * URL, the REST route that mints tokens and the `wp_rest` nonce it needs. Other scripts of
 * the site can use the connection as `window.fanoutWP.client` (e.g. to subscribe to more
 * channels that the `fanout_token_channels` filter grants).
 */
import { Fanout } from './fanout/index.js';
import { mountBell } from './bell.js';
import { mountPresence } from './presence.js';
import { fetchToken } from './wp-token.js';

const config = window.fanoutWP;
if (config) {
  const client = new Fanout({ url: config.url, getToken: () => fetchToken(config), transport: 'auto' });
  mountBell(client, config);
  if (config.postRoom) mountPresence(client, config);
  client.connect();
  config.client = client;
}
