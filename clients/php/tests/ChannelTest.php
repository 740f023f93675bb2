<?php

declare(strict_types=1);

namespace Fanout\Tests;

use Fanout\Channel;
use Fanout\Exception\ApiException;
use Fanout\Exception\InvalidArgumentException;
use Fanout\Internal\HttpClient;
use Fanout\Tests\Support\Gateway;

/** The library's channel grammar says what the gateway says, word for word. */
final class ChannelTest extends GatewayTestCase
{
    public static function names(): iterable
    {
        foreach ([
            'broadcast', 'room:lobby', 'user:alice@example.com', 'room:org-1.team_a:general', 'dag:7',
            '', 'lobby', ':x', 'broadcast:x', 'room:', 'Room:x', 'room:a b', 'room:a*', 'room:é', "room:\xff",
            "room:a\tb", "room:it's", 'room:a\\b', "room:\x01", "room:\x7f", 'room:日本',
            str_repeat('a', 33) . ':x', 'room:' . str_repeat('x', 123), 'room:' . str_repeat('x', 124), 'ro.om:x',
        ] as $name) {
            $shown = strlen($name) > 40 ? substr($name, 0, 20) . '...(' . strlen($name) . ' bytes)' : $name;
            yield json_encode($shown, JSON_INVALID_UTF8_SUBSTITUTE) => [$name];
        }
    }

    /** @dataProvider names */
    public function testAgreesWithTheGateway(string $name): void
    {
        $http = new HttpClient(static::$gateway->httpUrl(), Gateway::API_KEY);
        $body = '{"channel":' . json_encode($name, JSON_INVALID_UTF8_SUBSTITUTE) . ',"data":1}';
        try {
            $http->request('POST', '/api/publish', [], $body);
            $gateway = null;
        } catch (ApiException $e) {
            $gateway = $e->errorMessage;
        }
        if (str_contains($name, "\xff")) {
            // Not UTF-8: JSON cannot carry it to the gateway; the library refuses it all the same.
            self::assertFalse(Channel::isValid($name));
            return;
        }
        if (Channel::isValid($name)) {
            self::assertNull($gateway, "the gateway refused $name");
            self::assertSame($name, Channel::assertValid($name));
            return;
        }
        try {
            Channel::assertValid($name);
            self::fail('no exception');
        } catch (InvalidArgumentException $e) {
            self::assertSame($gateway, $e->getMessage());
        }
    }

    public function testUserChannels(): void
    {
        self::assertSame('user:42', Channel::user(42));
        self::assertSame('user:' . str_repeat('u', 123), Channel::user(str_repeat('u', 123)));
        $this->expectException(InvalidArgumentException::class);
        Channel::user(str_repeat('u', 124));
    }
}
