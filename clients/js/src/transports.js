/**
 * The two carriers of protocol v1 frames: a WebSocket (`/ws`), and Server-Sent Events
 * (`GET /sse`) plus HTTP POSTs (`/sse/frames`) where WebSockets cannot pass. Both hand
 * parsed frames to the same handlers, so the protocol layer (the client) is identical on
 * either; only how a connection opens and how frames leave differ.
 *
 * A transport object is one connection attempt. It reports its end once through
 * `_onClose(code, reason, status)` with a WebSocket close code (an SSE stream's `close`
 * event carries the same codes; HTTP refusals are mapped to the close code that means the
 * same), and reports nothing after `close()` was called on it: the caller that closes it
 * already knows.
 *
 * @module
 */

/**
 * @typedef {object} TransportHandlers
 * @property {(frame: Record<string, any>) => void} _onFrame a server frame (parsed JSON object)
 * @property {() => void} _onActivity any sign of life: a frame, or an SSE comment (heartbeat)
 * @property {(code: number, reason: string, status?: number) => void} _onClose the end, at most once
 */

import { errorText } from "./errors.js";

/** Reads a text or binary WebSocket payload as text. */
function payloadText(data) {
  if (typeof data === "string") return data;
  if (data instanceof ArrayBuffer || ArrayBuffer.isView(data)) return new TextDecoder().decode(data);
  return undefined; // a Blob: binary messages are not part of protocol v1
}

/**
 * Parses a JSON text into a frame object; anything else (not JSON, not an object) is not
 * a frame of protocol v1 and is ignored, as the protocol asks of clients.
 * @returns {Record<string, any> | undefined}
 */
