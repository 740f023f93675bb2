<?php

declare(strict_types=1);

namespace Fanout\Tests;

use Fanout\Exception\InvalidArgumentException;
use Fanout\Exception\LibraryNotLoadedException;
use Fanout\Exception\RedisCommandException;
use Fanout\Publisher;
use Fanout\Tests\Support\RedisServer;

/** `Publisher` through a real Redis to a real gateway, observed by a WebSocket client. */
final class PublisherTest extends GatewayTestCase
{
    private function publisher(): Publisher
    {
        return new Publisher(static::$redis->client());
    }

    public function testPublishReachesSubscribersAsJsonOrText(): void
    {
        $channel = self::unique('room');
        $ws = $this->client('u1', [$channel]);
        $publisher = Publisher::connect(static::$redis->url());

        self::assertSame(1, $publisher->publish($channel, ['type' => 'chat', 'text' => 'hi', 'n' => 1.0]));
        self::assertSame(['type' => 'chat', 'text' => 'hi', 'n' => 1.0], self::message($ws, $channel)['data']);
        $publisher->publish($channel, 'plain text');
        self::assertSame('plain text', self::message($ws, $channel)['data']);
        $publisher->publish($channel, '{"already":"json"}');
        self::assertSame(['already' => 'json'], self::message($ws, $channel)['data']);
        $publisher->publish($channel, new \stdClass());
        $empty = self::message($ws, $channel);
        self::assertSame([], $empty['data']);
        self::assertArrayNotHasKey('offset', $empty);

        self::assertSame(0, $publisher->publish(self::unique('room'), 'nobody listens'));
    }

    public function testPublishWithHistoryKeepsIncreasingOffsetsWithTheEpoch(): void
    {
        $channel = self::unique('dag');
        $ws = $this->client('u2', [$channel]);
        $publisher = $this->publisher();
        $results = [];
        for ($i = 1; $i <= 3; $i++) {
            $results[] = $result = $publisher->publishWithHistory($channel, ['step' => $i]);
            $message = self::message($ws, $channel);
            self::assertSame(['step' => $i], $message['data']);
            self::assertSame($result->offset, $message['offset']);
            self::assertSame($result->epoch, $message['epoch']);
        }
        self::assertSame([1, 2, 3], array_map(fn ($r) => $r->offset, $results));
        self::assertTrue($results[0]->isKept());
        self::assertCount(1, array_unique(array_map(fn ($r) => $r->epoch, $results)));

        // A client that recovers from offset 1 gets 2 and 3 from history.
        $late = $this->client('u3');
        $reply = $late->request(['type' => 'subscribe', 'channel' => $channel, 'since' => ['offset' => 1, 'epoch' => $results[0]->epoch]]);
        self::assertTrue($reply['recovered']);
        self::assertSame(['step' => 2], self::message($late, $channel)['data']);
        self::assertSame(['step' => 3], self::message($late, $channel)['data']);
    }

    public function testPublishWithHistoryOnAChannelWithoutHistoryIsAPlainPublish(): void
    {
        $channel = self::unique('room');
        $ws = $this->client('u4', [$channel]);
        $result = $this->publisher()->publishWithHistory($channel, ['x' => 1]);
        self::assertSame(0, $result->offset);
        self::assertNull($result->epoch);
        self::assertFalse($result->isKept());
        self::assertArrayNotHasKey('offset', self::message($ws, $channel));
    }

    public function testBroadcastReachesEveryChannelInOneTransaction(): void
    {
        $room = self::unique('room');
        $dag = self::unique('dag');
        $ws = $this->client('u5', [$room, $dag]);
        $count = $this->publisher()->broadcast(['user:u5', $room, $dag, $room], ['type' => 'task_update']);
        self::assertSame(3, $count);
        $seen = [];
        foreach ($ws->drain(fn (array $f) => $f['type'] === 'message', 1.5) as $message) {
            self::assertSame(['type' => 'task_update'], $message['data']);
            $seen[$message['channel']] = $message['offset'] ?? null;
        }
        ksort($seen);
        $expected = [$dag => 1, $room => null, 'user:u5' => 1];
        ksort($expected);
        self::assertSame($expected, $seen);
    }

    public function testBroadcastWithOneInvalidChannelPublishesNothing(): void
    {
        $room = self::unique('room');
        $ws = $this->client('u6', [$room]);
        try {
            $this->publisher()->broadcast([$room, 'Room:bad'], 'x');
            self::fail('no exception');
        } catch (InvalidArgumentException $e) {
            self::assertStringContainsString("invalid channel: channel name contains 'R'", $e->getMessage());
        }
        self::assertSame([], $ws->drain(fn (array $f) => $f['type'] === 'message', 0.5));
        $this->expectException(InvalidArgumentException::class);
        $this->publisher()->broadcast([], 'x');
    }

    public function testTheApplicationsRedisOptionsDoNotChangeWhatIsPublished(): void
    {
        $channel = self::unique('dag');
        $ws = $this->client('u7', [$channel]);
        $redis = static::$redis->client();
        $redis->setOption(\Redis::OPT_PREFIX, 'myapp:');
        $redis->setOption(\Redis::OPT_SERIALIZER, \Redis::SERIALIZER_PHP);
        $publisher = new Publisher($redis);
        $publisher->publish($channel, ['a' => 1]);
        self::assertSame(['a' => 1], self::message($ws, $channel)['data']);
        self::assertSame(1, $publisher->publishWithHistory($channel, ['b' => 2])->offset);
        self::assertSame(['b' => 2], self::message($ws, $channel)['data']);
    }

