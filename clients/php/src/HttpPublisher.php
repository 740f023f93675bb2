<?php

declare(strict_types=1);

namespace Fanout;

use Fanout\Exception\ApiException;
use Fanout\Exception\InvalidArgumentException;
use Fanout\Exception\TransportException;
use Fanout\Internal\HttpClient;
use Fanout\Internal\Payload;

/**
 * Publishes through the gateway's HTTP API, for hosts that cannot reach Redis:
 * `POST /api/publish` and `POST /api/broadcast` with `Authorization: Bearer <api key>`.
 *
 * ```php
 * $publisher = new HttpPublisher('http://127.0.0.1:8080', apiKey: FANOUT_API_KEY);
 * $publisher->publish('room:lobby', ['type' => 'chat', 'text' => 'hi']);
 * $offset = $publisher->publishWithHistory('dag:7', ['type' => 'node_state'])->offset;
 * ```
 *
 * The HTTP API keeps every message in the channel's history when the channel has one, so
 * `publish` and `publishWithHistory` differ only in what they return. Errors raise
 * `ApiException` with the gateway's error code (`bad_request`, `unauthorized`, `forbidden`,
 * `too_large`, `unavailable`) and message; no answer raises `TransportException`.
 */
final class HttpPublisher implements PublisherInterface
{
    private readonly HttpClient $http;

    /**
     * @param string $baseUrl the gateway's HTTP address, e.g. `http://127.0.0.1:8080` or
     *        `https://realtime.example.com` (a path prefix is kept).
     * @param string $apiKey one of the gateway's `api_key` values (`--api-key`, `FANOUT_API_KEY`).
     * @param float $timeout seconds per request.
     * @param string|null $transport `curl` or `stream` to choose; null: curl when the extension
     *        is loaded, else PHP's http stream wrapper.
     * @param float|null $connectTimeout seconds to connect, within `$timeout` (curl only); null: `$timeout`.
     * @throws InvalidArgumentException for a URL that is not http(s), an empty key or timeout.
     */
    public function __construct(string $baseUrl, string $apiKey, float $timeout = 5.0, ?string $transport = null, ?float $connectTimeout = null)
    {
        $this->http = new HttpClient($baseUrl, $apiKey, $timeout, $transport, $connectTimeout);
    }

    /**
     * `POST /api/publish`.
     *
     * @return int the message's offset on a channel with history, else 0.
     * @throws InvalidArgumentException|ApiException|TransportException
     */
    public function publish(string $channel, mixed $data): int
    {
        return $this->publishWithHistory($channel, $data)->offset;
    }

    /**
     * `POST /api/publish`: kept in the channel's history where it has one. The API does not
     * report the epoch: `PublishResult::$epoch` is null.
     *
     * @throws InvalidArgumentException|ApiException|TransportException
     */
    public function publishWithHistory(string $channel, mixed $data, ?string $idempotencyKey = null): PublishResult
    {
        Channel::assertValid($channel);
        $key = '';
        if ($idempotencyKey !== null) {
            if ($idempotencyKey === '' || strlen($idempotencyKey) > 256) {
                throw new InvalidArgumentException('an idempotency key must be 1 to 256 bytes');
            }
            $key = ',"idempotency_key":' . Payload::json($idempotencyKey, 'idempotency key');
        }
        $body = '{"channel":' . Payload::json($channel, 'channel') . ',"data":' . Payload::jsonForHttp($data) . $key . '}';
        $reply = $this->http->request('POST', '/api/publish', [], $body);
        return new PublishResult((int) ($reply['offset'] ?? 0));
    }

    /**
     * `POST /api/broadcast`: all or nothing, the gateway validates every channel before
     * publishing any, and publishes them in one Redis transaction.
     *
     * @param list<string> $channels 1 to 1000 channels.
     * @return int the number of distinct channels published to.
     * @throws InvalidArgumentException|ApiException|TransportException
     */
    public function broadcast(array $channels, mixed $data): int
    {
        if ($channels === []) {
            throw new InvalidArgumentException('broadcast needs at least one channel');
        }
        foreach ($channels as $channel) {
            if (!is_string($channel)) {
                throw new InvalidArgumentException('channel names must be strings, got ' . get_debug_type($channel));
            }
            Channel::assertValid($channel);
        }
        $body = '{"channels":' . Payload::json(array_values($channels), 'channels') . ',"data":' . Payload::jsonForHttp($data) . '}';
        $reply = $this->http->request('POST', '/api/broadcast', [], $body);
        return (int) ($reply['channels'] ?? 0);
    }

    /**
     * `GET /api/history`: a channel's recent messages, oldest first.
     *
     * @param int|null $since return the messages after this offset; null: the latest `$limit`.
     * @param int|null $limit at most this many (the gateway caps it at `max_recovery_messages`);
     *        0 returns only the position.
     * @return array{channel: string, epoch: string, offset: int, messages: list<array{offset: int, user?: string, data: mixed}>}
     * @throws InvalidArgumentException|ApiException|TransportException (`bad_request` for a channel without history)
     */
    public function history(string $channel, ?int $since = null, ?int $limit = null): array
    {
        Channel::assertValid($channel);
        if (($since !== null && $since < 0) || ($limit !== null && $limit < 0)) {
            throw new InvalidArgumentException('since and limit must not be negative');
        }
        $query = ['channel' => $channel];
        if ($since !== null) {
            $query['since'] = $since;
        }
        if ($limit !== null) {
            $query['limit'] = $limit;
        }
        return $this->http->request('GET', '/api/history', $query);
    }
}
