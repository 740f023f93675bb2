<?php
/**
 * Publishing from WordPress without ever making a request wait for the gateway.
 *
 * `fanout_publish()` and friends only queue: the queue is published once the response has
 * been sent (`fastcgi_finish_request()` under PHP-FPM, `litespeed_finish_request()` under
 * LiteSpeed), or else at the very end of the request (the last `shutdown` callback), with
 * short timeouts (`FANOUT_TIMEOUT_MS`, at most 1 s to connect and 1 s per reply).
 *
 * A circuit breaker keeps a failure from costing every request: after a failure, publishing
 * is skipped site-wide for `FANOUT_BREAKER_SECONDS` (default 60), and what is skipped is
 * counted (`Publishing::status()`, shown on Settings > fanout).
 *
 * @package Fanout
 */

declare(strict_types=1);

namespace FanoutWP;

use Fanout\Channel;
use Fanout\HttpPublisher;
use Fanout\Publisher;
use Fanout\PublisherInterface;
use Fanout\SessionControlInterface;

if (!defined('ABSPATH')) {
    exit;
}

final class Publishing
{
    /** Option with the breaker's state and counters (not autoloaded; per site). */
    public const STATUS_OPTION = 'fanout_publish_status';

    /** Most messages one request queues; more are skipped and counted (a runaway loop must not eat the memory). */
    public const MAX_QUEUE = 10000;

    /**
     * What this request sends after its response: messages, and commands that cut a user's
     * connections.
     *
     * @var list<array{channels: list<string>, data: mixed}|array{cut: array{user: string, reason: string, reconnect: bool}}>
     */
    private static array $queue = [];

    private static bool $scheduled = false;

    /** The breaker's state as this request read it (null: not read yet). */
    private static ?array $status = null;

    /** Whether `$status` holds counts not written yet. */
    private static bool $countsPending = false;

    /**
     * Queues a message to one channel (with history where the channel keeps it).
     *
     * @return true|\WP_Error true when queued; a WP_Error for an invalid channel, or when
     *         publishing is paused after a failure (the message is skipped and counted).
     */
    public static function publish(string $channel, mixed $data): bool|\WP_Error
    {
        return self::enqueue([Channels::resolve($channel)], $data);
    }

    /**
     * Queues one message to several channels, published all or nothing.
     *
     * @param list<string> $channels
     * @return true|\WP_Error
     */
    public static function broadcast(array $channels, mixed $data): bool|\WP_Error
    {
        $channels = array_values(array_unique(array_map(static fn ($c) => Channels::resolve((string) $c), $channels)));
        if ($channels === []) {
            return true;
        }
        return self::enqueue($channels, $data);
    }

    /**
     * Queues a message to the gateway's own `broadcast`: every connection of the gateway,
     * every site of a network included.
     *
     * @return true|\WP_Error
     */
    public static function networkBroadcast(mixed $data): bool|\WP_Error
    {
        return self::enqueue([Channels::GATEWAY_BROADCAST], $data);
    }

    /**
     * Queues cutting a user's live connections on every gateway node, after the response:
     * their connections are closed (a `disconnect` frame with `$reason`, then 4004, or 4005
     * without `$reconnect`), and every token of the user issued until now is revoked (kept a
     * day, the longest token lifetime). With `$reconnect`, clients come back by themselves
     * and get a new token if the user still may (after a role change, with the new role's
     * channels); without, they stay away.
     *
     * @param string $user the user's fanout identity (`wp1.42`).
     * @return true|\WP_Error
     */
    public static function cutUser(string $user, string $reason, bool $reconnect): bool|\WP_Error
    {
        if (self::paused()) {
            self::skip(1);
            return self::error('fanout_publish_paused', 'fanout: the gateway is unreachable (publishing is paused); the connections of ' . $user . ' were not cut');
        }
        self::push(['cut' => ['user' => $user, 'reason' => $reason, 'reconnect' => $reconnect]]);
        return true;
    }

    /**
     * Publishes at once, waiting for the answer (bounded by the timeouts), whatever the
     * breaker says; a success closes the breaker. For what a person waits for on purpose,
     * such as the settings page's test notification.
     *
     * @return true|\WP_Error
     */
    public static function publishNow(string $channel, mixed $data): bool|\WP_Error
    {
        $channel = Channels::resolve($channel);
        try {
            Channel::assertValid($channel);
            self::send(self::makePublisher(), [$channel], $data);
        } catch (\Throwable $e) {
            return self::failed('publish to ' . $channel, $e, 0);
        }
        $status = self::status();
        if ($status['open_until'] > 0) {
            $status['open_until'] = 0;
            self::saveStatus($status);
        }
        return true;
    }

    /** Messages queued by this request and not published yet. */
    public static function pending(): int
    {
        return count(self::$queue);
    }

