//! WebSocket framing of what the server sends: the header in front of a protocol frame's
//! JSON, and the control frames (ping, close) the transport produces itself.
//!
//! A protocol frame's JSON is shared by every connection it goes to; only the few header
//! bytes are written per connection, next to it in the same vectored write, so fan-out never
//! copies or re-encodes a message per subscriber.

use bytes::Bytes;
use fastwebsockets::{Frame, OpCode, Payload};

/// Longest header of an unmasked server frame: 2 bytes, 8 more for a 64-bit length.
pub const MAX_HEADER: usize = 10;

/// The header of an unmasked, final text frame of `len` payload bytes, written into `out`.
pub fn text_header(len: usize, out: &mut Vec<u8>) {
    let mut head = [0u8; MAX_HEADER];
    let n = text_header_into(len, &mut head);
    out.extend_from_slice(&head[..n]);
}

/// [`text_header`] into a buffer of its own; returns the header's length.
pub fn text_header_into(len: usize, head: &mut [u8; MAX_HEADER]) -> usize {
    head[0] = 0x80 | OpCode::Text as u8;
    if len < 126 {
        head[1] = len as u8;
        2
    } else if len <= u16::MAX as usize {
        head[1] = 126;
        head[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        head[1] = 127;
        head[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    }
}

/// A close frame with a code and a short reason (truncated to fit the 125-byte control limit).
pub fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    encode_frame(Frame::close(code, &reason.as_bytes()[..end]))
}

/// The server's heartbeat ping.
pub fn ping_frame() -> Bytes {
    encode_frame(Frame::new(true, OpCode::Ping, None, Payload::Borrowed(b"")))
}

/// Encodes any frame (header and payload) into one buffer.
pub fn encode_frame(mut frame: Frame<'_>) -> Bytes {
    let mut head = [0u8; 14];
    let head_len = frame.fmt_head(&mut head);
    let mut out = Vec::with_capacity(head_len + frame.payload.len());
    out.extend_from_slice(&head[..head_len]);
    out.extend_from_slice(&frame.payload);
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_headers_match_the_library_encoding_at_every_length_class() {
        for len in [0usize, 1, 125, 126, 127, 65_535, 65_536, 70_000] {
            let payload = vec![b'x'; len];
            let mut ours = Vec::new();
            text_header(len, &mut ours);
            ours.extend_from_slice(&payload);
            let theirs = encode_frame(Frame::text(Payload::Borrowed(&payload)));
            assert_eq!(ours, theirs.to_vec(), "length {len}");
        }
    }

    #[test]
    fn close_reasons_fit_a_control_frame() {
        let long = "é".repeat(200);
        let frame = close_frame(crate::protocol::CloseCode::Unauthorized.code(), &long);
        assert!(frame.len() <= 2 + 125);
        assert_eq!(u16::from_be_bytes([frame[2], frame[3]]), 4001);
    }
}
