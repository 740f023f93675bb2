<?php

declare(strict_types=1);

namespace Fanout;

use Fanout\Exception\InvalidArgumentException;
use Fanout\Internal\EcdsaSignature;

/**
 * Mints connection tokens (JWTs) that the gateway accepts (docs/protocol.md "Tokens").
 *
 * ```php
 * $tokens = new Token(secret: FANOUT_JWT_SECRET);                      // HS256
 * $tokens = new Token(privateKey: file_get_contents('/etc/fanout/jwt.pem')); // RS256 or ES256, from the key
 * $jwt = $tokens->mint('42', channels: ['dag:*'], publish: ['room:chat'], ttl: 600, info: ['name' => 'Alice']);
 * $grant = $tokens->forChannel('42', 'room:doc-7', ttl: 600);  // a channel token, sent with one subscribe
 * ```
 *
 * The gateway pins one algorithm: a secret means HS256 (or HS384/HS512 with
 * `jwt_algorithm`), an RSA key RS256 (RS384/RS512), an EC key ES256 with a P-256 key
 * (ES384 with P-384). The algorithm here must be the one the gateway is pinned to;
 * by default it is derived from the key exactly as the gateway derives it.
 *
 * Claims: `sub` (the user id), `iat`, `exp` (now + ttl), and when given `channels`,
 * `publish`, `info`, `jti`, plus `aud` and `iss` when the gateway is configured with
 * `jwt_audience` / `jwt_issuer` (pass the same values to the constructor). `iat` lets a
 * backend revoke a user's tokens issued before a time, `jti` one token
 * (`SessionControlInterface::revokeUser`, `revokeToken`).
 */
final class Token
{
    private const HMAC = ['HS256' => 'sha256', 'HS384' => 'sha384', 'HS512' => 'sha512'];
    private const RSA = ['RS256' => OPENSSL_ALGO_SHA256, 'RS384' => OPENSSL_ALGO_SHA384, 'RS512' => OPENSSL_ALGO_SHA512];
    /** Algorithm => [digest, curve name as OpenSSL reports it, bytes of each of r and s]. */
    private const ECDSA = [
        'ES256' => [OPENSSL_ALGO_SHA256, 'prime256v1', 32],
        'ES384' => [OPENSSL_ALGO_SHA384, 'secp384r1', 48],
    ];

    private readonly string $algorithm;
    private readonly ?string $secret;
    private readonly ?\OpenSSLAsymmetricKey $privateKey;

