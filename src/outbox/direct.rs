//! Direct writes: the outbox's side of a transport's socket ([`WriteNow`]), and the writer's
//! claim on it ([`SocketClaim`]) that keeps direct writes out of its bytes.
//!
//! This is the second place data flows up the layers (the first is the broker delivering
//! into the hub through `broker::Deliver`): a producer's push, deep in the hub's fan-out,
//! writes to a socket the transport owns. It goes through this trait, which the transport
//! implements and hands down (`Outbox::attach_socket`), so the outbox never names a
//! transport.

use bytes::Bytes;

use super::{Outbox, Outgoing};

/// What [`WriteNow::write_now`] did with one item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// All of it is on the socket.
    All,
    /// Nothing was written (the socket is full, or failed: the writer finds out which).
    Nothing,
    /// The socket took the start; these are the remaining wire bytes, to be written next.
    Part(Bytes),
}

/// A transport's socket, as the outbox uses it for writes that never wait.
pub trait WriteNow: Send + Sync {
    /// Writes `item` in the transport's framing as far as the socket takes it without
    /// waiting. Called with the outbox locked, so never concurrently with another write.
    fn write_now(&self, item: &Outgoing) -> Written;
}

/// The writer's hold on the socket. While it lives, pushes queue instead of writing to the
/// socket themselves; dropping it hands the socket back.
///
/// A writer whose write failed must end the outbox ([`Outbox::end`]) before dropping its
/// claim: the socket may hold part of a frame, and an ending outbox writes nothing more.
#[must_use = "the socket is the writer's only while the claim lives"]
pub struct SocketClaim<'a>(pub(super) &'a Outbox);

impl Drop for SocketClaim<'_> {
    fn drop(&mut self) {
        self.0.lock().writer_busy = false;
    }
}
