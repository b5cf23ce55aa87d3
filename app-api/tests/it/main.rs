//! Integration tests of `velro-api`: the real API on an ephemeral loopback port with a real PDP
//! (embedded, or a separate server for the outage test), spoken to over HTTP as clients would.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod attacks;
mod binary;
mod chat;
mod credits;
mod fal;
mod flows;
mod generations;
mod postgres;
mod s3;
mod storage;
mod styles;
mod support;
