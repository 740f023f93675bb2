//! fanout: a real-time WebSocket fan-out gateway.
//!
//! Browsers hold WebSocket (or SSE) connections to stateless gateway nodes; any backend
//! publishes to a channel (over Redis or HTTP) and every subscriber on every node receives
//! it. See `ARCHITECTURE.md` for the map and `docs/protocol.md` for the wire protocol.
//!
//! Modules are layered; each uses only those below it:
//!
//! ```text
//! cli -> server -> transport (ws, sse) | http -> session -> node -> hub -> broker
//!     -> protocol, outbox, channel, auth, limits, metrics, config, clock
//! ```
//!
//! (`tests/architecture.rs` checks it.)
//!
//! Embedding: build a [`config::Config`], then [`server::Server::bind`] and `run`; publish
//! from the embedding process with [`node::Node::publish`].

pub mod auth;
pub mod broker;
pub mod channel;
pub mod cli;
pub mod clock;
pub mod config;
pub mod http;
pub mod hub;
pub mod limits;
pub mod metrics;
pub mod node;
pub mod outbox;
pub mod protocol;
pub mod server;
pub mod session;
pub mod transport;
