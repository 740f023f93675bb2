<?php
/**
 * fanout inbox worker for WordPress: reads what browsers `send` (the gateway appends it to a
 * Redis stream, the inbox) and runs a WordPress action for each message, as its sender:
 *
 *     do_action('fanout_inbox', $event, $user, $message);          every message
 *     do_action('fanout_inbox_' . $type, $event, $user, $message); e.g. fanout_inbox_human_decision
 *
 * `$event` is what the client sent (decoded JSON; `$type` is its `type`), `$user` the sender's
 * WP_User (null when the user no longer exists), `$message` the
 * Fanout\InboxMessage (channel, connId, receivedAt, redelivered, ...). While an action runs,
 * the sender is the current user, so capability checks (`current_user_can`) apply to them.
 *
 * Only messages sent with a token this site minted are handled: the sender's identity must be
 * one of this site's (`wp1.42`, see FanoutWP\Channels). Anything else (another site of the
 * network, a token minted by another application with the same secret) is refused:
 * acknowledged without running an action, logged, and announced with `fanout_inbox_refused`.
 * Each site reads the shared stream in a consumer group of its own (`wordpress-wp1`).
 *
 * A message is acknowledged when its actions return; an action that throws leaves it pending,
 * and it is handled again a minute later. What the actions publish is sent after each message. Runs without WP-Cron and without WP-CLI:
 *
 *     php bin/inbox-worker.php --wp-load=/usr/share/wordpress/wp-load.php [--host=example.com]
 *         [--url=https://example.com/site2/] [--consumer=NAME] [--max-messages=N] [--max-seconds=S]
 *
 * Options may also come from the environment: FANOUT_WP_LOAD, FANOUT_WP_HOST, FANOUT_WP_URL,
 * FANOUT_INBOX_CONSUMER. `--host` is the site's host name: Debian's WordPress chooses its
 * configuration file (/etc/wordpress/config-<host>.php) by it, and multisite its site.
 * `--url` is the site's address, for a site of a multisite network that its host alone does
 * not name (a subdirectory site): one worker per site of the network.
 * SIGTERM or SIGINT stop it after the message in hand (see fanout-inbox.service).
 * Exit status: 0 stopped, 1 failed (Redis unreachable, plugin inactive), 2 bad usage.
 *
 * @package Fanout
 */

declare(strict_types=1);

if (PHP_SAPI !== 'cli') {
    http_response_code(404);
    exit;
}

/**
 * The worker's options: command line first, then the environment.
 *
 * @return array{wp_load: string, host: string, url: string, consumer: ?string, max_messages: int, max_seconds: float}
 */
function fanout_worker_options(array $argv): array
{
    $options = [
        'wp_load' => (string) getenv('FANOUT_WP_LOAD'),
        'host' => (string) getenv('FANOUT_WP_HOST'),
        'url' => (string) getenv('FANOUT_WP_URL'),
        'consumer' => getenv('FANOUT_INBOX_CONSUMER') ?: null,
        'max_messages' => 0,
        'max_seconds' => 0.0,
    ];
    foreach (array_slice($argv, 1) as $arg) {
        if ($arg === '--help' || $arg === '-h') {
            fwrite(STDOUT, "usage: php inbox-worker.php --wp-load=PATH/wp-load.php [--host=HOST] [--url=URL] [--consumer=NAME] [--max-messages=N] [--max-seconds=S]\n");
            exit(0);
        }
        if (!preg_match('/^--(wp-load|host|url|consumer|max-messages|max-seconds)=(.*)$/s', $arg, $m)) {
            fwrite(STDERR, "inbox-worker: unknown argument $arg (try --help)\n");
            exit(2);
        }
        $key = str_replace('-', '_', $m[1]);
        $options[$key] = match ($key) {
            'max_messages' => max(0, (int) $m[2]),
            'max_seconds' => max(0.0, (float) $m[2]),
            default => $m[2],
        };
    }
    if ($options['wp_load'] === '') {
        // A plugin installed at <site>/wp-content/plugins/fanout: the site is four levels up.
        $options['wp_load'] = dirname(__DIR__, 4) . '/wp-load.php';
    }
    if (!is_file($options['wp_load'])) {
        fwrite(STDERR, "inbox-worker: no wp-load.php at {$options['wp_load']}; give --wp-load=PATH or FANOUT_WP_LOAD\n");
        exit(2);
    }
    return $options;
}

