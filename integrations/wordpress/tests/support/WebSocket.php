<?php
/**
 * A minimal RFC 6455 WebSocket client for the tests: text frames of JSON objects, masked
 * as clients must, answering the gateway's pings. Enough to act as a browser tab would.
 */

declare(strict_types=1);

namespace FanoutWPTest;

final class WebSocket
{
    /** @var resource */
    private $socket;
    private string $buffer = '';

    /**
     * Opens `ws://host:port/path?query`; throws when the gateway does not answer 101.
     *
     * @param array<string, string> $headers extra request headers (e.g. Origin).
     */
    public static function open(string $url, array $headers = [], float $timeout = 5.0): self
    {
        $parts = parse_url($url);
        $host = $parts['host'];
        $port = $parts['port'] ?? 80;
        $path = ($parts['path'] ?? '/') . (isset($parts['query']) ? '?' . $parts['query'] : '');
        $socket = @stream_socket_client("tcp://$host:$port", $errno, $errstr, $timeout);
        if ($socket === false) {
            throw new \RuntimeException("cannot connect to $host:$port: $errstr");
        }
        stream_set_timeout($socket, (int) ceil($timeout));
        $key = base64_encode(random_bytes(16));
        $request = "GET $path HTTP/1.1\r\nHost: $host:$port\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            . "Sec-WebSocket-Key: $key\r\nSec-WebSocket-Version: 13\r\n";
        foreach ($headers as $name => $value) {
            $request .= "$name: $value\r\n";
        }
        fwrite($socket, $request . "\r\n");

        $client = new self();
        $client->socket = $socket;
        $head = '';
        $deadline = microtime(true) + $timeout;
        while (!str_contains($head, "\r\n\r\n")) {
            if (microtime(true) > $deadline || feof($socket)) {
                throw new \RuntimeException('no WebSocket handshake answer: ' . $head);
            }
            $chunk = fread($socket, 4096);
            $head .= $chunk === false ? '' : $chunk;
        }
        [$head, $rest] = explode("\r\n\r\n", $head, 2);
        if (!preg_match('#^HTTP/1\.1 (\d{3})#', $head, $m) || $m[1] !== '101') {
            $status = (int) ($m[1] ?? 0);
            fclose($socket);
            throw new HandshakeRefused($status, $head . "\r\n\r\n" . $rest);
        }
        $expected = base64_encode(sha1($key . '258EAFA5-E914-47DA-95CA-C5AB0DC85B11', true));
        if (!preg_match('/^sec-websocket-accept:\s*(\S+)/mi', $head, $a) || $a[1] !== $expected) {
            throw new \RuntimeException('bad Sec-WebSocket-Accept');
        }
        $client->buffer = $rest;
        return $client;
    }

    /** Sends one JSON frame. */
    public function send(array $frame): void
    {
        $this->writeFrame(0x1, json_encode($frame, JSON_THROW_ON_ERROR | JSON_UNESCAPED_SLASHES));
    }

    /**
     * Reads frames until one satisfies `$match` (all frames read are returned through
     * `$seen`), or fails after `$timeout` seconds.
     *
     * @param callable(array): bool $match
     * @param list<array> $seen
     */
    public function waitFor(callable $match, float $timeout = 10.0, ?array &$seen = null): array
    {
        $seen = [];
        $deadline = microtime(true) + $timeout;
        while (microtime(true) < $deadline) {
            $frame = $this->read($deadline - microtime(true));
            if ($frame === null) {
                continue;
            }
            $seen[] = $frame;
            if ($match($frame)) {
                return $frame;
            }
        }
        throw new \RuntimeException('timed out waiting for a frame; saw: ' . json_encode($seen));
    }