    public function testInvalidChannelsAndPayloadsAreRefusedBeforeRedis(): void
    {
        $publisher = $this->publisher();
        foreach (['lobby', 'room:', 'broadcast:x', 'room:a b', str_repeat('a', 129), ''] as $bad) {
            try {
                $publisher->publish($bad, 'x');
                self::fail("accepted channel '$bad'");
            } catch (InvalidArgumentException $e) {
                self::assertStringStartsWith('invalid channel: ', $e->getMessage());
            }
        }
        try {
            $publisher->publish('room:x', "\0internal");
            self::fail('accepted a payload starting with NUL');
        } catch (InvalidArgumentException $e) {
            self::assertStringContainsString('NUL', $e->getMessage());
        }
        $this->expectException(InvalidArgumentException::class);
        $publisher->publishWithHistory('dag:1', ['bad' => "\xff"]);
    }

    public function testARetryWithTheSameIdempotencyKeyPublishesOnce(): void
    {
        $channel = self::unique('dag');
        $ws = $this->client('u8', [$channel]);
        $first = $this->publisher()->publishWithHistory($channel, ['x' => 1], idempotencyKey: 'order-17');
        $retry = $this->publisher()->publishWithHistory($channel, ['x' => 1], idempotencyKey: 'order-17');
        $next = $this->publisher()->publishWithHistory($channel, ['x' => 2], idempotencyKey: 'order-18');
        self::assertSame($first->offset, $retry->offset);
        self::assertSame($first->offset + 1, $next->offset);
        $messages = $ws->drain(fn (array $f) => $f['type'] === 'message', 1.0);
        self::assertSame([1, 2], array_map(fn (array $m) => $m['data']['x'], $messages));
        $this->expectException(InvalidArgumentException::class);
        $this->publisher()->publishWithHistory($channel, ['x' => 3], idempotencyKey: '');
    }

    public function testAPayloadAboveTheNodesLimitIsRefusedByRedis(): void
    {
        $publisher = Publisher::connect(static::$redis->url());
        foreach ([
            fn () => $publisher->publishWithHistory(self::unique('dag'), str_repeat('x', 262145)),
            fn () => $publisher->broadcast([self::unique('dag'), self::unique('room')], str_repeat('x', 262145)),
        ] as $publish) {
            try {
                $publish();
                self::fail('no exception');
            } catch (RedisCommandException $e) {
                self::assertStringContainsString('payload larger than 262144 bytes (max_payload_bytes)', $e->getMessage());
                // Redis answered: the connection is fine, and the next command goes through.
                self::assertFalse($e->connectionFailed());
            }
        }
        self::assertSame(1, $publisher->publishWithHistory(self::unique('dag'), 'small')->offset);
    }

    public function testAMissingFunctionLibraryIsExplainedWithItsFix(): void
    {
        $bare = new RedisServer(); // no fanout node has ever run against it
        try {
            $publisher = Publisher::connect($bare->url());
            foreach ([
                fn () => $publisher->publishWithHistory('dag:1', ['x' => 1]),
                fn () => $publisher->broadcast(['dag:1', 'room:a'], ['x' => 1]),
            ] as $publish) {
                try {
                    $publish();
                    self::fail('no exception');
                } catch (LibraryNotLoadedException $e) {
                    self::assertStringContainsString('ERR Function not found', $e->getMessage());
                    self::assertStringContainsString('start a fanout node with --redis-url pointing at this Redis', $e->getMessage());
                }
            }
            // Plain PUBLISH needs no library.
            self::assertSame(0, $publisher->publish('room:a', 'x'));
        } finally {
            $bare->stop();
        }
    }

    public function testConnectionErrorsAreRedisCommandExceptions(): void
    {
        $this->expectException(RedisCommandException::class);
        $this->expectExceptionMessage('cannot connect to Redis');
        Publisher::connect('redis://127.0.0.1:' . \Fanout\Tests\Support\Process::freePort(), timeout: 1.0);
    }

    /**
     * A Redis that accepts connections and never answers (a listening socket nobody reads: the
     * kernel completes the handshake) fails a command after the read timeout. Without one,
     * phpredis waited PHP's default_socket_timeout, 60 s.
     */
    public function testAServerThatNeverAnswersFailsAfterTheReadTimeout(): void
    {
        $silent = stream_socket_server('tcp://127.0.0.1:0', $errno, $error);
        self::assertNotFalse($silent, $error);
        $port = (int) substr((string) stream_socket_get_name($silent, false), strrpos((string) stream_socket_get_name($silent, false), ':') + 1);
        try {
            $publisher = Publisher::connect("redis://127.0.0.1:$port", timeout: 0.3);
            $started = microtime(true);
            try {
                $publisher->publish('room:a', 'x');
                self::fail('a publish to a server that never answers returned');
            } catch (RedisCommandException $e) {
                self::assertStringContainsString('PUBLISH failed', $e->getMessage());
                self::assertTrue($e->connectionFailed());
            }
            // The bound is 0.3 s; 5 s leaves room for a busy machine and is far below 60 s.
            self::assertLessThan(5.0, microtime(true) - $started);

            // With a password, AUTH is the first command to wait: bounded the same way.
            $started = microtime(true);
            try {
                Publisher::connect("redis://:secret@127.0.0.1:$port", timeout: 0.3, readTimeout: 0.3);
                self::fail('connect with AUTH to a server that never answers returned');
            } catch (RedisCommandException $e) {
                self::assertStringContainsString('cannot connect to Redis', $e->getMessage());
                self::assertTrue($e->connectionFailed());
            }
            self::assertLessThan(5.0, microtime(true) - $started);
        } finally {
            fclose($silent);
        }
    }
}
