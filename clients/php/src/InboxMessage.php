<?php

declare(strict_types=1);

namespace Fanout;

/**
 * One entry of the inbox stream: what a client sent with a `send` frame, with who sent it
 * (docs/publishing.md "Reading what clients send").
 *
 * `user` is the authenticated sender, the `sub` of the client's token: act as this user,
 * never as a user id found inside `data`.
 */
final class InboxMessage
{
    /**
     * @param array<string, string> $fields every field of the stream entry, as stored.
     */
    public function __construct(
        /** The stream entry id, e.g. `1732226400123-0` (the `stream_id` the client got in `sent`). */
        public readonly string $id,
        /** The stream it was read from, e.g. `fanout:inbox`. */
        public readonly string $stream,
        /** The channel the client sent on; the client was allowed to subscribe to it. */
        public readonly string $channel,
        /** The sender's user id, from its token. */
        public readonly string $user,
        /** The sender connection's `conn_id`. */
        public readonly string $connId,
        /** The gateway node that received it. */
        public readonly string $node,
        /** When the node received it, Unix milliseconds. */
        public readonly int $receivedAt,
        /** The client's `data`, decoded from JSON (objects as associative arrays). */
        public readonly mixed $data,
        /** The client's `data` as JSON text, exactly as the client wrote it. */
        public readonly string $rawData,
        /**
         * The event type by the catalogue's convention (docs/events.md): `data.type` when
         * `data` is an object with a string `type`, e.g. `human_decision`; else null.
         */
        public readonly ?string $type,
        /** Whether it was delivered before without being acknowledged (a handler failed or a worker died): make handling idempotent. */
        public readonly bool $redelivered,
        public readonly array $fields,
    ) {
    }

    /**
     * Builds a message from a stream entry's fields.
     *
     * @param array<string, string> $fields
     */
    public static function fromEntry(string $stream, string $id, array $fields, bool $redelivered): self
    {
        $raw = $fields['data'] ?? 'null';
        try {
            $data = json_decode($raw, true, 512, JSON_BIGINT_AS_STRING | JSON_THROW_ON_ERROR);
        } catch (\JsonException) {
            // fanout stores valid JSON; text from another writer is passed on as a string.
            $data = $raw;
        }
        return new self(
            id: $id,
            stream: $stream,
            channel: $fields['channel'] ?? '',
            user: $fields['user'] ?? '',
            connId: $fields['conn_id'] ?? '',
            node: $fields['node'] ?? '',
            receivedAt: (int) ($fields['received_at'] ?? 0),
            data: $data,
            rawData: $raw,
            type: is_array($data) && is_string($data['type'] ?? null) ? $data['type'] : null,
            redelivered: $redelivered,
            fields: $fields,
        );
    }

    /** How long ago the gateway received it, in seconds (e.g. to drop stale decisions). */
    public function age(): float
    {
        return max(0.0, microtime(true) - $this->receivedAt / 1000);
    }
}
