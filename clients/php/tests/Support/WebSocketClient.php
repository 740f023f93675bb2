<?php

declare(strict_types=1);

namespace Fanout\Tests\Support;

/**
 * A small RFC 6455 client for the tests: opening handshake with `Sec-WebSocket-Accept`
 * check, masked client frames (text, optionally fragmented), and a reader that reassembles
 * fragmented messages, answers pings with pongs (control frames may arrive between the
 * fragments of a message) and answers a close.
 */
final class WebSocketClient
{
    private const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
    public const OP_CONTINUATION = 0x0;
    public const OP_TEXT = 0x1;
    public const OP_BINARY = 0x2;
    public const OP_CLOSE = 0x8;
    public const OP_PING = 0x9;
    public const OP_PONG = 0xA;

    private string $buffer = '';
    private bool $closeSent = false;
    /** @var array{code: int, reason: string}|null */
    public ?array $closed = null;
    /** @var list<array<string, mixed>> JSON frames read and passed over by waitFor(), for failure messages. */
    public array $skipped = [];

    /** @param resource $socket */
    private function __construct(private $socket, string $leftover = '')
    {
        // Unbuffered, so that stream_select sees every byte still to be read.
        stream_set_read_buffer($socket, 0);
        $this->buffer = $leftover;
    }

    /** Wraps a stream whose handshake is done (the tests of this class use a socket pair). */
    public static function overStream($socket): self
    {
        return new self($socket);
    }

    /**
     * Connects and performs the opening handshake.
     *
     * @param array<string, string> $headers extra request headers
     * @throws HandshakeRefused for a non-101 answer.
     */
    public static function connect(string $host, int $port, string $path, array $headers = [], float $timeout = 5.0): self
    {
        $socket = @stream_socket_client("tcp://$host:$port", $errno, $error, $timeout);
        if ($socket === false) {
            throw new \RuntimeException("cannot connect to $host:$port: $error");
        }
        $key = base64_encode(random_bytes(16));
        $request = "GET $path HTTP/1.1\r\nHost: $host:$port\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            . "Sec-WebSocket-Key: $key\r\nSec-WebSocket-Version: 13\r\n";
        foreach ($headers as $name => $value) {
            $request .= "$name: $value\r\n";
        }
        self::writeAll($socket, $request . "\r\n");

        $deadline = microtime(true) + $timeout;
        $response = '';
        while (($end = strpos($response, "\r\n\r\n")) === false) {
            $response .= self::readSome($socket, $deadline);
        }
        $head = substr($response, 0, $end);
        $rest = substr($response, $end + 4);
        $lines = explode("\r\n", $head);
        if (preg_match('#^HTTP/1\.1 (\d{3})#', $lines[0], $m) !== 1) {
            throw new \RuntimeException("not an HTTP response: $lines[0]");
        }
        $fields = [];
        foreach (array_slice($lines, 1) as $line) {
            [$name, $value] = array_map('trim', explode(':', $line, 2)) + [1 => ''];
            $fields[strtolower($name)] = $value;
        }
        if ((int) $m[1] !== 101) {
            $length = (int) ($fields['content-length'] ?? 0);
            while (strlen($rest) < $length) {
                $rest .= self::readSome($socket, $deadline);
            }
            fclose($socket);
            throw new HandshakeRefused((int) $m[1], $rest);
        }
        $expected = base64_encode(sha1($key . self::GUID, true));
        if (strcasecmp($fields['upgrade'] ?? '', 'websocket') !== 0 || ($fields['sec-websocket-accept'] ?? '') !== $expected) {
            throw new \RuntimeException("bad handshake answer:\n$head");
        }
        return new self($socket, $rest);
    }

    /** Sends a text message, in fragments of `$fragmentSize` bytes when given. */
    public function sendText(string $text, ?int $fragmentSize = null): void
    {
        $parts = $fragmentSize === null || $text === '' ? [$text] : str_split($text, $fragmentSize);
        foreach ($parts as $i => $part) {
            $this->sendFrame($i === 0 ? self::OP_TEXT : self::OP_CONTINUATION, $part, $i === count($parts) - 1);
        }
    }

    /** Sends one protocol frame (a JSON object). */
    public function send(array $frame): void
    {
        $this->sendText(json_encode($frame, JSON_UNESCAPED_SLASHES | JSON_THROW_ON_ERROR));
    }

