<?php

declare(strict_types=1);

namespace Fanout\Tests;

use Fanout\Exception\FanoutException;
use Fanout\Exception\InvalidArgumentException;
use Fanout\Internal\EcdsaSignature;
use Fanout\Tests\Support\Gateway;
use Fanout\Tests\Support\HandshakeRefused;
use Fanout\Tests\Support\Process;
use Fanout\Token;
use PHPUnit\Framework\TestCase;

/** Tokens minted by `Token`, judged by the real gateway configured with the matching key. */
final class TokenTest extends TestCase
{
    private const FIXTURES = __DIR__ . '/../../../tests/fixtures';

    /** @var list<Gateway> */
    private array $gateways = [];

    protected function tearDown(): void
    {
        foreach ($this->gateways as $gateway) {
            $gateway->stop();
        }
    }

    private function gateway(array $args = [], bool $withSecret = true): Gateway
    {
        return $this->gateways[] = new Gateway($args, $withSecret);
    }

    public function testHs256TokenIsAcceptedWithItsClaimsAndATamperedOneIsRefused(): void
    {
        $gateway = $this->gateway();
        $jwt = (new Token(secret: Gateway::SECRET))->mint('alice', channels: ['room:*'], ttl: 120, info: ['name' => 'Alice']);

        $ws = $gateway->connect($jwt);
        $ack = $ws->next();
        self::assertSame('connection_ack', $ack['type']);
        self::assertSame('alice', $ack['user']);
        self::assertEqualsWithDelta(time() + 120, $ack['expires_at'], 5);
        self::assertSame('subscribed', $ws->request(['type' => 'subscribe', 'channel' => 'room:lobby'])['type']);
        $refused = $ws->request(['type' => 'subscribe', 'channel' => 'dag:1']);
        self::assertSame(['error', 'forbidden'], [$refused['type'], $refused['code']]);
        $ws->close();

        [$header, $claims, $signature] = explode('.', $jwt);
        $forged = json_decode(base64_decode(strtr($claims, '-_', '+/')), true);
        $forged['sub'] = 'mallory';
        $tampered = $header . '.' . rtrim(strtr(base64_encode(json_encode($forged)), '+/', '-_'), '=') . '.' . $signature;
        $this->assertRefused($gateway, $tampered, 'token signature does not verify');
        $this->assertRefused($gateway, (new Token(secret: 'another-secret-of-32-bytes-or-more!!'))->mint('alice'), 'token signature does not verify');
    }

    public function testTokensCarryIatAndJtiAndChannelTokensTheirChannel(): void
    {
        $tokens = new Token(secret: Gateway::SECRET);
        $claims = static fn (string $jwt): array => json_decode(base64_decode(strtr(explode('.', $jwt)[1], '-_', '+/')), true);
        $connection = $claims($tokens->mint('alice', ttl: 60, jti: 'login-7'));
        self::assertSame(['alice', 'login-7', 60], [$connection['sub'], $connection['jti'], $connection['exp'] - $connection['iat']]);
        self::assertEqualsWithDelta(time(), $connection['iat'], 2);
        self::assertArrayNotHasKey('jti', $claims($tokens->mint('alice')));
        $grant = $claims($tokens->forChannel('alice', 'room:doc-7', ttl: 90, info: ['role' => 'editor'], jti: 'grant-1'));
        self::assertSame(['alice', 'room:doc-7', ['role' => 'editor'], 'grant-1', 90], [$grant['sub'], $grant['channel'], $grant['info'], $grant['jti'], $grant['exp'] - $grant['iat']]);
        self::assertArrayNotHasKey('channels', $grant);
    }

    public function testPublishClaimLetsTheClientPublish(): void
    {
        $gateway = $this->gateway();
        $jwt = (new Token(secret: Gateway::SECRET))->mint(42, channels: ['dag:7'], publish: ['dag:7']);
        $ws = $gateway->connect($jwt);
        self::assertSame('42', $ws->next()['user']);
        $reply = $ws->request(['type' => 'publish', 'channel' => 'dag:7', 'data' => ['text' => 'hi']]);
        self::assertSame('published', $reply['type'], json_encode($reply));
        $denied = $ws->request(['type' => 'publish', 'channel' => 'dag:8', 'data' => 1]);
        self::assertSame('forbidden', $denied['code'] ?? null);
    }

    public function testAudienceAndIssuerAreWrittenWhenTheGatewayRequiresThem(): void
    {
        $gateway = $this->gateway(['--jwt-audience', 'fanout-php', '--jwt-issuer', 'wordpress']);
        $ws = $gateway->connect((new Token(secret: Gateway::SECRET, audience: 'fanout-php', issuer: 'wordpress'))->mint('u1'));
        self::assertSame('connection_ack', $ws->next()['type']);
        $this->assertRefused($gateway, (new Token(secret: Gateway::SECRET))->mint('u1'), 'token lacks a required claim');
        $this->assertRefused($gateway, (new Token(secret: Gateway::SECRET, audience: 'other', issuer: 'wordpress'))->mint('u1'), 'token audience (aud) not accepted');
    }