function parseFrame(text) {
  try {
    const frame = JSON.parse(text);
    return frame !== null && typeof frame === "object" && !Array.isArray(frame) ? frame : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Protocol v1 over a WebSocket. The token goes in an `auth` frame rather than the URL: it
 * stays out of proxy logs, and a refused token is then a visible close 4001 instead of a
 * refused upgrade, which browsers only report as 1006.
 */
export class WebSocketTransport {
  /**
   * @param {{ url: string, token: string, WebSocket: any, handlers: TransportHandlers }} options
   */
  constructor({ url, token, WebSocket: WebSocketImpl, handlers }) {
    this._kind = "websocket";
    this._handlers = handlers;
    this._closed = false;
    this._opened = false;
    this._socket = new WebSocketImpl(url);
    this._socket.binaryType = "arraybuffer";
    this._socket.onopen = () => {
      this._opened = true;
      this._send({ type: "auth", token });
    };
    this._socket.onmessage = (event) => {
      if (this._closed) return;
      handlers._onActivity();
      const text = payloadText(event.data);
      const frame = text === undefined ? undefined : parseFrame(text);
      if (frame) handlers._onFrame(frame);
    };
    // An `error` event should be followed by `close`, which carries the code. Some
    // implementations (Node 20's undici) never fire `close` after a refused handshake, so a
    // failure before `open` ends the attempt at once, and a later one after a grace period.
    this._socket.onerror = () => {
      if (this._closed) return;
      if (!this._opened) {
        this._fail("WebSocket refused or failed");
        return;
      }
      if (this._errorTimer === undefined) this._errorTimer = setTimeout(() => this._fail("WebSocket error without a close"), 2000);
    };
    this._socket.onclose = (event) => {
      if (this._closed) return;
      this._closed = true;
      clearTimeout(this._errorTimer);
      handlers._onClose(event.code || 1006, event.reason || "connection lost");
    };
  }

  /** Ends the attempt as a dropped connection (1006) and lets go of the socket. */
  _fail(reason) {
    if (this._closed) return;
    this._closed = true;
    clearTimeout(this._errorTimer);
    try {
      this._socket.close();
    } catch {
      // Not open yet: nothing to close politely.
    }
    this._handlers._onClose(1006, reason);
  }

  /** Sends a frame if the socket is open; frames sent while it is not are dropped. */
  _send(frame) {
    if (!this._closed && this._socket.readyState === 1) this._socket.send(JSON.stringify(frame));
  }

  /** The SSE transport needs the new token for its POSTs; a WebSocket does not. */
  _setToken() {}

  /** Closes the socket; no `_onClose` follows. */
  _close(code = 1000, reason = "") {
    if (this._closed) return;
    this._closed = true;
    clearTimeout(this._errorTimer);
    try {
      this._socket.close(code, reason);
    } catch {
      this._socket.close();
    }
  }
}

/** HTTP refusals with a close code of their own (besides 401). */
const STATUS_CLOSE_CODES = {
  429: 4010, // this user has too many connections: back off long
  503: 1013, // draining or at a limit: try again (elsewhere)
  403: 1008, // origin or user not allowed (policy violation): retried after a long backoff
};

/**
 * The close code that means what an HTTP refusal of `GET /sse` or `POST /sse/frames` means,
 * so that the client handles both transports alike.
 */
function closeCodeForStatus(status, message) {
  // A revoked token (as after an `auth` frame: 4003), or refused: get a new one.
  if (status === 401) return message === "token revoked" ? 4003 : 4001;
  // Any other status (no SSE here: 404, a proxy problem): like a dropped connection (1006).
  return STATUS_CLOSE_CODES[status] || 1006;
}

/** Reads `{"error":{"code","message"}}` from a refusal, or the status text. */
async function refusalMessage(response) {
  const text = await response.text().catch(() => "");
  const parsed = parseFrame(text);
  const message = parsed && parsed.error ? parsed.error.message : undefined;
  return message ?? `HTTP ${response.status}${text ? `: ${text.slice(0, 200)}` : ""}`;
}

/** Lets go of a response's body, unread. */
function discard(response) {
  return response.body && response.body.cancel().catch(() => {});
}

/** Frames per POST (the gateway takes at most 32) and characters per POST body. */
const MAX_FRAMES_PER_POST = 32;
const MAX_POST_CHARS = 60000;

/**
 * Protocol v1 over Server-Sent Events: a `fetch()` stream reader on `GET /sse` (not
 * `EventSource`, which hides the `: ping` comments that tell a quiet stream from a dead
 * one, and which cannot be told to stop reconnecting by itself), and client frames POSTed
 * to `/sse/frames?conn_id=...` in order, one request at a time, batched as NDJSON (to any
 * node: behind a balancer without stickiness, the node that gets a POST relays it).
 * The token never travels in a URL, where proxies and access logs would record it: it is
 * exchanged for a single-use ticket (`POST /sse/ticket`, token in `Authorization`) that
 * opens the stream (`?ticket=`), and frame POSTs carry it in `Authorization`. Cross-origin,
 * the header costs a CORS preflight, which the gateway answers and browsers cache.
 */
export class SseTransport {
  /**
   * @param {{ url: string, token: string, fetch: typeof fetch, handlers: TransportHandlers }} options
   *   `url`: the stream URL (`http(s)://host/sse`); frames go to `<url>/frames`.
   */
  constructor({ url, token, fetch: fetchImpl, handlers }) {
    this._kind = "sse";
    this._handlers = handlers;
    this._fetch = fetchImpl;
    this._streamUrl = url;
    this._framesUrl = `${url.replace(/\/+$/, "")}/frames`;
    this._ticketUrl = `${url.replace(/\/+$/, "")}/ticket`;
    this._token = token;
    this._closed = false;
    this._connId = undefined;
    /** JSON texts waiting to be POSTed, in order. */
    this._outbox = [];
    this._posting = false;
    /** The `close` event of the stream, if the server sent one before ending it. */
    this._serverClose = undefined;
    this._abort = new AbortController();
    this._readStream();
  }

  /** Queues a frame; frames leave in order, batched, once the stream's ack named the session. */
  _send(frame) {
    if (this._closed) return;
    this._outbox.push(JSON.stringify(frame));
    this._flush();
  }

  /** Later POSTs authenticate with this token (after a successful `refresh`). */
  _setToken(token) {
    this._token = token;
  }

  /** Ends the stream and any POST; no `_onClose` follows. */
  _close() {
    if (this._closed) return;
    this._closed = true;
    this._abort.abort();
  }

  _finish(code, reason, status) {
    if (this._closed) return;
    this._closed = true;
    this._abort.abort();
    this._handlers._onClose(code, reason, status);
  }

  async _readStream() {
    const url = new URL(this._streamUrl);
    let response;
    try {
      // The token buys a single-use ticket; only the ticket goes in the stream's URL.
      const ticket = await this._fetch(this._ticketUrl, {
        method: "POST",
        headers: { authorization: `Bearer ${this._token}` },
        signal: this._abort.signal,
      });
      // A refused ticket is answered below as a refused stream would be (401, 403, 429...).
      response = ticket;
      if (ticket.ok) {
        url.searchParams.set("ticket", (await ticket.json()).ticket);
        response = await this._fetch(url.href, {
          headers: { accept: "text/event-stream" },
          cache: "no-store",
          signal: this._abort.signal,
        });
      }
    } catch (error) {
      return this._finish(1006, `SSE request failed: ${errorText(error)}`);
    }
    if (!response.ok) {
      const message = await refusalMessage(response);
      return this._finish(closeCodeForStatus(response.status, message), message, response.status);
    }
    if (!String(response.headers.get("content-type")).startsWith("text/event-stream") || !response.body) {
      discard(response);
      return this._finish(1006, "SSE: not an event stream", response.status);
    }
    const reader = response.body.getReader();
    const parser = new SseParser((event) => this._onEvent(event));
    const decoder = new TextDecoder();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done || this._closed) break;
        this._handlers._onActivity();
        parser.push(decoder.decode(value, { stream: true }));
      }
    } catch (error) {
      if (!this._closed) return this._finish(1006, `SSE stream failed: ${errorText(error)}`);
    }
    const end = this._serverClose || { code: 1006, reason: "SSE stream ended" };
    this._finish(end.code, end.reason);
  }

  _onEvent({ data }) {
    if (this._closed) return;
    const frame = parseFrame(data);
    if (!frame) return;
    if (frame.type === "close") {
      // The server's last word: the stream ends right after it.
      this._serverClose = { code: Number(frame.code) || 1006, reason: String(frame.reason ?? "") };
      return;
    }
    if (frame.type === "connection_ack" && typeof frame.conn_id === "string") {
      this._connId = frame.conn_id;
      this._handlers._onFrame(frame);
      this._flush();
      return;
    }
    this._handlers._onFrame(frame);
  }

  async _flush() {
    if (this._posting || this._closed || this._connId === undefined) return;
    this._posting = true;
    try {
      while (this._outbox.length > 0 && !this._closed) {
        let count = 0;
        let chars = 0;
        while (count < this._outbox.length && count < MAX_FRAMES_PER_POST) {
          chars += this._outbox[count].length + 1;
          if (count > 0 && chars > MAX_POST_CHARS) break;
          count += 1;
        }
        const body = this._outbox.splice(0, count).join("\n");
        // Any node takes the POST: one without the session relays it to the node that
        // holds the stream (the connection id names it).
        const url = new URL(this._framesUrl);
        url.searchParams.set("conn_id", this._connId);
        let response;
        try {
          response = await this._fetch(url.href, {
            method: "POST",
            headers: { "content-type": "text/plain", authorization: `Bearer ${this._token}` },
            body,
            signal: this._abort.signal,
          });
        } catch (error) {
          return this._finish(1006, `SSE frame POST failed: ${errorText(error)}`);
        }
        if (response.status === 429) {
          // Too many frames wait for the session already: send these again shortly, first.
          await discard(response);
          this._outbox.unshift(...body.split("\n"));
          await new Promise((resolve) => setTimeout(resolve, 1000));
          continue;
        }
        if (!response.ok) {
          // 404: the session is gone (its stream ended, or its node); 401: token refused; 413: a frame
          // above the size limit (a WebSocket would close with 1009). Either way this
          // connection cannot carry these frames: end it and let the client reconnect.
          const message = await refusalMessage(response);
          const code = response.status === 413 ? 1009 : closeCodeForStatus(response.status, message);
          return this._finish(code, message, response.status);
        }
        // 202, or 202 with `relayed: true` from a node that does not hold the stream: the
        // frames went on to the node that does, which drops them if this session has ended
        // meanwhile; its stream then ends too, and the client reconnects (protocol.md).
        await discard(response);
      }
    } finally {
      this._posting = false;
    }
  }
}