$options = fanout_worker_options($argv);

// What WordPress reads from a web request: the host selects the site (and, on Debian, the
// configuration file); on a network, the host and the path.
if ($options['url'] !== '') {
    $url = parse_url($options['url']);
    if (!is_array($url) || !isset($url['host']) || !in_array($url['scheme'] ?? '', ['http', 'https'], true)) {
        fwrite(STDERR, "inbox-worker: --url must be the site's http(s) address, got {$options['url']}\n");
        exit(2);
    }
    $_SERVER['HTTP_HOST'] = $url['host'] . (isset($url['port']) ? ':' . $url['port'] : '');
    $_SERVER['REQUEST_URI'] = $url['path'] ?? '/';
    if ($url['scheme'] === 'https') {
        $_SERVER['HTTPS'] = 'on';
    }
}
if ($options['host'] !== '') {
    $_SERVER['HTTP_HOST'] ??= $options['host'];
    // Debian's wp-config.php picks config-<WORDPRESS_CONFIG>.php before looking at the host.
    if ($options['url'] !== '') {
        $_SERVER['WORDPRESS_CONFIG'] ??= $options['host'];
    }
}
if (isset($_SERVER['HTTP_HOST'])) {
    $_SERVER['SERVER_NAME'] = preg_replace('/:\d+$/', '', $_SERVER['HTTP_HOST']);
}
$_SERVER['REQUEST_URI'] ??= '/';
$_SERVER['REQUEST_METHOD'] ??= 'GET';

require $options['wp_load'];

if (!function_exists('fanout_publish')) {
    fwrite(STDERR, "inbox-worker: the fanout plugin is not active on this site\n");
    exit(1);
}

$settings = \FanoutWP\Settings::class;
$stream = (string) $settings::get('inbox_stream');
$group = (string) $settings::get('inbox_group');

try {
    $inbox = \Fanout\Inbox::connect($settings::redisUrl(), $group, consumer: $options['consumer'], stream: $stream);
} catch (\Throwable $e) {
    fwrite(STDERR, 'inbox-worker: ' . $e->getMessage() . "\n");
    exit(1);
}

/**
 * Runs the actions of one message as its sender. Action names are built from the event's
 * `type`, which the client chose: only `snake_case` names (the catalogue's convention) make an
 * action, so that a client cannot reach arbitrary hooks (`fanout_inbox_` is always the prefix).
 */
$dispatch = static function (\Fanout\InboxMessage $message): void {
    $userId = \FanoutWP\Channels::userIdFromSub($message->user);
    if ($userId === null) {
        // Not minted by this site: never run an action for it. Logged without the data.
        error_log(sprintf(
            'fanout inbox: refused entry %s (channel %s, user %s): not sent with a token of this site (%s)',
            $message->id,
            $message->channel,
            $message->user,
            \FanoutWP\Channels::siteKey()
        ));
        /**
         * Fires for an inbox message that was not sent with a token of this site, which is
         * acknowledged without any other action.
         *
         * @param \Fanout\InboxMessage $message
         */
        do_action('fanout_inbox_refused', $message);
        return;
    }
    $user = get_user_by('id', $userId);
    $user = $user instanceof \WP_User ? $user : null;
    wp_set_current_user($user?->ID ?? 0);
    try {
        do_action('fanout_inbox', $message->data, $user, $message);
        $type = $message->type;
        if ($type !== null && preg_match('/^[a-z0-9_]{1,64}$/', $type)) {
            do_action('fanout_inbox_' . $type, $message->data, $user, $message);
        }
    } finally {
        // What the actions published goes out now, not when the worker exits.
        \FanoutWP\Publishing::flush();
        wp_set_current_user(0);
        // A long-running process: drop what this message cached in memory, so that the next
        // one reads fresh options and posts (a persistent object cache stays as it is).
        if (wp_cache_supports('flush_runtime')) {
            wp_cache_flush_runtime();
        }
    }
};

fwrite(STDERR, sprintf("inbox-worker: consumer %s of group %s reading %s\n", $inbox->consumer(), $group, $stream));
try {
    $handled = $inbox->run($dispatch, $options['max_messages'], $options['max_seconds']);
} catch (\Throwable $e) {
    fwrite(STDERR, 'inbox-worker: ' . $e->getMessage() . "\n");
    exit(1);
}
fwrite(STDERR, "inbox-worker: stopped; messages handled: $handled\n");
exit(0);
