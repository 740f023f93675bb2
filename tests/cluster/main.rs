//! Scenarios with several real `fanout` processes on a real `redis-server` started by the
//! test, publishing with the real `redis-cli`, PHP (phpredis) and the HTTP API.

#[path = "../support/mod.rs"]
mod support;

mod balancer;
mod control;
mod deployment;
mod docs;
mod interest;
mod outage;
mod publishing;
mod sse;