    /** Sends a frame with an `id` and returns the reply carrying that `id`. */
    public function request(array $frame, float $timeout = 5.0): array
    {
        $frame['id'] ??= bin2hex(random_bytes(4));
        $this->send($frame);
        return $this->waitFor(fn (array $f) => ($f['id'] ?? null) === $frame['id'], $timeout, "reply to {$frame['type']}");
    }

    /** Subscribes and fails unless `subscribed` comes back. */
    public function subscribe(string $channel): array
    {
        $reply = $this->request(['type' => 'subscribe', 'channel' => $channel]);
        if (($reply['type'] ?? '') !== 'subscribed') {
            throw new \RuntimeException("subscribe $channel: " . json_encode($reply));
        }
        return $reply;
    }

    /**
     * The next message: `['opcode' => OP_TEXT|OP_BINARY, 'payload' => ...]`, or
     * `['opcode' => OP_CLOSE, 'code' => ..., 'reason' => ...]`; null when nothing comes in time.
     */
    public function receive(float $timeout): ?array
    {
        $deadline = microtime(true) + $timeout;
        $message = null;
        $opcode = null;
        while (true) {
            $frame = $this->readFrame($deadline);
            if ($frame === null) {
                if ($message !== null) {
                    throw new \RuntimeException('timed out in the middle of a fragmented message');
                }
                return null;
            }
            [$fin, $op, $payload] = $frame;
            switch ($op) {
                case self::OP_PING:
                    $this->sendFrame(self::OP_PONG, $payload, true);
                    break;
                case self::OP_PONG:
                    break;
                case self::OP_CLOSE:
                    $code = strlen($payload) >= 2 ? unpack('n', $payload)[1] : 1005;
                    $this->closed = ['code' => $code, 'reason' => (string) substr($payload, 2)];
                    if (!$this->closeSent) {
                        $this->sendFrame(self::OP_CLOSE, substr($payload, 0, 2), true);
                    }
                    return ['opcode' => self::OP_CLOSE] + $this->closed;
                case self::OP_TEXT:
                case self::OP_BINARY:
                    if ($message !== null) {
                        throw new \RuntimeException('new data frame in the middle of a fragmented message');
                    }
                    [$opcode, $message] = [$op, $payload];
                    break;
                case self::OP_CONTINUATION:
                    if ($message === null) {
                        throw new \RuntimeException('continuation frame without a message to continue');
                    }
                    $message .= $payload;
                    break;
                default:
                    throw new \RuntimeException("unknown opcode $op");
            }
            if ($message !== null && $fin && $op !== self::OP_PING && $op !== self::OP_PONG) {
                if ($opcode === self::OP_TEXT && !preg_match('//u', $message)) {
                    throw new \RuntimeException('text message is not valid UTF-8');
                }
                return ['opcode' => $opcode, 'payload' => $message];
            }
        }
    }

    /** The next JSON frame, or null when nothing comes in time; fails on a close. */
    public function next(float $timeout = 5.0): ?array
    {
        $message = $this->receive($timeout);
        if ($message === null) {
            return null;
        }
        if ($message['opcode'] === self::OP_CLOSE) {
            throw new \RuntimeException("connection closed: {$message['code']} {$message['reason']}");
        }
        return json_decode($message['payload'], true, 512, JSON_THROW_ON_ERROR);
    }

    /** Reads frames until one matches; the others are kept in `$skipped`. Fails after `$timeout`. */
    public function waitFor(callable $matches, float $timeout = 5.0, string $what = 'a frame'): array
    {
        $deadline = microtime(true) + $timeout;
        while (($left = $deadline - microtime(true)) > 0) {
            $frame = $this->next($left);
            if ($frame === null) {
                break;
            }
            if ($matches($frame)) {
                return $frame;
            }
            $this->skipped[] = $frame;
        }
        throw new \RuntimeException("no $what within {$timeout}s; other frames: " . json_encode(array_slice($this->skipped, -10)));
    }

    /**
     * Every JSON frame that matches, read for `$within` seconds (for "nothing more came" checks).
     *
     * @return list<array<string, mixed>>
     */
    public function drain(callable $matches, float $within): array
    {
        $deadline = microtime(true) + $within;
        $found = [];
        while (($left = $deadline - microtime(true)) > 0) {
            $frame = $this->next($left);
            if ($frame === null) {
                break;
            }
            if ($matches($frame)) {
                $found[] = $frame;
            } else {
                $this->skipped[] = $frame;
            }
        }
        return $found;
    }

