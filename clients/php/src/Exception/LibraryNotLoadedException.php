<?php

declare(strict_types=1);

namespace Fanout\Exception;

/**
 * Redis answered `ERR Function not found` to `FCALL fanout_publish`: the `fanout` Redis
 * Function library is not loaded on that Redis. fanout nodes load it when they start and
 * whenever their connection to Redis (re)connects, so this means that no node has run
 * against this Redis since it (re)started without persistence, or that this code talks to
 * another Redis than the nodes. Nothing was published.
 */
final class LibraryNotLoadedException extends \RuntimeException implements FanoutException
{
}
