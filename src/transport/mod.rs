//! Transports: how bytes get to and from clients. Only WebSocket today; the session and
//! everything behind it are transport-agnostic (they speak in frames pushed to an outbox).

pub mod ws;