    /**
     * @param string|null $secret the gateway's `jwt_secret` (HS*). Exactly one of `secret` and `privateKey`.
     * @param string|\OpenSSLAsymmetricKey|null $privateKey PEM text (or `file:///path/key.pem`) of the
     *        private key whose public half is the gateway's `jwt_public_key` (RS*, ES*).
     * @param string|null $algorithm the gateway's `jwt_algorithm` when it is not the default for the key.
     * @param string|null $audience the `aud` claim: one of the gateway's `jwt_audience` values, if it has any.
     * @param string|null $issuer the `iss` claim: one of the gateway's `jwt_issuer` values, if it has any.
     * @param string|null $passphrase the passphrase of an encrypted PEM private key.
     *
     * @throws InvalidArgumentException for a missing or unusable key, or an algorithm that does not fit it.
     */
    public function __construct(
        ?string $secret = null,
        string|\OpenSSLAsymmetricKey|null $privateKey = null,
        ?string $algorithm = null,
        private readonly ?string $audience = null,
        private readonly ?string $issuer = null,
        ?string $passphrase = null,
    ) {
        if (($secret === null) === ($privateKey === null)) {
            throw new InvalidArgumentException('give exactly one of `secret` (HS256) and `privateKey` (RS256, ES256)');
        }
        if ($audience === '' || $issuer === '') {
            throw new InvalidArgumentException('`audience` and `issuer` must be null (no claim) or non-empty');
        }
        if ($secret !== null) {
            if ($secret === '') {
                throw new InvalidArgumentException('the token secret is empty');
            }
            $algorithm ??= 'HS256';
            if (!isset(self::HMAC[$algorithm])) {
                throw new InvalidArgumentException("algorithm $algorithm needs a private key; a secret works with HS256, HS384, HS512");
            }
            $this->secret = $secret;
            $this->privateKey = null;
            $this->algorithm = $algorithm;
            return;
        }
        if (!extension_loaded('openssl')) {
            throw new InvalidArgumentException('RS256/ES256 tokens need the PHP openssl extension (php-openssl)');
        }
        $key = $privateKey instanceof \OpenSSLAsymmetricKey ? $privateKey : openssl_pkey_get_private($privateKey, $passphrase);
        if ($key === false) {
            throw new InvalidArgumentException('the private key is not a PEM private key that OpenSSL can read (' . self::opensslErrors() . ')');
        }
        $details = openssl_pkey_get_details($key);
        if ($details === false) {
            throw new InvalidArgumentException('cannot read the private key\'s details (' . self::opensslErrors() . ')');
        }
        if ($details['type'] === OPENSSL_KEYTYPE_RSA) {
            $algorithm ??= 'RS256';
            if (!isset(self::RSA[$algorithm])) {
                throw new InvalidArgumentException("algorithm $algorithm does not fit an RSA key; use RS256, RS384 or RS512");
            }
        } elseif ($details['type'] === OPENSSL_KEYTYPE_EC) {
            $curve = $details['ec']['curve_name'] ?? '';
            $algorithm ??= match ($curve) {
                'secp384r1' => 'ES384',
                default => 'ES256',
            };
            if (!isset(self::ECDSA[$algorithm]) || self::ECDSA[$algorithm][1] !== $curve) {
                throw new InvalidArgumentException("algorithm $algorithm does not fit an EC key on curve $curve; use ES256 with P-256 (prime256v1) or ES384 with P-384 (secp384r1)");
            }
        } else {
            throw new InvalidArgumentException('the private key must be an RSA or EC key');
        }
        $this->secret = null;
        $this->privateKey = $key;
        $this->algorithm = $algorithm;
    }

    /** The `alg` written in the tokens' header, e.g. `HS256`. */
    public function algorithm(): string
    {
        return $this->algorithm;
    }

    /**
     * A signed token for one user.
     *
     * @param string|int $userId the `sub`: 1-123 bytes of letters, digits and `_ - . : @`
     *        (so that `user:<id>` is a channel). The connection is subscribed to `user:<id>`
     *        and `broadcast` without asking.
     * @param list<string> $channels what the user may subscribe to besides those: exact names or
     *        prefixes ending in `*` (`dag:7`, `room:*`). Grant only what the user may read.
     * @param list<string> $publish channels the user may publish to (same patterns).
     * @param int $ttl lifetime in seconds; the connection is closed when it runs out unless the
     *        client sends a `refresh` frame with a new token.
     * @param mixed $info JSON-encodable data shown to others in presence (e.g. `['name' => 'Alice']`);
     *        null: no `info` claim. Copied into every presence event: keep it small.
     * @param string|null $jti a unique id for this token (1-256 bytes), to revoke it alone
     *        with `revokeToken($jti, $exp)`; null: no `jti` claim.
     *
     * @throws InvalidArgumentException for an invalid user id, a TTL of 0 or less, a pattern that
     *         is not a non-empty string, `info` that cannot be encoded as JSON, or a bad `jti`.
     */
    public function mint(
        string|int $userId,
        array $channels = [],
        array $publish = [],
        int $ttl = 3600,
        mixed $info = null,
        ?string $jti = null,
    ): string {
        $claims = $this->base($userId, $ttl, $jti);
        if ($channels !== []) {
            $claims['channels'] = self::patterns('channels', $channels);
        }
        if ($publish !== []) {
            $claims['publish'] = self::patterns('publish', $publish);
        }
        if ($info !== null) {
            $claims['info'] = $info;
        }
        return $this->signed($claims);
    }

