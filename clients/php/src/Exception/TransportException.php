<?php

declare(strict_types=1);

namespace Fanout\Exception;

/**
 * The HTTP API could not be reached or gave no usable answer: connection refused, DNS,
 * TLS, timeout, or a response that is not the gateway's JSON. Whether the request took
 * effect is unknown; retrying a publish may deliver it twice.
 */
final class TransportException extends \RuntimeException implements FanoutException
{
}