    /**
     * The breaker's state: `open_until` (Unix time; 0 when closed), `failures` (publishing
     * attempts that failed), `skipped` (messages not published: after a failure, during a
     * pause, or beyond the queue's size), `last_error`, `last_failure_at`.
     *
     * @return array{open_until: int, failures: int, skipped: int, last_error: string, last_failure_at: int}
     */
    public static function status(): array
    {
        if (self::$status === null) {
            $saved = get_option(self::STATUS_OPTION, []);
            $saved = is_array($saved) ? $saved : [];
            self::$status = [
                'open_until' => (int) ($saved['open_until'] ?? 0),
                'failures' => (int) ($saved['failures'] ?? 0),
                'skipped' => (int) ($saved['skipped'] ?? 0),
                'last_error' => (string) ($saved['last_error'] ?? ''),
                'last_failure_at' => (int) ($saved['last_failure_at'] ?? 0),
            ];
        }
        return self::$status;
    }

    /** Whether publishing is paused after a failure. */
    public static function paused(): bool
    {
        return self::status()['open_until'] > time();
    }

    /**
     * Publishes what is queued, in order, on one connection. Runs after the response
     * (`afterResponse`); the inbox worker calls it after each message. On the first failure
     * the breaker opens and the rest is skipped.
     */
    public static function flush(): void
    {
        try {
            self::publishQueue();
        } finally {
            self::saveCounts();
        }
    }

    private static function publishQueue(): void
    {
        $queue = self::$queue;
        self::$queue = [];
        if ($queue === []) {
            return;
        }
        if (self::paused()) {
            self::skip(count($queue));
            return;
        }
        try {
            $publisher = self::makePublisher();
        } catch (\Throwable $e) {
            self::failed('publish (connecting)', $e, count($queue));
            return;
        }
        foreach ($queue as $i => $message) {
            if (isset($message['cut'])) {
                $what = 'cutting the connections of ' . $message['cut']['user'];
                if (!$publisher instanceof SessionControlInterface) {
                    self::rejected($what, new \RuntimeException('the publisher from the fanout_publisher filter has no session control (Fanout\SessionControlInterface)'));
                    continue;
                }
            } else {
                $what = (count($message['channels']) > 1 ? 'broadcast to ' : 'publish to ') . implode(', ', $message['channels']);
            }
            try {
                if (isset($message['cut'])) {
                    $cut = $message['cut'];
                    // The disconnect first, so that clients learn why (4004, or 4005 for good);
                    // then no token issued until now connects again (a revoked token would
                    // otherwise close them first, with 4003).
                    $publisher->disconnect($cut['user'], reason: $cut['reason'], reconnect: $cut['reconnect']);
                    $publisher->revokeUser($cut['user'], keepSeconds: Settings::TOKEN_TTL_MAX);
                } else {
                    self::send($publisher, $message['channels'], $message['data']);
                }
            } catch (\Throwable $e) {
                if (self::aboutTheMessage($e)) {
                    // The gateway is there and refused this message (too large, say): the
                    // others go on, and nothing pauses.
                    self::rejected($what, $e);
                    continue;
                }
                self::failed($what, $e, count($queue) - $i);
                return;
            }
        }
    }

    /**
     * Whether a failure concerns one message rather than the way to the gateway: a payload
     * that cannot be encoded, Redis's error reply to the command itself (a payload above the
     * gateway's `max_payload_bytes`), the HTTP API's 400 or 413. Connection failures and
     * timeouts, a missing function library, a wrong API key or a 5xx open the breaker.
     */
    private static function aboutTheMessage(\Throwable $e): bool
    {
        if ($e instanceof \Fanout\Exception\InvalidArgumentException) {
            return true;
        }
        if ($e instanceof \Fanout\Exception\ApiException) {
            return in_array($e->status, [400, 413], true);
        }
        // Redis answered, with an error about the command.
        return $e instanceof \Fanout\Exception\RedisCommandException && !$e->connectionFailed();
    }

    /** One message refused: logged, announced, counted as skipped; the breaker stays closed. */
    private static function rejected(string $what, \Throwable $e): void
    {
        self::skip(1);
        error_log(sprintf('fanout: %s refused (%s): %s; the message was skipped', $what, get_class($e), $e->getMessage()));
        /** This action is documented in FanoutWP\Publishing::failed(). */
        do_action('fanout_publish_failed', new \WP_Error('fanout_publish_failed', sprintf('fanout: %s refused: %s', $what, $e->getMessage())), $e);
    }

    /**
     * The `shutdown` callback, last of all: ends the response first where the server can
     * (PHP-FPM, LiteSpeed), so that the browser does not wait for the publishing.
     */
    public static function afterResponse(): void
    {
        if (self::$queue === []) {
            return;
        }
        if (function_exists('fastcgi_finish_request')) {
            fastcgi_finish_request();
        } elseif (function_exists('litespeed_finish_request')) {
            litespeed_finish_request();
        }
        self::flush();
    }

