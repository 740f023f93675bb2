<?php

declare(strict_types=1);

namespace Fanout\Tests\Support;

/** Nothing arrived on a socket before a deadline. */
final class ReadTimeout extends \RuntimeException
{
}
