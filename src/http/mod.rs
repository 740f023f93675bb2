//! HTTP endpoints beside the transports: the API for backends (publish, broadcast, history,
//! presence, status, and the control of sessions; authorised by API key) and the operations
//! endpoints (`/healthz`,
//! `/readyz`, `/metrics`). Every error is a [`ClientError`](crate::protocol::ClientError)
//! answered as `{"error":{"code":"...","message":"..."}}`.

pub mod auth;
pub mod body;
pub mod control;
pub mod demo;
pub mod demo_play;
pub mod history;
pub mod ops;
pub mod presence;
pub mod publish;