/**
 * An incremental parser of the `text/event-stream` format (WHATWG HTML, "Server-sent
 * events"): lines end with CRLF, LF or CR; `event`, `data`, `id` and `retry` fields; lines
 * starting with `:` are comments; a blank line dispatches the event.
 */
export class SseParser {
  /** @param {(event: { event: string, data: string, id?: string }) => void} onEvent */
  constructor(onEvent) {
    this._onEvent = onEvent;
    this._buffer = "";
    this._event = "";
    this._data = [];
    this._id = undefined;
    /** A CR ended the last chunk: a LF starting the next one belongs to it. */
    this._pendingCr = false;
  }

  /** Feeds decoded text; complete lines are processed, a partial one is kept. */
  push(text) {
    let input = text;
    if (this._pendingCr && input.startsWith("\n")) input = input.slice(1);
    this._pendingCr = false;
    this._buffer += input;
    let start = 0;
    for (let i = 0; i < this._buffer.length; i++) {
      const c = this._buffer.charCodeAt(i);
      if (c !== 10 && c !== 13) continue;
      this._line(this._buffer.slice(start, i));
      if (c === 13) {
        if (i + 1 < this._buffer.length) {
          if (this._buffer.charCodeAt(i + 1) === 10) i += 1;
        } else {
          this._pendingCr = true;
        }
      }
      start = i + 1;
    }
    this._buffer = this._buffer.slice(start);
  }

  _line(line) {
    if (line === "") {
      if (this._data.length > 0) {
        this._onEvent({ event: this._event || "message", data: this._data.join("\n"), id: this._id });
      }
      this._event = "";
      this._data = [];
      return;
    }
    if (line.startsWith(":")) return; // a comment: the heartbeat; activity was counted already
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this._event = value;
    else if (field === "data") this._data.push(value);
    else if (field === "id" && !value.includes("\0")) this._id = value;
    // `retry` is for EventSource's own reconnects; this client has its own backoff.
  }
}
