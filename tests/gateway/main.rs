//! Scenarios against one real `fanout` node on the embedded broker.

#[path = "../support/mod.rs"]
mod support;

mod auth;
mod bad_input;
mod channels;
mod control;
mod delivery;
mod http_api;
mod internal;
mod lifecycle;
mod limits;
mod sse;
