//! The integration tests of tds: one crate, one module per area. Everything runs for real: an
//! orchestrator on a temp folder, real processes, a real `SQLite` store, real sockets on
//! loopback.

// This crate is all tests: a failed setup step may panic, and figures are compared exactly.
#![allow(clippy::unwrap_used, clippy::float_cmp)]

mod api;
mod archive;
mod binary;
mod common;
mod demo;
mod engine;
mod faults;
mod metrics;
mod newcomer;
mod properties;
mod recovery;
mod ui;