    public function testRs256TokenIsAcceptedByAGatewayWithTheRsaPublicKey(): void
    {
        $gateway = $this->gateway(['--jwt-public-key', self::FIXTURES . '/rsa_public.pem'], withSecret: false);
        $tokens = new Token(privateKey: file_get_contents(self::FIXTURES . '/rsa_private.pem'));
        self::assertSame('RS256', $tokens->algorithm());
        $jwt = $tokens->mint('bob', channels: ['room:x']);
        $ws = $gateway->connect($jwt);
        self::assertSame('bob', $ws->next()['user']);

        $this->assertRefused($gateway, substr($jwt, 0, -4) . (str_ends_with($jwt, 'AAAA') ? 'BBBB' : 'AAAA'), 'token signature does not verify');
        // An HS256 token is refused by an RS256 gateway before its signature is looked at.
        $this->assertRefused($gateway, (new Token(secret: Gateway::SECRET))->mint('bob'), 'token algorithm is not the one this server accepts');
    }

    public function testEs256TokensAreAcceptedByAGatewayWithTheEcPublicKey(): void
    {
        [$private, $public] = self::ecKeyPair('prime256v1');
        $gateway = $this->gateway(['--jwt-public-key', $public], withSecret: false);
        $tokens = new Token(privateKey: file_get_contents($private));
        self::assertSame('ES256', $tokens->algorithm());
        // ECDSA signatures are random: several tokens exercise r and s of varying DER lengths.
        for ($i = 0; $i < 8; $i++) {
            $jwt = $tokens->mint("carol-$i", channels: ['room:x'], info: ['n' => $i]);
            self::assertSame(64, strlen(base64_decode(strtr(explode('.', $jwt)[2], '-_', '+/'))));
            $ws = $gateway->connect($jwt);
            self::assertSame("carol-$i", $ws->next()['user']);
            $ws->close();
        }
        $this->assertRefused($gateway, str_replace('.eyJ', '.eyK', $jwt), null);
        [$otherPrivate] = self::ecKeyPair('prime256v1');
        $this->assertRefused($gateway, (new Token(privateKey: file_get_contents($otherPrivate)))->mint('carol'), 'token signature does not verify');
    }

    public function testEs384TokenIsAcceptedByAGatewayPinnedToEs384(): void
    {
        [$private, $public] = self::ecKeyPair('secp384r1');
        $gateway = $this->gateway(['--jwt-public-key', $public, '--jwt-algorithm', 'ES384'], withSecret: false);
        $tokens = new Token(privateKey: file_get_contents($private));
        self::assertSame('ES384', $tokens->algorithm());
        $ws = $gateway->connect($tokens->mint('dave'));
        self::assertSame('dave', $ws->next()['user']);
    }

    public function testDerSignaturesBecomeFixedWidthRAndS(): void
    {
        // r with a sign byte (top bit set), s shorter than 32 bytes (leading zeros dropped by DER).
        $r = "\x00" . str_repeat("\xff", 32);
        $s = str_repeat("\x01", 30);
        $der = "\x30" . chr(2 + 33 + 2 + 30) . "\x02\x21" . $r . "\x02\x1e" . $s;
        self::assertSame(str_repeat("\xff", 32) . "\x00\x00" . $s, EcdsaSignature::derToRaw($der, 32));

        // And back through OpenSSL: a converted signature verifies once re-encoded as DER.
        $key = openssl_pkey_new(['private_key_type' => OPENSSL_KEYTYPE_EC, 'curve_name' => 'prime256v1']);
        for ($i = 0; $i < 20; $i++) {
            openssl_sign("message $i", $signature, $key, OPENSSL_ALGO_SHA256);
            $raw = EcdsaSignature::derToRaw($signature, 32);
            self::assertSame(64, strlen($raw));
            $public = openssl_pkey_get_public(openssl_pkey_get_details($key)['key']);
            self::assertSame(1, openssl_verify("message $i", self::rawToDer($raw), $public, OPENSSL_ALGO_SHA256));
        }

        $this->expectException(\UnexpectedValueException::class);
        EcdsaSignature::derToRaw("\x30\x06\x02\x01\x01\x02\x05\x01", 32);
    }

