//! Offsets, history and recovery: a client that drops gets exactly what it missed, in
//! order, without duplicates, or is told clearly to reload.

#[path = "../support/mod.rs"]
mod support;

mod idempotency;
mod on_memory;
mod on_redis;
mod pressure;
mod property;
mod replay;
mod stall;
