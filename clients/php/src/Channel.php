<?php

declare(strict_types=1);

namespace Fanout;

use Fanout\Exception\InvalidArgumentException;

/**
 * The channel grammar of the gateway (docs/protocol.md "Channels"), checked before anything
 * is sent so that a bad name fails loudly at the call site instead of being dropped by the
 * nodes (a plain `PUBLISH` to an invalid channel reaches no one, without an error).
 *
 * A channel is `broadcast` or `<namespace>:<name>`: at most 128 bytes, a namespace of 1-32
 * characters `a-z 0-9 _ -`, a non-empty name of `A-Z a-z 0-9 _ - . : @`. Whether the
 * namespace is configured on the gateway (`user`, `room`, `dag` and any added) is only
 * known there: the HTTP API refuses unknown ones, Redis publishing cannot tell.
 */
final class Channel
{
    /** Longest channel name, in bytes, namespace included. */
    public const MAX_BYTES = 128;
    /** Longest namespace, in characters. */
    public const MAX_NAMESPACE_CHARS = 32;
    /** Longest user id: `user:<id>` must be a valid channel. */
    public const MAX_USER_ID_BYTES = self::MAX_BYTES - 5;

    private function __construct()
    {
    }

    /** Whether `$name` is a valid channel name. */
    public static function isValid(string $name): bool
    {
        return self::problem($name) === null;
    }

    /**
     * Returns `$name` when it is a valid channel name.
     *
     * @throws InvalidArgumentException with the gateway's own wording of the problem.
     */
    public static function assertValid(string $name): string
    {
        $problem = self::problem($name);
        if ($problem !== null) {
            throw new InvalidArgumentException("invalid channel: $problem");
        }
        return $name;
    }

    /**
     * Returns the user id as a string when `user:<id>` is a valid channel, the rule the
     * gateway applies to a token's `sub` and to the `user` of `POST /api/status`.
     *
     * @throws InvalidArgumentException
     */
    public static function assertValidUserId(string|int $userId): string
    {
        $id = (string) $userId;
        if ($id === '') {
            throw new InvalidArgumentException('user id is empty');
        }
        if (strlen($id) > self::MAX_USER_ID_BYTES || preg_match('/^[A-Za-z0-9_.:@-]+$/D', $id) !== 1) {
            throw new InvalidArgumentException(sprintf(
                'invalid user id %s: use 1-%d bytes of letters, digits and `_ - . : @`',
                self::quote($id),
                self::MAX_USER_ID_BYTES,
            ));
        }
        return $id;
    }

    /** The personal channel of a user, `user:<id>`. */
    public static function user(string|int $userId): string
    {
        return 'user:' . self::assertValidUserId($userId);
    }

    /** What is wrong with the name, in the gateway's words and order of checks, or null. */
    private static function problem(string $name): ?string
    {
        if ($name === '') {
            return 'channel name is empty';
        }
        if (strlen($name) > self::MAX_BYTES) {
            return 'channel name is longer than ' . self::MAX_BYTES . ' bytes';
        }
        if ($name === 'broadcast') {
            return null;
        }
        $colon = strpos($name, ':');
        if ($colon === false || $colon === 0) {
            return 'channel name must be `broadcast` or `<namespace>:<name>`';
        }
        $namespace = substr($name, 0, $colon);
        $rest = substr($name, $colon + 1);
        if (strlen($namespace) > self::MAX_NAMESPACE_CHARS) {
            return 'channel namespace is longer than ' . self::MAX_NAMESPACE_CHARS . ' characters';
        }
        $bad = self::firstOutside($namespace, 'a-z0-9_-');
        if ($bad !== null) {
            return self::badCharacter($bad);
        }
        if ($namespace === 'broadcast') {
            return '`broadcast` is a channel of its own, not a namespace';
        }
        if ($rest === '') {
            return 'channel name has an empty part after the namespace';
        }
        $bad = self::firstOutside($rest, 'A-Za-z0-9_.:@-');
        return $bad === null ? null : self::badCharacter($bad);
    }

    /** The first character of `$text` outside the ASCII class `$allowed`, or null. */
    private static function firstOutside(string $text, string $allowed): ?string
    {
        // Whole UTF-8 characters when the text is UTF-8, as the gateway reports them.
        $flags = preg_match('//u', $text) === 1 ? 'u' : '';
        return preg_match("/[^$allowed]/$flags", $text, $m) === 1 ? $m[0] : null;
    }

    /** The gateway's message for a character outside the grammar, the character quoted as Rust's `{:?}` does. */
    private static function badCharacter(string $character): string
    {
        $shown = match (true) {
            $character === "'" => "'\\''",
            $character === '\\' => "'\\\\'",
            $character === "\t" => "'\\t'",
            $character === "\r" => "'\\r'",
            $character === "\n" => "'\\n'",
            $character === "\0" => "'\\0'",
            strlen($character) === 1 && (ord($character) < 0x20 || ord($character) >= 0x7f) => sprintf("'\\u{%x}'", ord($character)),
            default => "'$character'",
        };
        return "channel name contains $shown; allowed: letters, digits and `_ - . : @` (namespace: lowercase letters, digits, `_ -`)";
    }

    /** A short, printable rendering of untrusted text for an error message. */
    private static function quote(string $text): string
    {
        $shown = strlen($text) > 40 ? substr($text, 0, 40) . '...' : $text;
        return json_encode($shown, JSON_UNESCAPED_SLASHES | JSON_INVALID_UTF8_SUBSTITUTE) ?: '"?"';
    }
}
