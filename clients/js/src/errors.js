/**
 * Errors of the fanout client.
 *
 * Every promise of the client (`publish`, `send`, `setStatus`, `presence`, `history`, ...)
 * rejects with a {@link FanoutError}, and every `"error"` event carries one, so that
 * application code can switch on one `code` whatever went wrong: a reply of the gateway
 * (`error` frames and HTTP refusals use the protocol's error codes) or a condition the
 * client itself detected (`disconnected`, `timeout`, `closed`).
 *
 * @module
 */

/**
 * What a thrown value says, for the message of an error it caused: its `message`, or the
 * value itself.
 * @param {unknown} error
 */
export function errorText(error) {
  return (error && /** @type {any} */ (error).message) ?? error;
}

/**
 * Codes after which the same request may succeed when tried again later. The protocol
 * says so for `unavailable` (broker down) and `rate_limited`; `disconnected` and `timeout`
 * are the client's own (the outcome of the request is unknown, so a retry may repeat it).
 */
const RETRYABLE_CODES = new Set(["unavailable", "rate_limited", "disconnected", "timeout", "internal", "transport"]);

/**
 * An error with the protocol's error `code` (`bad_request`, `unauthorized`, `forbidden`,
 * `too_large`, `rate_limited`, `limit_exceeded`, `unavailable`, `unsupported`, `internal`) or one of the
 * client's own: `disconnected` (the connection ended before the reply), `timeout` (no reply
 * in time), `closed` (`client.close()` was called), `transport` (a transport failed).
 */
export class FanoutError extends Error {
  /**
   * @param {string} code the error code; switch on it.
   * @param {string} message human-readable detail (do not parse it).
   * @param {{ retryable?: boolean, closeCode?: number, status?: number, channel?: string, cause?: unknown }} [details]
   */
  constructor(code, message, details = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = "FanoutError";
    /** @type {string} */
    this.code = code;
    /** Whether the same request may succeed if tried again later. @type {boolean} */
    this.retryable = details.retryable ?? RETRYABLE_CODES.has(code);
    /** The WebSocket (or SSE `close` event) code that ended the connection, if any. @type {number | undefined} */
    this.closeCode = details.closeCode;
    /** The HTTP status of a refused request (SSE), if any. @type {number | undefined} */
    this.status = details.status;
    /** The channel the failed request was about, if any. @type {string | undefined} */
    this.channel = details.channel;
  }

  /**
   * Builds the error of an `error` frame.
   * @param {{ code?: string, message?: string }} frame
   * @param {string} [channel]
   */
  static fromFrame(frame, channel) {
    return new FanoutError(frame.code ?? "internal", frame.message ?? "(no message)", { channel });
  }
}
