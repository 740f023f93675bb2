<?php

declare(strict_types=1);

namespace Fanout\Internal;

/**
 * ECDSA signature encodings: OpenSSL signs in ASN.1 DER, JWS (RFC 7518 section 3.4) wants
 * the two integers side by side at a fixed width.
 *
 * @internal not part of the library's API; may change in any version.
 */
final class EcdsaSignature
{
    private const SEQUENCE = 0x30;
    private const INTEGER = 0x02;

    /**
     * Converts a DER `SEQUENCE { INTEGER r, INTEGER s }` into the fixed-width `r || s` of JWS:
     * each integer without the sign byte DER adds when its top bit is set, left-padded with
     * zeros to the curve's size (DER drops leading zero bytes, so r or s may be shorter).
     *
     * @param int $size bytes of each integer: 32 for P-256 (ES256), 48 for P-384 (ES384).
     * @throws \UnexpectedValueException when `$der` is not such a structure.
     */
    public static function derToRaw(string $der, int $size): string
    {
        $pos = 0;
        $sequence = self::read($der, $pos, self::SEQUENCE);
        if ($pos !== strlen($der)) {
            throw new \UnexpectedValueException('malformed ECDSA signature: bytes after the sequence');
        }
        $pos = 0;
        $raw = '';
        foreach (['r', 's'] as $name) {
            $integer = ltrim(self::read($sequence, $pos, self::INTEGER), "\x00");
            if (strlen($integer) > $size) {
                throw new \UnexpectedValueException("malformed ECDSA signature: $name is longer than $size bytes");
            }
            $raw .= str_pad($integer, $size, "\x00", STR_PAD_LEFT);
        }
        if ($pos !== strlen($sequence)) {
            throw new \UnexpectedValueException('malformed ECDSA signature: bytes after s');
        }
        return $raw;
    }

    /** Reads one DER element with the given tag at `$pos`; returns its content and moves `$pos` past it. */
    private static function read(string $der, int &$pos, int $tag): string
    {
        if ($pos + 2 > strlen($der) || ord($der[$pos]) !== $tag) {
            throw new \UnexpectedValueException(sprintf('malformed ECDSA signature: expected ASN.1 tag 0x%02x', $tag));
        }
        $length = ord($der[$pos + 1]);
        $pos += 2;
        if ($length & 0x80) {
            // Long form: the low bits count the length bytes that follow (1 or 2 suffice here).
            $count = $length & 0x7f;
            if ($count < 1 || $count > 2 || $pos + $count > strlen($der)) {
                throw new \UnexpectedValueException('malformed ECDSA signature: bad length');
            }
            $length = 0;
            for ($i = 0; $i < $count; $i++) {
                $length = ($length << 8) | ord($der[$pos++]);
            }
        }
        if ($pos + $length > strlen($der)) {
            throw new \UnexpectedValueException('malformed ECDSA signature: truncated');
        }
        $content = substr($der, $pos, $length);
        $pos += $length;
        return $content;
    }
}