    /**
     * A channel token: grants the user one channel their connection token does not, sent with
     * the `subscribe` of that channel (`{"type":"subscribe","channel":...,"token":...}`; the JS
     * client's `getChannelToken`). When it expires the subscription ends (the connection
     * stays) unless the client subscribed again with a newer one. docs/protocol.md, "Channel
     * tokens".
     *
     * @param string $channel the one channel it grants (an exact name, no pattern).
     * @param mixed $info shown in that channel's presence instead of the connection token's.
     *
     * @throws InvalidArgumentException for an invalid user id or channel, a TTL of 0 or less,
     *         `info` that cannot be encoded as JSON, or a bad `jti`.
     */
    public function forChannel(
        string|int $userId,
        string $channel,
        int $ttl = 3600,
        mixed $info = null,
        ?string $jti = null,
    ): string {
        $claims = $this->base($userId, $ttl, $jti);
        $claims['channel'] = Channel::assertValid($channel);
        if ($info !== null) {
            $claims['info'] = $info;
        }
        return $this->signed($claims);
    }

    /** @return array<string, mixed> the claims every token has. */
    private function base(string|int $userId, int $ttl, ?string $jti): array
    {
        $sub = Channel::assertValidUserId($userId);
        if ($ttl <= 0) {
            throw new InvalidArgumentException("ttl must be a positive number of seconds, got $ttl");
        }
        $now = time();
        $claims = ['sub' => $sub, 'iat' => $now, 'exp' => $now + $ttl];
        if ($jti !== null) {
            if ($jti === '' || strlen($jti) > 256) {
                throw new InvalidArgumentException('jti must be 1 to 256 bytes');
            }
            $claims['jti'] = $jti;
        }
        return $claims;
    }

    /** @param array<string, mixed> $claims */
    private function signed(array $claims): string
    {
        if ($this->audience !== null) {
            $claims['aud'] = $this->audience;
        }
        if ($this->issuer !== null) {
            $claims['iss'] = $this->issuer;
        }
        $signingInput = self::base64url(self::json(['alg' => $this->algorithm, 'typ' => 'JWT'], 'header'))
            . '.' . self::base64url(self::json($claims, 'claims'));
        return $signingInput . '.' . self::base64url($this->sign($signingInput));
    }

    private function sign(string $input): string
    {
        if ($this->secret !== null) {
            return hash_hmac(self::HMAC[$this->algorithm], $input, $this->secret, true);
        }
        $digest = self::RSA[$this->algorithm] ?? self::ECDSA[$this->algorithm][0];
        if (!openssl_sign($input, $signature, $this->privateKey, $digest)) {
            throw new \RuntimeException('openssl_sign failed: ' . self::opensslErrors());
        }
        if (isset(self::ECDSA[$this->algorithm])) {
            // OpenSSL returns an ASN.1 DER ECDSA-Sig-Value; JWS (RFC 7518 3.4) wants r || s.
            return EcdsaSignature::derToRaw($signature, self::ECDSA[$this->algorithm][2]);
        }
        return $signature;
    }

    /** @return list<string> */
    private static function patterns(string $claim, array $patterns): array
    {
        $out = [];
        foreach ($patterns as $pattern) {
            if (!is_string($pattern) || trim($pattern) === '') {
                throw new InvalidArgumentException("every `$claim` entry must be a non-empty string (a channel, or a prefix ending in `*`)");
            }
            $out[] = trim($pattern);
        }
        return $out;
    }

    private static function json(array $value, string $what): string
    {
        try {
            return json_encode($value, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_THROW_ON_ERROR);
        } catch (\JsonException $e) {
            throw new InvalidArgumentException("token $what cannot be encoded as JSON: " . $e->getMessage(), 0, $e);
        }
    }

    private static function base64url(string $bytes): string
    {
        return rtrim(strtr(base64_encode($bytes), '+/', '-_'), '=');
    }

    private static function opensslErrors(): string
    {
        $errors = [];
        while (($error = openssl_error_string()) !== false) {
            $errors[] = $error;
        }
        return $errors === [] ? 'no details' : implode('; ', $errors);
    }
}
