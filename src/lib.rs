//! fanout: a real-time WebSocket fan-out gateway.
//!
//! Browsers hold WebSocket connections to stateless gateway nodes; any backend publishes to a
//! channel (over HTTP today, over Redis with the Redis broker) and every subscriber on every
//! node receives it. See `ARCHITECTURE.md` for the map and `docs/protocol.md` for the wire
//! protocol.
//!
//! Data flows one way through the modules:
//! [`transport`] (WebSocket framing) -> [`session`] (one connection: auth, protocol, queue)
//! -> [`hub`] (local channel registry, fan-out) <- [`broker`] (in-memory or Redis).
//!
//! Embedding: build a [`config::Config`], then [`server::Server::bind`] and `run`; publish
//! from the embedding process with [`server::Node::publish`].

pub mod auth;
pub mod broker;
pub mod channel;
pub mod cli;
pub mod config;
pub mod http;
pub mod hub;
pub mod limits;
pub mod metrics;
pub mod outbox;
pub mod presence;
pub mod protocol;
pub mod server;
pub mod session;
pub mod transport;
