<?php

declare(strict_types=1);

namespace Fanout\Tests;

use Fanout\Exception\ApiException;
use Fanout\Exception\InvalidArgumentException;
use Fanout\Exception\LibraryNotLoadedException;
use Fanout\HttpPublisher;
use Fanout\Publisher;
use Fanout\SessionControlInterface;
use Fanout\Tests\Support\Gateway;
use Fanout\Tests\Support\HandshakeRefused;
use Fanout\Tests\Support\RedisServer;
use Fanout\Tests\Support\WebSocketClient;
use Fanout\Token;

/**
 * A backend controlling its users' sessions through `Publisher` (the nodes' Redis Functions)
 * and `HttpPublisher` (the HTTP API), against the real gateway on a real redis-server: what
 * the connected clients receive, and what the gateway refuses afterwards.
 */
final class SessionControlTest extends GatewayTestCase
{
    public static function controls(): iterable
    {
        yield 'redis' => ['redis'];
        yield 'http' => ['http'];
    }

    private function control(string $kind): SessionControlInterface
    {
        return $kind === 'redis'
            ? Publisher::connect(static::$redis->url())
            : new HttpPublisher(static::$gateway->httpUrl(), Gateway::API_KEY);
    }

    private static function tokens(): Token
    {
        return new Token(secret: Gateway::SECRET);
    }

    /** A connected, acknowledged client on `$token`, and its `connection_ack`. */
    private static function open(string $token): array
    {
        $ws = static::$gateway->connect($token);
        $ack = $ws->next();
        self::assertSame('connection_ack', $ack['type'] ?? null, json_encode($ack));
        return [$ws, $ack];
    }

    /** A user id no other test uses. */
    private static function someone(): string
    {
        return 'u' . bin2hex(random_bytes(4));
    }

    /**
     * The JSON frames up to the close, and the close: what a client sees at the end of its
     * connection.
     *
     * @return array{list<array<string, mixed>>, array{code: int, reason: string}}
     */
    private static function untilClose(WebSocketClient $ws, float $timeout = 5.0): array
    {
        $deadline = microtime(true) + $timeout;
        $frames = [];
        while (($left = $deadline - microtime(true)) > 0) {
            $message = $ws->receive($left);
            if ($message === null) {
                break;
            }
            if ($message['opcode'] === WebSocketClient::OP_CLOSE) {
                return [$frames, ['code' => $message['code'], 'reason' => $message['reason']]];
            }
            $frames[] = json_decode($message['payload'], true, 512, JSON_THROW_ON_ERROR);
        }
        self::fail("no close within {$timeout}s; frames: " . json_encode($frames) . "\ngateway log:\n" . substr(static::$gateway->log(), -4000));
    }

    /** @dataProvider controls */
    public function testALogoutEndsEveryConnectionOfTheUserAndTheyMayComeBack(string $kind): void
    {
        $user = self::someone();
        $room = self::unique('room');
        $laptop = $this->client($user);
        $phone = $this->client($user);
        $colleague = $this->client(self::someone(), [$room]);

        $this->control($kind)->disconnect($user, reason: 'logged out');

        foreach ([$laptop, $phone] as $ws) {
            [$frames, $close] = self::untilClose($ws);
            self::assertContains(['type' => 'disconnect', 'code' => 4004, 'reason' => 'logged out', 'reconnect' => true], $frames);
            self::assertSame(['code' => 4004, 'reason' => 'logged out'], $close);
        }
        // Another user's connection is untouched.
        static::$redis->client()->rawCommand('PUBLISH', 'fanout:' . $room, '{"n":1}');
        self::assertSame(['n' => 1], self::message($colleague, $room)['data']);
    }

    /** @dataProvider controls */
    public function testADeletedAccountIsToldNotToReconnectAndAppCodesPassThrough(string $kind): void
    {
        $control = $this->control($kind);
        $user = self::someone();
        $ws = $this->client($user);
        $control->disconnect($user, reason: 'account deleted', reconnect: false);
        [$frames, $close] = self::untilClose($ws);
        self::assertContains(['type' => 'disconnect', 'code' => 4005, 'reason' => 'account deleted', 'reconnect' => false], $frames);
        self::assertSame(4005, $close['code']);

        $ws = $this->client($user);
        $control->disconnect($user, reason: 'plan expired', reconnect: false, code: 4100);
        [$frames, $close] = self::untilClose($ws);
        self::assertContains(['type' => 'disconnect', 'code' => 4100, 'reason' => 'plan expired', 'reconnect' => false], $frames);
        self::assertSame(['code' => 4100, 'reason' => 'plan expired'], $close);
    }

