/**
 * Entry module of the fanout WordPress plugin: one connection per page, shared by the
 * admin-bar bell and, on post edit screens, the "who is here" indicator.
 *
 * Configuration comes from PHP as `window.fanoutWP` (FanoutWP\Assets::enqueue): the gateway
 * URL, the REST routes that mint connection and channel tokens and the `wp_rest` nonce they
 * need. Other scripts of
 * the site can use the connection as `window.fanoutWP.client` (e.g. to subscribe to more
 * channels that the `fanout_token_channels` filter grants).
 */
import { Fanout } from './fanout/index.js';
import { mountBell } from './bell.js';
import { mountPresence } from './presence.js';
import { fetchChannelToken, fetchToken } from './wp-token.js';

const config = window.fanoutWP;
if (config) {
  const client = new Fanout({
    url: config.url,
    getToken: () => fetchToken(config),
    // Post rooms are not in the connection token: each is granted by a channel token, for a
    // post the user can edit, asked for when the gateway refuses the room's subscribe.
    getChannelToken: (channel) => fetchChannelToken(config, channel),
    transport: 'auto',
  });
  mountBell(client, config);
  if (config.postRoom) mountPresence(client, config);
  client.connect();
  config.client = client;
}
