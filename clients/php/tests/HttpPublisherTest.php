<?php

declare(strict_types=1);

namespace Fanout\Tests;

use Fanout\Exception\ApiException;
use Fanout\Exception\InvalidArgumentException;
use Fanout\Exception\TransportException;
use Fanout\HttpPublisher;
use Fanout\Tests\Support\Gateway;
use Fanout\Tests\Support\Process;
use Fanout\Tests\Support\RedisServer;

/** `HttpPublisher` against the real gateway's HTTP API, over curl and over PHP streams. */
final class HttpPublisherTest extends GatewayTestCase
{
    public static function transports(): iterable
    {
        yield 'curl' => ['curl'];
        yield 'stream' => ['stream'];
    }

    private function publisher(string $transport, string $key = Gateway::API_KEY): HttpPublisher
    {
        return new HttpPublisher(static::$gateway->httpUrl() . '/', $key, 5.0, $transport);
    }

    /** @dataProvider transports */
    public function testPublishAndPublishWithHistoryReachSubscribers(string $transport): void
    {
        $room = self::unique('room');
        $dag = self::unique('dag');
        $ws = $this->client('h1', [$room, $dag]);
        $publisher = $this->publisher($transport);

        self::assertSame(0, $publisher->publish($room, ['type' => 'chat', 'text' => 'hé/llo']));
        self::assertSame(['type' => 'chat', 'text' => 'hé/llo'], self::message($ws, $room)['data']);
        $publisher->publish($room, 'plain text');
        self::assertSame('plain text', self::message($ws, $room)['data']);
        $publisher->publish($room, '[1,2]');
        self::assertSame([1, 2], self::message($ws, $room)['data']);

        self::assertSame(1, $publisher->publish($dag, ['step' => 1]));
        self::assertSame(1, self::message($ws, $dag)['offset']);
        $result = $publisher->publishWithHistory($dag, ['step' => 2]);
        self::assertSame(2, $result->offset);
        self::assertNull($result->epoch);
        $message = self::message($ws, $dag);
        self::assertSame([2, ['step' => 2]], [$message['offset'], $message['data']]);

        $history = $publisher->history($dag, since: 1);
        self::assertSame(2, $history['offset']);
        self::assertSame($message['epoch'], $history['epoch']);
        self::assertSame([['offset' => 2, 'data' => ['step' => 2]]], $history['messages']);
    }

    /** @dataProvider transports */
    public function testBroadcastReachesEveryChannel(string $transport): void
    {
        $room = self::unique('room');
        $dag = self::unique('dag');
        $ws = $this->client('h2', [$room, $dag]);
        self::assertSame(3, $this->publisher($transport)->broadcast([$room, $dag, 'user:h2', $dag], ['type' => 'task_update']));
        $channels = array_map(fn (array $m) => $m['channel'], $ws->drain(fn (array $f) => $f['type'] === 'message', 1.5));
        sort($channels);
        $expected = [$room, $dag, 'user:h2'];
        sort($expected);
        self::assertSame($expected, $channels);
    }

    /** @dataProvider transports */
    public function testGatewayErrorsBecomeApiExceptionsWithTheirCode(string $transport): void
    {
        $cases = [
            'wrong key' => [fn () => $this->publisher($transport, 'wrong')->publish('room:a', 1), 401, 'unauthorized', 'invalid API key'],
            'unknown namespace' => [fn () => $this->publisher($transport)->publish('chat:a', 1), 400, 'bad_request', 'unknown channel namespace "chat"'],
            'too large' => [fn () => $this->publisher($transport)->publish('room:a', str_repeat('x', 262145)), 413, 'too_large', 'larger than 262144 bytes'],
            'no history' => [fn () => $this->publisher($transport)->history('room:a'), 400, 'bad_request', 'channel room:a keeps no history'],
            'all or nothing' => [fn () => $this->publisher($transport)->broadcast(['room:a', 'chat:b'], 1), 400, 'bad_request', 'chat'],
        ];
        foreach ($cases as $name => [$call, $status, $code, $message]) {
            try {
                $call();
                self::fail("$name: no exception");
            } catch (ApiException $e) {
                self::assertSame([$status, $code], [$e->status, $e->errorCode], "$name: {$e->getMessage()}");
                self::assertStringContainsString($message, $e->errorMessage, $name);
                self::assertFalse($e->isRetryable(), $name);
                self::assertStringNotContainsString(Gateway::API_KEY, $e->getMessage());
            }
        }
    }

    public function testARedisOutageIsARetryableUnavailable(): void
    {
        $redis = new RedisServer();
        $gateway = Gateway::onRedis($redis);
        try {
            $redis->stop();
            $publisher = new HttpPublisher($gateway->httpUrl(), Gateway::API_KEY, 10.0);
            try {
                $publisher->publishWithHistory('dag:1', ['x' => 1]);
                self::fail('no exception');
            } catch (ApiException $e) {
                self::assertSame([503, 'unavailable'], [$e->status, $e->errorCode], $e->getMessage());
                self::assertTrue($e->isRetryable());
            }
        } finally {
            $gateway->stop();
            $redis->stop();
        }
    }

    /** @dataProvider transports */
    public function testAnUnreachableGatewayIsATransportException(string $transport): void
    {
        $publisher = new HttpPublisher('http://127.0.0.1:' . Process::freePort(), Gateway::API_KEY, 2.0, $transport);
        $this->expectException(TransportException::class);
        $publisher->publish('room:a', 1);
    }

    /** @dataProvider transports */
    public function testSomethingElseAtTheUrlIsNotMistakenForTheGateway(string $transport): void
    {
        $publisher = new HttpPublisher(static::$gateway->httpUrl() . '/elsewhere', Gateway::API_KEY, 2.0, $transport);
        try {
            $publisher->publish('room:a', 1);
            self::fail('no exception');
        } catch (ApiException $e) {
            self::assertSame(404, $e->status);
            self::assertSame('http_404', $e->errorCode);
        }
    }

    public function testArgumentsAreCheckedBeforeAnyRequest(): void
    {
        foreach ([
            fn () => new HttpPublisher('127.0.0.1:8080', 'k'),
            fn () => new HttpPublisher('http://127.0.0.1:8080', ''),
            fn () => new HttpPublisher('http://127.0.0.1:8080', 'k', transport: 'carrier-pigeon'),
            fn () => $this->publisher('curl')->publish('Room:x', 1),
            fn () => $this->publisher('curl')->broadcast([], 1),
            fn () => $this->publisher('curl')->history('dag:1', since: -1),
        ] as $i => $call) {
            try {
                $call();
                self::fail("case $i: no exception");
            } catch (InvalidArgumentException) {
                $this->addToAssertionCount(1);
            }
        }
    }

    /** @dataProvider transports */
    public function testAGatewayThatNeverAnswersFailsAfterTheTimeout(string $transport): void
    {
        $silent = stream_socket_server('tcp://127.0.0.1:0', $errno, $error);
        self::assertNotFalse($silent, $error);
        $name = (string) stream_socket_get_name($silent, false);
        $publisher = new HttpPublisher('http://' . $name, Gateway::API_KEY, timeout: 0.3, transport: $transport, connectTimeout: 0.2);
        $started = microtime(true);
        try {
            $publisher->publish('room:a', 'x');
            self::fail('a publish to a gateway that never answers returned');
        } catch (TransportException $e) {
            self::assertStringContainsString('POST http://' . $name . '/api/publish failed', $e->getMessage());
        } finally {
            fclose($silent);
        }
        self::assertLessThan(5.0, microtime(true) - $started);
    }
}
