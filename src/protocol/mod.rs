//! Protocol v1: the JSON frames on the wire, error codes and close codes.
//!
//! `docs/protocol.md` is the specification; this module is its implementation, and knows
//! nothing of sockets or brokers:
//! - [`request`]: client frames parsed into a typed [`Request`];
//! - [`frame`]: the transport-neutral [`Frame`] every server frame is encoded into, once;
//! - [`reply`]: replies and notices ([`ServerFrame`]);
//! - [`message`]: the channel message frame built around a published payload;
//! - [`payload`]: what the gateway reads from a payload, and how it embeds it;
//! - [`codes`]: error codes, close codes and [`ClientError`].

pub mod codes;
pub mod frame;
pub mod message;
pub mod payload;
pub mod reply;
pub mod request;

pub use codes::{ClientError, CloseCode, ErrorCode};
pub use frame::{Frame, HistoryMark};
pub use message::message_frame_with;
pub use payload::{PayloadInfo, is_json};
pub use reply::{HistoryEntry, ServerFrame, expires_in};
pub use request::{FrameError, MAX_OFFSET, Request, RequestId, Since, parse_client_frame};
