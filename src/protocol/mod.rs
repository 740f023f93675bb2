//! Protocol v1: the JSON frames on the wire, error codes and close codes.
//!
//! `docs/protocol.md` is the specification; this module is its implementation, and knows
//! nothing of sockets or brokers:
//! - [`request`]: client frames parsed into a typed [`Request`];
//! - [`reply`]: server frames, encoded once into a transport-neutral [`Frame`];
//! - [`message`]: the channel message frame built around a published payload;
//! - [`codes`]: error codes, close codes and [`ClientError`].

pub mod codes;
pub mod message;
pub mod reply;
pub mod request;

pub use codes::{ClientError, CloseCode, ErrorCode};
pub use message::{PayloadInfo, is_json, message_frame, message_frame_with};
pub use reply::{Frame, HistoryEntry, HistoryMark, ServerFrame, expires_in};
pub use request::{FrameError, MAX_OFFSET, Request, RequestId, Since, parse_client_frame};
