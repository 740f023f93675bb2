<?php

declare(strict_types=1);

namespace Fanout;

use Fanout\Exception\ApiException;
use Fanout\Exception\InvalidArgumentException;
use Fanout\Exception\TransportException;
use Fanout\Internal\HttpClient;
use Fanout\Internal\Payload;

/**
 * Presence from the backend, through the HTTP API (docs/protocol.md "Presence over HTTP"):
 * who is on a channel, and the status of agents that hold no WebSocket connection of their
 * own (a queue worker, an AI agent) shown to subscribers like any member.
 *
 * ```php
 * $presence = new Presence('http://127.0.0.1:8080', apiKey: FANOUT_API_KEY);
 * $presence->setStatus('room:agents', 'summarizer', ['state' => 'running flow X'], info: ['kind' => 'agent'], ttl: 60);
 * foreach ($presence->members('room:agents') as $member) { echo $member['user'], "\n"; }
 * $presence->remove('room:agents', 'summarizer');
 * ```
 *
 * The channel's namespace must keep presence (`presence = true` in the gateway's
 * `[namespaces.<name>]`), else `ApiException` `bad_request`.
 */
final class Presence
{
    /** Longest lease the gateway accepts, in seconds. */
    public const MAX_TTL = 86400;

    private readonly HttpClient $http;

    /**
     * @param string $baseUrl the gateway's HTTP address, e.g. `http://127.0.0.1:8080`.
     * @param string $apiKey one of the gateway's `api_key` values.
     * @param float $timeout seconds per request.
     * @param string|null $transport `curl`, `stream`, or null: curl when loaded.
     */
    public function __construct(string $baseUrl, string $apiKey, float $timeout = 5.0, ?string $transport = null)
    {
        $this->http = new HttpClient($baseUrl, $apiKey, $timeout, $transport);
    }

    /**
     * `GET /api/presence`: every member of the channel, cluster-wide, in no particular order.
     * A user with three tabs open is three members with the same `user`.
     *
     * @return list<array{user: string, conn_id: string, node: string, info?: mixed, status?: mixed}>
     *         `conn_id` is `api:<user>` for members set with `setStatus`.
     * @throws InvalidArgumentException|ApiException|TransportException
     */
    public function members(string $channel): array
    {
        Channel::assertValid($channel);
        $reply = $this->http->request('GET', '/api/presence', ['channel' => $channel]);
        return array_values(is_array($reply['members'] ?? null) ? $reply['members'] : []);
    }

    /**
     * `POST /api/status`: makes `$agentId` a member of the channel (conn id `api:<agentId>`)
     * with this status, until `$ttl` seconds pass without another call. Subscribers get a
     * `join` (the first time, when the namespace announces joins) and a `presence_update`.
     * Call it again before the TTL runs out to stay present; each call is an upsert.
     *
     * @param mixed $status any JSON-encodable value, e.g. `['state' => 'thinking']`; null
     *        removes the member, as `remove()` does.
     * @param mixed $info the member's `info` (shown with it, like a token's `info` claim); null: none.
     * @param int $ttl seconds, 1 to 86400.
     * @return string the member's conn id, `api:<agentId>`.
     * @throws InvalidArgumentException|ApiException|TransportException
     */
    public function setStatus(string $channel, string $agentId, mixed $status, mixed $info = null, int $ttl = 60): string
    {
        Channel::assertValid($channel);
        Channel::assertValidUserId($agentId);
        if ($ttl < 1 || $ttl > self::MAX_TTL) {
            throw new InvalidArgumentException('ttl must be 1 to ' . self::MAX_TTL . " seconds, got $ttl");
        }
        $request = ['channel' => $channel, 'user' => $agentId, 'status' => $status, 'ttl_s' => $ttl];
        if ($info !== null) {
            $request['info'] = $info;
        }
        $this->http->request('POST', '/api/status', [], Payload::json($request, 'status request'));
        return 'api:' . $agentId;
    }

    /**
     * `POST /api/status` with a null status: removes the member set by `setStatus` (with a
     * `leave` when the namespace announces leaves).
     *
     * @return bool whether it was there.
     * @throws InvalidArgumentException|ApiException|TransportException
     */
    public function remove(string $channel, string $agentId): bool
    {
        Channel::assertValid($channel);
        Channel::assertValidUserId($agentId);
        $request = ['channel' => $channel, 'user' => $agentId, 'status' => null];
        $reply = $this->http->request('POST', '/api/status', [], Payload::json($request, 'status request'));
        return ($reply['removed'] ?? false) === true;
    }
}
