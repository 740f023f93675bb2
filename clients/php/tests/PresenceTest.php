<?php

declare(strict_types=1);

namespace Fanout\Tests;

use Fanout\Exception\ApiException;
use Fanout\Exception\InvalidArgumentException;
use Fanout\Presence;
use Fanout\Tests\Support\Gateway;

/** `Presence` over the real HTTP API, seen by a connected client (`room:` keeps presence here). */
final class PresenceTest extends GatewayTestCase
{
    private function presence(string $transport = 'curl'): Presence
    {
        return new Presence(static::$gateway->httpUrl(), Gateway::API_KEY, 5.0, $transport);
    }

    public function testAnAgentStatusSetOverHttpIsSeenByAConnectedClient(): void
    {
        $channel = self::unique('room');
        $ws = $this->client('viewer', [$channel], info: ['name' => 'Viewer']);
        $presence = $this->presence();

        self::assertSame('api:summarizer', $presence->setStatus($channel, 'summarizer', ['state' => 'idle'], info: ['kind' => 'agent'], ttl: 30));
        $join = $ws->waitFor(fn (array $f) => $f['type'] === 'join' && $f['user'] === 'summarizer', 5.0, 'join of the agent');
        self::assertSame(['api:summarizer', ['kind' => 'agent']], [$join['conn_id'], $join['info']]);
        $update = $ws->waitFor(fn (array $f) => $f['type'] === 'presence_update' && $f['user'] === 'summarizer', 5.0, 'status of the agent');
        self::assertSame(['state' => 'idle'], $update['status']);

        $presence->setStatus($channel, 'summarizer', ['state' => 'running flow X'], info: ['kind' => 'agent']);
        $update = $ws->waitFor(fn (array $f) => $f['type'] === 'presence_update' && $f['user'] === 'summarizer', 5.0, 'second status');
        self::assertSame(['state' => 'running flow X'], $update['status']);

        $members = $this->presence('stream')->members($channel);
        usort($members, fn (array $a, array $b) => strcmp($a['user'], $b['user']));
        self::assertSame(['summarizer', 'viewer'], array_column($members, 'user'));
        self::assertSame(['state' => 'running flow X'], $members[0]['status']);
        self::assertSame(['name' => 'Viewer'], $members[1]['info']); // the token's info claim

        // The client sees the same list.
        $reply = $ws->request(['type' => 'presence', 'channel' => $channel]);
        self::assertEqualsCanonicalizing(['summarizer', 'viewer'], array_column($reply['members'], 'user'));

        self::assertTrue($presence->remove($channel, 'summarizer'));
        $leave = $ws->waitFor(fn (array $f) => $f['type'] === 'leave' && $f['user'] === 'summarizer', 5.0, 'leave of the agent');
        self::assertSame('api:summarizer', $leave['conn_id']);
        self::assertFalse($presence->remove($channel, 'summarizer'));
        self::assertSame(['viewer'], array_column($presence->members($channel), 'user'));
    }

    public function testANamespaceWithoutPresenceIsAnApiError(): void
    {
        try {
            $this->presence()->members('dag:1');
            self::fail('no exception');
        } catch (ApiException $e) {
            self::assertSame([400, 'bad_request'], [$e->status, $e->errorCode]);
            self::assertStringContainsString('presence is not kept for namespace "dag"', $e->errorMessage);
        }
    }

    public function testArgumentsAreCheckedBeforeAnyRequest(): void
    {
        foreach ([
            fn () => $this->presence()->setStatus('room:a', 'bad agent', 'idle'),
            fn () => $this->presence()->setStatus('room:a', 'agent', 'idle', ttl: 0),
            fn () => $this->presence()->setStatus('room:a', 'agent', 'idle', ttl: 86401),
            fn () => $this->presence()->members('nope'),
            fn () => $this->presence()->remove('room:a', ''),
        ] as $i => $call) {
            try {
                $call();
                self::fail("case $i: no exception");
            } catch (InvalidArgumentException) {
                $this->addToAssertionCount(1);
            }
        }
    }
}
