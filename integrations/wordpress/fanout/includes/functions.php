<?php
/**
 * The plugin's PHP API for themes and other plugins. The publishing functions queue the
 * message and return at once: it is published after the response is sent (see
 * FanoutWP\Publishing), so that no request waits for the gateway. They return `true` when
 * queued, or a `WP_Error` (an invalid channel; publishing paused after a failure) and never
 * throw. Failures are logged with error_log (without secrets) and fire the
 * `fanout_publish_failed` action.
 *
 * Channel names are the site's own (FanoutWP\Channels): `broadcast` means everyone logged in
 * on this site (the whole gateway with the network-wide broadcast option), and users' and
 * posts' channels come from `fanout_user_channel()` and `fanout_post_room()`.
 *
 * Check that the plugin is active with `function_exists('fanout_publish')`.
 *
 * @package Fanout
 */

declare(strict_types=1);

if (!defined('ABSPATH')) {
    exit;
}

/**
 * Publishes `$data` to a fanout channel (after the response). Subscribers receive it as the
 * message's `data`; on channels with history (`user:`, `dag:`) it is kept, so clients that
 * were away recover it. `broadcast` is this site's broadcast channel.
 *
 * ```php
 * fanout_publish('room:orders', ['type' => 'order_paid', 'data' => ['order_id' => 42]]);
 * ```
 *
 * @param string $channel a channel name: `broadcast`, `user:<id>`, `room:<name>`, ...
 * @param mixed  $data    anything JSON-encodable (arrays become JSON objects/arrays); a
 *                        string is sent as it is.
 * @return true|WP_Error
 */
function fanout_publish(string $channel, mixed $data): bool|WP_Error
{
    return \FanoutWP\Publishing::publish($channel, $data);
}

/**
 * Sends a notification to one user, on every tab and device where they are logged in on
 * this site (their channel, `fanout_user_channel($userId)`; the admin-bar bell shows it).
 *
 * `$data` is either a whole event (an array with a `type`, published as it is), or the fields
 * of a `notification` event (docs/events.md): `title` (required), `message`, `url`, `level`
 * (`info`, `success`, `warning`, `error`) and `id` (generated when absent), which are wrapped
 * into `{"type":"notification","data":{...},"timestamp":...}`.
 *
 * ```php
 * fanout_notify_user($order->get_customer_id(), ['title' => 'Your order shipped', 'url' => $url]);
 * ```
 *
 * @param int|string          $userId a WordPress user id.
 * @param array<string,mixed> $data
 * @return true|WP_Error
 */
function fanout_notify_user(int|string $userId, array $data): bool|WP_Error
{
    return fanout_publish(\FanoutWP\Channels::userChannel((int) $userId), fanout_notification_event($data));
}

/**
 * Publishes one message to several channels at once, all or nothing (e.g. every member of
 * a team: `[fanout_user_channel(3), fanout_user_channel(8)]`, or `['broadcast']`: everyone
 * logged in on this site). An array is an event or the fields of a notification, as for
 * `fanout_notify_user`; any other value is published as it is.
 *
 * @param list<string> $channels
 * @param mixed        $data
 * @return true|WP_Error
 */
function fanout_broadcast(array $channels, mixed $data): bool|WP_Error
{
    return \FanoutWP\Publishing::broadcast($channels, is_array($data) ? fanout_notification_event($data) : $data);
}

/**
 * Makes a catalogue event of `$data`: an array with a `type` is returned as it is (with a
 * `timestamp` added if missing); anything else is taken as the fields of a `notification`.
 *
 * @param array<string,mixed> $data
 * @return array<string,mixed>
 */
function fanout_notification_event(array $data): array
{
    if (isset($data['type']) && is_string($data['type'])) {
        $data['timestamp'] ??= time();
        return $data;
    }
    $data['id'] = isset($data['id']) ? (string) $data['id'] : 'wp-' . wp_generate_uuid4();
    $data['title'] = isset($data['title']) ? (string) $data['title'] : '';
    return ['type' => 'notification', 'data' => $data, 'timestamp' => time()];
}

/**
 * Publishes to every connection of the gateway: every site of a multisite network, and
 * anything else connected to the same gateway (the gateway's own `broadcast` channel).
 * `$data` as for `fanout_broadcast`.
 *
 * @return true|WP_Error
 */
function fanout_network_broadcast(mixed $data): bool|WP_Error
{
    return \FanoutWP\Publishing::networkBroadcast(is_array($data) ? fanout_notification_event($data) : $data);
}

/**
 * A user's channel on this site, e.g. `user:wp1.42` (see FanoutWP\Channels), for code that
 * publishes to it from elsewhere (another service, `redis-cli`).
 */
function fanout_user_channel(int $userId): string
{
    return \FanoutWP\Channels::userChannel($userId);
}

/** The "who is here" room of a post on this site, e.g. `room:wp1.post-17`. */
function fanout_post_room(int $postId): string
{
    return \FanoutWP\Channels::postRoom($postId);
}