    /** @dataProvider invalidMints */
    public function testRefusesWhatTheGatewayWouldRefuse(callable $mint, string $message): void
    {
        try {
            $mint(new Token(secret: Gateway::SECRET));
            self::fail('no exception');
        } catch (InvalidArgumentException $e) {
            self::assertInstanceOf(FanoutException::class, $e);
            self::assertStringContainsString($message, $e->getMessage());
        }
    }

    public static function invalidMints(): iterable
    {
        yield 'empty user' => [fn (Token $t) => $t->mint(''), 'user id is empty'];
        yield 'user with a space' => [fn (Token $t) => $t->mint('a b'), 'invalid user id "a b"'];
        yield 'user too long' => [fn (Token $t) => $t->mint(str_repeat('u', 124)), '1-123 bytes'];
        yield 'ttl 0' => [fn (Token $t) => $t->mint('u', ttl: 0), 'ttl must be a positive number of seconds, got 0'];
        yield 'negative ttl' => [fn (Token $t) => $t->mint('u', ttl: -5), 'got -5'];
        yield 'empty pattern' => [fn (Token $t) => $t->mint('u', channels: ['']), 'every `channels` entry'];
        yield 'non-string pattern' => [fn (Token $t) => $t->mint('u', publish: [7]), 'every `publish` entry'];
        yield 'unencodable info' => [fn (Token $t) => $t->mint('u', info: "\xff"), 'cannot be encoded as JSON'];
        yield 'empty jti' => [fn (Token $t) => $t->mint('u', jti: ''), 'jti must be 1 to 256 bytes'];
        yield 'channel token for a pattern' => [fn (Token $t) => $t->forChannel('u', 'room:*'), "contains '*'"];
        yield 'channel token with ttl 0' => [fn (Token $t) => $t->forChannel('u', 'room:a', ttl: 0), 'got 0'];
    }

    public function testRefusesKeysThatDoNotFitTheAlgorithm(): void
    {
        $rsa = file_get_contents(self::FIXTURES . '/rsa_private.pem');
        $cases = [
            'neither' => [fn () => new Token(), 'exactly one of'],
            'both' => [fn () => new Token(secret: 's', privateKey: $rsa), 'exactly one of'],
            'empty secret' => [fn () => new Token(secret: ''), 'secret is empty'],
            'RS with a secret' => [fn () => new Token(secret: 's', algorithm: 'RS256'), 'needs a private key'],
            'ES with RSA' => [fn () => new Token(privateKey: $rsa, algorithm: 'ES256'), 'does not fit an RSA key'],
            'not a key' => [fn () => new Token(privateKey: 'not a pem'), 'not a PEM private key'],
            'public key' => [fn () => new Token(privateKey: file_get_contents(self::FIXTURES . '/rsa_public.pem')), 'not a PEM private key'],
        ];
        foreach ($cases as $name => [$make, $message]) {
            try {
                $make();
                self::fail("$name: no exception");
            } catch (InvalidArgumentException $e) {
                self::assertStringContainsString($message, $e->getMessage(), $name);
            }
        }
    }

    private function assertRefused(Gateway $gateway, string $jwt, ?string $message): void
    {
        try {
            $gateway->connect($jwt);
            self::fail('the gateway accepted the token');
        } catch (HandshakeRefused $e) {
            self::assertSame(401, $e->status);
            $error = json_decode($e->body, true)['error'];
            self::assertSame('unauthorized', $error['code']);
            if ($message !== null) {
                self::assertSame($message, $error['message']);
            }
        }
    }

    /** @return array{string, string} paths of a new private and public key on `$curve`, made with the openssl CLI. */
    private static function ecKeyPair(string $curve): array
    {
        $dir = Process::tempDir('fanout-php-ec');
        foreach ([
            ['openssl', 'ecparam', '-name', $curve, '-genkey', '-noout', '-out', "$dir/private.pem"],
            ['openssl', 'ec', '-in', "$dir/private.pem", '-pubout', '-out', "$dir/public.pem"],
        ] as $command) {
            $process = proc_open($command, [1 => ['file', '/dev/null', 'w'], 2 => ['file', '/dev/null', 'w']], $pipes);
            self::assertSame(0, proc_close($process), implode(' ', $command));
        }
        return ["$dir/private.pem", "$dir/public.pem"];
    }

    /** `r || s` back to DER, the inverse of derToRaw, to let OpenSSL verify. */
    private static function rawToDer(string $raw): string
    {
        $integer = static function (string $bytes): string {
            $bytes = ltrim($bytes, "\x00");
            if ($bytes === '' || ord($bytes[0]) & 0x80) {
                $bytes = "\x00" . $bytes;
            }
            return "\x02" . chr(strlen($bytes)) . $bytes;
        };
        $body = $integer(substr($raw, 0, 32)) . $integer(substr($raw, 32));
        return "\x30" . chr(strlen($body)) . $body;
    }
}
