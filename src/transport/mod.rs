//! Transports: how protocol frames get to and from clients.
//!
//! Each transport turns the session's transport-neutral frames into its own wire format and
//! hands the client's messages to the session. A new transport is a new submodule here plus
//! a route in `server`; nothing below the session changes.
//!
//! - [`ws`]: WebSocket (`GET /ws`).
//! - [`sse`]: Server-Sent Events (`GET /sse`, `POST /sse/frames`).
//! - [`admission`]: the checks every transport makes before a session starts.
//! - [`connection`]: a connection's life, the same for every transport: opened, its
//!   session's reader in a task of its own, its writing side driven, closed, counted, logged.
//! - [`driver`]: the writing side every transport shares (batches, heartbeats, liveness,
//!   token expiry, the close), over a transport's [`driver::Wire`].

pub mod admission;
pub mod connection;
pub mod driver;
pub mod sse;
pub mod ws;
