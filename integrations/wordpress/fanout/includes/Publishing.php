<?php
/**
 * Publishing from WordPress: the configured publisher of the fanout library (Redis or the
 * HTTP API) behind calls that never throw, for use in hooks where an exception would break
 * the page that triggered them (saving a post must not fail because the gateway is down).
 *
 * @package Fanout
 */

declare(strict_types=1);

namespace FanoutWP;

use Fanout\HttpPublisher;
use Fanout\Publisher;
use Fanout\PublisherInterface;

if (!defined('ABSPATH')) {
    exit;
}

final class Publishing
{
    /** The publisher of this request, made on first use: most requests publish nothing. */
    private static ?PublisherInterface $publisher = null;

    /**
     * Publishes to one channel, with history where the channel keeps it (`user:` and `dag:`
     * by default), so that a tab that was offline for a moment still gets the message.
     *
     * @return true|\WP_Error
     */
    public static function publish(string $channel, mixed $data): bool|\WP_Error
    {
        return self::attempt('publish to ' . $channel, static function (PublisherInterface $publisher) use ($channel, $data): void {
            $publisher->publishWithHistory($channel, $data);
        });
    }

    /**
     * Publishes one message to several channels, all or nothing.
     *
     * @param list<string> $channels
     * @return true|\WP_Error
     */
    public static function broadcast(array $channels, mixed $data): bool|\WP_Error
    {
        $channels = array_values(array_unique(array_map('strval', $channels)));
        if ($channels === []) {
            return true;
        }
        return self::attempt('broadcast to ' . implode(', ', $channels), static function (PublisherInterface $publisher) use ($channels, $data): void {
            $publisher->broadcast($channels, $data);
        });
    }

    /**
     * Runs one publishing call; a failure is logged (what failed and why, never a secret:
     * the library's messages carry no credentials, and URLs are not logged) and returned
     * as a `WP_Error`, and also announced with the `fanout_publish_failed` action.
     *
     * @param callable(PublisherInterface): void $call
     * @return true|\WP_Error
     */
    private static function attempt(string $what, callable $call): bool|\WP_Error
    {
        try {
            $call(self::publisher());
            return true;
        } catch (\Throwable $e) {
            // Drop a broken connection: the next call in this request (a worker's next message) reconnects.
            self::$publisher = null;
            $error = new \WP_Error('fanout_publish_failed', sprintf('fanout: %s failed: %s', $what, $e->getMessage()));
            error_log(sprintf('fanout: %s failed (%s): %s', $what, get_class($e), $e->getMessage()));
            /**
             * Fires when publishing to fanout failed (the gateway or Redis unreachable, a
             * bad channel name, a payload too large).
             *
             * @param \WP_Error  $error what failed.
             * @param \Throwable $e     the library's exception.
             */
            do_action('fanout_publish_failed', $error, $e);
            return $error;
        }
    }

    /**
     * The publisher the settings select. Other plugins may supply their own (a shared Redis
     * connection, a test double in their unit tests) with the `fanout_publisher` filter.
     *
     * @throws \RuntimeException when the plugin is not configured for the chosen mode.
     */
    public static function publisher(): PublisherInterface
    {
        if (self::$publisher !== null) {
            return self::$publisher;
        }
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
        if (!$publisher instanceof PublisherInterface) {
            $publisher = Settings::get('publish_mode') === 'http' ? self::httpPublisher() : self::redisPublisher();
        }
        return self::$publisher = $publisher;
    }

    private static function redisPublisher(): Publisher
    {
        return Publisher::connect(Settings::redisUrl(), (string) Settings::get('redis_prefix'));
    }

    private static function httpPublisher(): HttpPublisher
    {
        $url = (string) Settings::get('api_url');
        $key = (string) Settings::get('api_key');
        if ($url === '' || $key === '') {
            throw new \RuntimeException('HTTP publishing needs the gateway API URL and an API key (Settings > fanout, or FANOUT_API_URL and FANOUT_API_KEY)');
        }
        return new HttpPublisher($url, apiKey: $key);
    }
}