    /** Reads frames for `$seconds` and returns them all (to check that something does NOT arrive). */
    public function drain(float $seconds): array
    {
        $frames = [];
        $deadline = microtime(true) + $seconds;
        while (microtime(true) < $deadline) {
            $frame = $this->read($deadline - microtime(true));
            if ($frame !== null) {
                $frames[] = $frame;
            }
        }
        return $frames;
    }

    /** One JSON text frame, or null when none arrived within `$timeout` seconds. */
    private function read(float $timeout): ?array
    {
        $deadline = microtime(true) + max(0.0, $timeout);
        while (true) {
            $frame = $this->parseFrame();
            if ($frame !== null) {
                [$opcode, $payload] = $frame;
                if ($opcode === 0x9) {
                    $this->writeFrame(0xA, $payload); // pong
                    continue;
                }
                if ($opcode === 0x8) {
                    $code = strlen($payload) >= 2 ? unpack('n', substr($payload, 0, 2))[1] : 0;
                    throw new \RuntimeException("connection closed by the gateway: $code " . substr($payload, 2));
                }
                if ($opcode === 0x1) {
                    return json_decode($payload, true, 512, JSON_THROW_ON_ERROR);
                }
                continue;
            }
            $left = $deadline - microtime(true);
            if ($left <= 0) {
                return null;
            }
            $read = [$this->socket];
            $write = $except = null;
            $ready = stream_select($read, $write, $except, (int) $left, (int) (fmod($left, 1.0) * 1e6));
            if ($ready === false) {
                throw new \RuntimeException('select failed');
            }
            if ($ready === 0) {
                return null;
            }
            $chunk = fread($this->socket, 65536);
            if ($chunk === '' || $chunk === false) {
                if (feof($this->socket)) {
                    throw new \RuntimeException('connection closed');
                }
                continue;
            }
            $this->buffer .= $chunk;
        }
    }

    /** @return array{int, string}|null one complete unfragmented frame from the buffer. */
    private function parseFrame(): ?array
    {
        if (strlen($this->buffer) < 2) {
            return null;
        }
        $b1 = ord($this->buffer[0]);
        $b2 = ord($this->buffer[1]);
        $len = $b2 & 0x7F;
        $offset = 2;
        if ($len === 126) {
            if (strlen($this->buffer) < 4) {
                return null;
            }
            $len = unpack('n', substr($this->buffer, 2, 2))[1];
            $offset = 4;
        } elseif ($len === 127) {
            if (strlen($this->buffer) < 10) {
                return null;
            }
            $len = unpack('J', substr($this->buffer, 2, 8))[1];
            $offset = 10;
        }
        if (strlen($this->buffer) < $offset + $len) {
            return null;
        }
        $payload = substr($this->buffer, $offset, $len);
        $this->buffer = substr($this->buffer, $offset + $len);
        if (($b1 & 0x80) === 0) {
            throw new \RuntimeException('fragmented frames are not expected from the gateway in these tests');
        }
        return [$b1 & 0x0F, $payload];
    }

    private function writeFrame(int $opcode, string $payload): void
    {
        $len = strlen($payload);
        $head = chr(0x80 | $opcode);
        if ($len < 126) {
            $head .= chr(0x80 | $len);
        } elseif ($len < 65536) {
            $head .= chr(0x80 | 126) . pack('n', $len);
        } else {
            $head .= chr(0x80 | 127) . pack('J', $len);
        }
        $mask = random_bytes(4);
        $masked = $payload ^ str_repeat($mask, intdiv($len, 4) + 1);
        fwrite($this->socket, $head . $mask . substr($masked, 0, $len));
    }

    public function close(): void
    {
        if (is_resource($this->socket)) {
            $this->writeFrame(0x8, pack('n', 1000));
            fclose($this->socket);
        }
    }
}

/** The gateway answered the upgrade with an HTTP error. */
final class HandshakeRefused extends \RuntimeException
{
    public function __construct(public readonly int $status, public readonly string $response)
    {
        parent::__construct("WebSocket upgrade refused with HTTP $status: $response");
    }
}
