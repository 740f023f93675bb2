<?php

declare(strict_types=1);

namespace Fanout\Exception;

/**
 * Marker implemented by every exception this library throws, so that callers can catch
 * all of them with one `catch (FanoutException $e)` whatever their SPL base class.
 */
interface FanoutException extends \Throwable
{
}
