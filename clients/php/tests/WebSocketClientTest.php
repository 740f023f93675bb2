<?php

declare(strict_types=1);

namespace Fanout\Tests;

use Fanout\Tests\Support\WebSocketClient;
use PHPUnit\Framework\TestCase;

/**
 * The test helper's frame reader, against hand-written server frames on a socket pair:
 * the gateway never fragments, so fragmentation and interleaved pings are checked here.
 */
final class WebSocketClientTest extends TestCase
{
    public function testReassemblesFragmentsAndAnswersAPingInBetween(): void
    {
        [$client, $server] = stream_socket_pair(STREAM_PF_UNIX, STREAM_SOCK_STREAM, STREAM_IPPROTO_IP);
        $ws = WebSocketClient::overStream($client);
        $payload = str_repeat('é', 100); // 200 bytes: a 16-bit length on the whole, split inside a character
        fwrite($server, "\x01" . chr(7) . substr($payload, 0, 7));          // text, not final
        fwrite($server, "\x89\x02hi");                                      // ping between fragments
        fwrite($server, "\x80" . chr(126) . pack('n', 193) . substr($payload, 7)); // final continuation

        $message = $ws->receive(2.0);
        self::assertSame(WebSocketClient::OP_TEXT, $message['opcode']);
        self::assertSame($payload, $message['payload']);

        // The pong: FIN + opcode 0xA, masked, payload "hi" under the mask.
        $pong = fread($server, 64);
        self::assertSame("\x8a\x82", substr($pong, 0, 2));
        self::assertSame('hi', substr($pong, 6, 2) ^ substr($pong, 2, 2));
    }

    public function testMasksEveryFrameAndAnswersAClose(): void
    {
        [$client, $server] = stream_socket_pair(STREAM_PF_UNIX, STREAM_SOCK_STREAM, STREAM_IPPROTO_IP);
        $ws = WebSocketClient::overStream($client);
        $text = str_repeat('x', 70000); // a 64-bit length
        $ws->sendText($text);
        $frame = '';
        while (strlen($frame) < 14 + 70000) {
            $frame .= fread($server, 65536);
        }
        self::assertSame("\x81\xff", substr($frame, 0, 2));
        self::assertSame(70000, unpack('J', substr($frame, 2, 8))[1]);
        $mask = substr($frame, 10, 4);
        self::assertSame($text, substr($frame, 14) ^ str_repeat($mask, 17500));

        fwrite($server, "\x88\x05" . pack('n', 4001) . 'bye');
        $close = $ws->receive(2.0);
        self::assertSame(['opcode' => WebSocketClient::OP_CLOSE, 'code' => 4001, 'reason' => 'bye'], $close);
        $reply = fread($server, 64);
        self::assertSame("\x88\x82", substr($reply, 0, 2));
        self::assertSame(pack('n', 4001), substr($reply, 6, 2) ^ substr($reply, 2, 2));
    }

    public function testReturnsNullWhenNothingArrives(): void
    {
        // The other end stays open and silent.
        [$client, $silentServer] = stream_socket_pair(STREAM_PF_UNIX, STREAM_SOCK_STREAM, STREAM_IPPROTO_IP);
        self::assertNull(WebSocketClient::overStream($client)->receive(0.2));
        fclose($silentServer);
    }
}
