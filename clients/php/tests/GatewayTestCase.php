<?php

declare(strict_types=1);

namespace Fanout\Tests;

use Fanout\Tests\Support\Gateway;
use Fanout\Tests\Support\RedisServer;
use Fanout\Tests\Support\WebSocketClient;
use Fanout\Token;
use PHPUnit\Framework\TestCase;

/**
 * One `redis-server` and one gateway on it per test class (started once: they take a
 * moment), with helpers to connect WebSocket clients.
 */
abstract class GatewayTestCase extends TestCase
{
    protected static ?RedisServer $redis = null;
    protected static ?Gateway $gateway = null;

    public static function setUpBeforeClass(): void
    {
        static::$redis = new RedisServer();
        try {
            static::$gateway = Gateway::onRedis(static::$redis);
        } catch (\Throwable $e) {
            static::$redis->stop();
            throw $e;
        }
    }

    public static function tearDownAfterClass(): void
    {
        static::$gateway?->stop();
        static::$redis?->stop();
        static::$gateway = static::$redis = null;
    }

    /** A connected, acknowledged client of `$user` subscribed to `$subscribe`. */
    protected function client(string $user, array $subscribe = [], array $channels = ['room:*', 'dag:*'], mixed $info = null): WebSocketClient
    {
        $ws = static::$gateway->connect((new Token(secret: Gateway::SECRET))->mint($user, channels: $channels, ttl: 300, info: $info));
        $ack = $ws->next();
        self::assertSame('connection_ack', $ack['type'] ?? null, json_encode($ack));
        foreach ($subscribe as $channel) {
            $ws->subscribe($channel);
        }
        return $ws;
    }

    /** The next `message` frame on `$channel`. */
    protected static function message(WebSocketClient $ws, string $channel, float $timeout = 5.0): array
    {
        return $ws->waitFor(fn (array $f) => $f['type'] === 'message' && $f['channel'] === $channel, $timeout, "message on $channel");
    }

    /** A channel name no other test uses. */
    protected static function unique(string $namespace): string
    {
        return $namespace . ':t' . bin2hex(random_bytes(4));
    }
}