    /** @dataProvider controls */
    public function testOneConnectionCanBeEndedByItsConnId(string $kind): void
    {
        $user = self::someone();
        $room = self::unique('room');
        [$runaway, $ack] = self::open(self::tokens()->mint($user, channels: ['room:*'], ttl: 300));
        $other = $this->client($user, [$room]);

        $this->control($kind)->disconnect($user, $ack['conn_id'], 'runaway agent');

        self::assertSame(['code' => 4004, 'reason' => 'runaway agent'], self::untilClose($runaway)[1]);
        static::$redis->client()->rawCommand('PUBLISH', 'fanout:' . $room, '"still here"');
        self::assertSame('still here', self::message($other, $room)['data']);
    }

    /** @dataProvider controls */
    public function testTheBackendSubscribesAUserToAChannelTheirTokenDoesNotGrantAndTakesItAway(string $kind): void
    {
        $control = $this->control($kind);
        $user = self::someone();
        $run = self::unique('dag');
        $ws = $this->client($user, channels: ['room:*']);
        self::assertSame('error', $ws->request(['type' => 'subscribe', 'channel' => $run])['type']);

        $control->subscribe($user, $run);
        $notice = $ws->waitFor(fn (array $f) => $f['type'] === 'subscribed' && $f['channel'] === $run, 5.0, 'subscribed notice');
        self::assertTrue($notice['server']);
        self::assertArrayNotHasKey('id', $notice);
        $publisher = Publisher::connect(static::$redis->url());
        $publisher->publishWithHistory($run, ['step' => 'approved']);
        self::assertSame(['step' => 'approved'], self::message($ws, $run)['data']);

        $control->unsubscribe($user, $run);
        $notice = $ws->waitFor(fn (array $f) => $f['type'] === 'unsubscribed' && $f['channel'] === $run, 5.0, 'unsubscribed notice');
        self::assertTrue($notice['server']);
        // The connection stays; the channel no longer reaches it, and its token still does not grant it.
        $publisher->publishWithHistory($run, ['step' => 'after']);
        self::assertSame('pong', $ws->request(['type' => 'ping'])['type']);
        self::assertSame([], $ws->drain(fn (array $f) => ($f['channel'] ?? null) === $run && $f['type'] === 'message', 1.0));
        self::assertSame('forbidden', $ws->request(['type' => 'subscribe', 'channel' => $run])['code']);
    }

    /** @dataProvider controls */
    public function testRevokingAUserClosesTheirSessionsAndRefusesTokensIssuedBefore(string $kind): void
    {
        $user = self::someone();
        $old = self::tokens()->mint($user, ttl: 300);
        [$ws] = self::open($old);
        $before = time() + 1;

        $this->control($kind)->revokeUser($user, $before, keepSeconds: 600);

        self::assertSame(['code' => 4003, 'reason' => 'token revoked'], self::untilClose($ws)[1]);
        try {
            static::$gateway->connect($old);
            self::fail('a revoked token was accepted');
        } catch (HandshakeRefused $e) {
            self::assertSame(401, $e->status);
            self::assertStringContainsString('token revoked', $e->body);
        }
        // A token minted after the cut-off (the user logged in again) is accepted.
        while (time() < $before) {
            usleep(50_000);
        }
        [$again, $ack] = self::open(self::tokens()->mint($user, ttl: 300));
        self::assertSame($user, $ack['user']);
        $again->close();
    }

    /** @dataProvider controls */
    public function testRevokingOneTokenLeavesTheUsersOtherTokens(string $kind): void
    {
        $user = self::someone();
        $room = self::unique('room');
        $stolenId = bin2hex(random_bytes(8));
        $stolen = self::tokens()->mint($user, ttl: 300, jti: $stolenId);
        [$thief] = self::open($stolen);
        [$owner] = self::open(self::tokens()->mint($user, channels: ['room:*'], ttl: 300, jti: bin2hex(random_bytes(8))));
        $owner->subscribe($room);

        $this->control($kind)->revokeToken($stolenId, time() + 300);

        self::assertSame(['code' => 4003, 'reason' => 'token revoked'], self::untilClose($thief)[1]);
        try {
            static::$gateway->connect($stolen);
            self::fail('a revoked token was accepted');
        } catch (HandshakeRefused $e) {
            self::assertSame(401, $e->status);
        }
        static::$redis->client()->rawCommand('PUBLISH', 'fanout:' . $room, '"owner"');
        self::assertSame('owner', self::message($owner, $room)['data']);
    }