    /** Sends a close frame and closes the socket. */
    public function close(int $code = 1000): void
    {
        if (is_resource($this->socket)) {
            if (!$this->closeSent && $this->closed === null) {
                try {
                    $this->sendFrame(self::OP_CLOSE, pack('n', $code), true);
                } catch (\RuntimeException) {
                    // The server may have gone already.
                }
            }
            fclose($this->socket);
        }
    }

    public function __destruct()
    {
        $this->close();
    }

    /** Writes one frame, masked as RFC 6455 requires of clients. */
    public function sendFrame(int $opcode, string $payload, bool $fin): void
    {
        if ($opcode === self::OP_CLOSE) {
            $this->closeSent = true;
        }
        $length = strlen($payload);
        $header = chr(($fin ? 0x80 : 0) | $opcode);
        if ($length < 126) {
            $header .= chr(0x80 | $length);
        } elseif ($length < 65536) {
            $header .= chr(0x80 | 126) . pack('n', $length);
        } else {
            $header .= chr(0x80 | 127) . pack('J', $length);
        }
        $mask = random_bytes(4);
        $masked = $length === 0 ? '' : $payload ^ substr(str_repeat($mask, intdiv($length, 4) + 1), 0, $length);
        self::writeAll($this->socket, $header . $mask . $masked);
    }

    /** @return array{bool, int, string}|null fin, opcode, unmasked payload; null on timeout */
    private function readFrame(float $deadline): ?array
    {
        if (!$this->fill(2, $deadline)) {
            return null;
        }
        $b0 = ord($this->buffer[0]);
        $b1 = ord($this->buffer[1]);
        if ($b0 & 0x70) {
            throw new \RuntimeException('reserved bits set: no extension was negotiated');
        }
        $length = $b1 & 0x7f;
        $masked = (bool) ($b1 & 0x80);
        $headerLength = 2 + ($length === 126 ? 2 : ($length === 127 ? 8 : 0)) + ($masked ? 4 : 0);
        // Once a frame has started, wait for all of it (a generous bound) rather than split it.
        $frameDeadline = max($deadline, microtime(true) + 5);
        if (!$this->fill($headerLength, $frameDeadline)) {
            throw new \RuntimeException('truncated frame header');
        }
        if ($length === 126) {
            $length = unpack('n', substr($this->buffer, 2, 2))[1];
        } elseif ($length === 127) {
            $length = unpack('J', substr($this->buffer, 2, 8))[1];
        }
        if ($masked) {
            throw new \RuntimeException('the server masked a frame (RFC 6455 5.1 forbids it)');
        }
        if (!$this->fill($headerLength + $length, $frameDeadline)) {
            throw new \RuntimeException('truncated frame');
        }
        $payload = substr($this->buffer, $headerLength, $length);
        $this->buffer = substr($this->buffer, $headerLength + $length);
        return [(bool) ($b0 & 0x80), $b0 & 0x0f, $payload];
    }

    /** Reads until the buffer holds `$bytes` bytes; false when the deadline passes first. */
    private function fill(int $bytes, float $deadline): bool
    {
        while (strlen($this->buffer) < $bytes) {
            if (microtime(true) >= $deadline) {
                return false;
            }
            try {
                $this->buffer .= self::readSome($this->socket, $deadline);
            } catch (ReadTimeout) {
                return false;
            }
        }
        return true;
    }

    /** Some bytes from the socket; ReadTimeout at the deadline; RuntimeException at end of stream. */
    private static function readSome($socket, float $deadline): string
    {
        $left = $deadline - microtime(true);
        if ($left <= 0) {
            throw new ReadTimeout();
        }
        $read = [$socket];
        $write = $except = null;
        $ready = stream_select($read, $write, $except, (int) $left, (int) (fmod($left, 1) * 1e6));
        if ($ready === false) {
            throw new \RuntimeException('stream_select failed');
        }
        if ($ready === 0) {
            throw new ReadTimeout();
        }
        $data = fread($socket, 65536);
        if ($data === false || ($data === '' && feof($socket))) {
            throw new \RuntimeException('connection closed by the server');
        }
        return $data;
    }

    private static function writeAll($socket, string $bytes): void
    {
        while ($bytes !== '') {
            $written = @fwrite($socket, $bytes);
            if ($written === false || $written === 0) {
                throw new \RuntimeException('cannot write to the WebSocket');
            }
            $bytes = substr($bytes, $written);
        }
    }
}