    /**
     * @param list<string> $channels
     * @return true|\WP_Error
     */
    private static function enqueue(array $channels, mixed $data): bool|\WP_Error
    {
        try {
            foreach ($channels as $channel) {
                Channel::assertValid($channel);
            }
        } catch (\Throwable $e) {
            return self::error('fanout_publish_failed', sprintf('fanout: publish to %s failed: %s', implode(', ', $channels), $e->getMessage()));
        }
        if (self::paused()) {
            self::skip(1);
            return self::error('fanout_publish_paused', sprintf(
                'fanout: publishing is paused until %s after a failure (%s); the message was skipped',
                gmdate('H:i:s', self::status()['open_until']) . ' UTC',
                self::status()['last_error']
            ));
        }
        if (count(self::$queue) >= self::MAX_QUEUE) {
            self::skip(1);
            return self::error('fanout_publish_queue_full', sprintf('fanout: more than %d messages in one request; the message was skipped', self::MAX_QUEUE));
        }
        self::push(['channels' => $channels, 'data' => $data]);
        return true;
    }

    private static function push(array $item): void
    {
        self::$queue[] = $item;
        if (!self::$scheduled) {
            self::$scheduled = true;
            add_action('shutdown', [self::class, 'afterResponse'], PHP_INT_MAX);
        }
    }

    /**
     * @param list<string> $channels
     */
    private static function send(PublisherInterface $publisher, array $channels, mixed $data): void
    {
        if (count($channels) === 1) {
            $publisher->publishWithHistory($channels[0], $data);
        } else {
            $publisher->broadcast($channels, $data);
        }
    }

    /**
     * A failure: logged (what failed and why, never a secret: the library's messages carry no
     * credentials, and URLs are not logged), announced with `fanout_publish_failed`, the
     * breaker opened, `$skipped` messages counted.
     */
    private static function failed(string $what, \Throwable $e, int $skipped): \WP_Error
    {
        $status = self::status();
        $status['open_until'] = time() + (int) Settings::get('breaker_seconds');
        $status['failures']++;
        $status['skipped'] += $skipped;
        $status['last_error'] = substr($e->getMessage(), 0, 300);
        $status['last_failure_at'] = time();
        self::saveStatus($status);
        error_log(sprintf(
            'fanout: %s failed (%s): %s; publishing paused for %d s%s',
            $what,
            get_class($e),
            $e->getMessage(),
            (int) Settings::get('breaker_seconds'),
            $skipped > 0 ? sprintf(', %d message(s) skipped', $skipped) : ''
        ));
        $error = new \WP_Error('fanout_publish_failed', sprintf('fanout: %s failed: %s', $what, $e->getMessage()));
        /**
         * Fires when publishing to fanout failed (the gateway or Redis unreachable, a bad
         * channel name, a payload too large). Publishing then pauses (the breaker).
         *
         * @param \WP_Error  $error what failed.
         * @param \Throwable $e     the library's exception.
         */
        do_action('fanout_publish_failed', $error, $e);
        return $error;
    }

    /** Counts skipped messages; written once, at the end of the request, however many. */
    private static function skip(int $count): void
    {
        $status = self::status();
        $status['skipped'] += $count;
        self::$status = $status;
        if (!self::$countsPending) {
            self::$countsPending = true;
            add_action('shutdown', [self::class, 'saveCounts'], PHP_INT_MAX);
        }
    }

    /** The `shutdown` callback that writes the counts `skip()` kept (after the publishing, which may add to them). */
    public static function saveCounts(): void
    {
        if (self::$countsPending && self::$status !== null) {
            self::$countsPending = false;
            self::saveStatus(self::$status);
        }
    }

    private static function saveStatus(array $status): void
    {
        self::$status = $status;
        self::$countsPending = false;
        update_option(self::STATUS_OPTION, $status, false);
    }

    private static function error(string $code, string $message): \WP_Error
    {
        return new \WP_Error($code, $message);
    }

    /**
     * The publisher the settings select, with the publishing timeout for connecting and for
     * each reply. Other plugins may supply their own (a shared Redis connection, a test double
     * in their unit tests) with the `fanout_publisher` filter.
     *
     * @throws \RuntimeException when the plugin is not configured for the chosen mode.
     */
    private static function makePublisher(): PublisherInterface
    {
        if (\FanoutWP\library_dir() === null) {
            throw new \RuntimeException('the fanout PHP library is missing from the plugin (build it with integrations/wordpress/build.sh)');
        }
        /**
         * Filters the publisher before the plugin makes one from its settings. Return a
         * `Fanout\PublisherInterface` to use it instead.
         *
         * @param \Fanout\PublisherInterface|null $publisher null.
         */
        $publisher = apply_filters('fanout_publisher', null);
        if ($publisher instanceof PublisherInterface) {
            return $publisher;
        }
        $timeout = ((int) Settings::get('timeout_ms')) / 1000;
        if (Settings::get('publish_mode') === 'http') {
            $url = (string) Settings::get('api_url');
            $key = (string) Settings::get('api_key');
            if ($url === '' || $key === '') {
                throw new \RuntimeException('HTTP publishing needs the gateway API URL and an API key (Settings > fanout, or FANOUT_API_URL and FANOUT_API_KEY)');
            }
            // The whole request, connecting included, within the timeout.
            return new HttpPublisher($url, apiKey: $key, timeout: $timeout, connectTimeout: $timeout);
        }
        return Publisher::connect(Settings::redisUrl(), (string) Settings::get('redis_prefix'), $timeout, $timeout);
    }
}