    public function testAChannelTokenGrantsItsOneChannelForItsUser(): void
    {
        $user = self::someone();
        $doc = self::unique('room');
        $tokens = self::tokens();
        $ws = $this->client($user, channels: ['dag:*']);

        $reply = $ws->request(['type' => 'subscribe', 'channel' => $doc]);
        self::assertSame(['error', 'forbidden'], [$reply['type'], $reply['code']]);
        $reply = $ws->request(['type' => 'subscribe', 'channel' => $doc, 'token' => $tokens->forChannel(self::someone(), $doc, ttl: 60)]);
        self::assertSame(['error', 'forbidden'], [$reply['type'], $reply['code']], 'another user\'s channel token');
        $reply = $ws->request(['type' => 'subscribe', 'channel' => $doc, 'token' => $tokens->forChannel($user, self::unique('room'), ttl: 60)]);
        self::assertSame(['error', 'forbidden'], [$reply['type'], $reply['code']], 'a token for another channel');

        $reply = $ws->request(['type' => 'subscribe', 'channel' => $doc, 'token' => $tokens->forChannel($user, $doc, ttl: 60, jti: 'doc-grant-1')]);
        self::assertSame('subscribed', $reply['type'], json_encode($reply));
        static::$redis->client()->rawCommand('PUBLISH', 'fanout:' . $doc, '{"edit":1}');
        self::assertSame(['edit' => 1], self::message($ws, $doc)['data']);

        // A channel token is no connection token.
        try {
            static::$gateway->connect($tokens->forChannel($user, $doc, ttl: 60));
            self::fail('a channel token opened a connection');
        } catch (HandshakeRefused $e) {
            self::assertSame(401, $e->status);
            self::assertStringContainsString('channel token', $e->body);
        }
    }

    /** @dataProvider controls */
    public function testTheLiveNodesAreListed(string $kind): void
    {
        $ws = $this->client(self::someone());
        $control = $this->control($kind);
        // A node beats every 2 s; the registry may not have this one's first beat yet.
        $deadline = microtime(true) + 10;
        do {
            $nodes = array_column($control->nodes(), null, 'id');
            $node = $nodes['php-test'] ?? null;
            if ($node !== null && $node['connections'] >= 1) {
                break;
            }
            usleep(200_000);
        } while (microtime(true) < $deadline);
        self::assertNotNull($node, json_encode($nodes));
        self::assertGreaterThanOrEqual(1, $node['connections']);
        self::assertIsString($node['version']);
        self::assertIsInt($node['uptime_s']);
        $ws->close();
    }

    public function testTheActiveChannelsAreSummedWithTheirSubscribers(): void
    {
        $room = self::unique('room');
        $a = $this->client(self::someone(), [$room]);
        $b = $this->client(self::someone(), [$room]);
        $http = new HttpPublisher(static::$gateway->httpUrl(), Gateway::API_KEY);

        $view = $http->channels($room);
        self::assertSame($room, $view['pattern']);
        self::assertSame([['channel' => $room, 'subscribers' => 2]], $view['channels']);
        self::assertSame([], $view['missing_nodes']);
        self::assertContains($room, array_column($http->channels('room:*')['channels'], 'channel'));

        try {
            $http->channels('room:"x"*');
            self::fail('a malformed pattern was accepted');
        } catch (ApiException $e) {
            self::assertSame('bad_request', $e->errorCode);
        }
        $a->close();
        $b->close();
    }

    /** @dataProvider controls */
    public function testBadArgumentsAreRefusedBeforeAnythingIsSent(string $kind): void
    {
        $control = $this->control($kind);
        $cases = [
            'a user id with a space' => fn () => $control->disconnect('a b'),
            'a reason over 100 bytes' => fn () => $control->disconnect('42', reason: str_repeat('x', 101)),
            'a close code of the protocol' => fn () => $control->disconnect('42', code: 4004),
            'an empty conn_id' => fn () => $control->disconnect('42', connId: ''),
            'an invalid channel' => fn () => $control->subscribe('42', 'room:a b'),
            'an empty jti' => fn () => $control->revokeToken('', time() + 60),
            'a jti over 256 bytes' => fn () => $control->revokeToken(str_repeat('j', 257), time() + 60),
            'no expiry' => fn () => $control->revokeToken('abc', 0),
            'keeping a revocation for no time' => fn () => $control->revokeUser('42', keepSeconds: 0),
        ];
        foreach ($cases as $what => $call) {
            try {
                $call();
                self::fail("$what was accepted");
            } catch (InvalidArgumentException $e) {
                self::assertNotSame('', $e->getMessage(), $what);
            }
        }
    }

    public function testARedisWithoutTheNodesLibrarySaysSo(): void
    {
        $bare = new RedisServer();
        try {
            $this->expectException(LibraryNotLoadedException::class);
            $this->expectExceptionMessageMatches('/Nothing was done/');
            Publisher::connect($bare->url())->disconnect('42');
        } finally {
            $bare->stop();
        }
    }
}
