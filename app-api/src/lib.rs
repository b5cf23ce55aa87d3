//! `velro-api`: the Velro product's REST API (DESIGN §8). It authenticates callers, validates
//! input, and asks the PDP before every protected action; the binary is a thin wrapper over
//! `app::start`, and the integration tests drive the same function.

pub mod app;
pub mod auth;
pub mod authz;
pub mod chat;
pub mod config;
pub mod demo;
pub mod error;
pub mod extract;
pub mod media_types;
pub mod models;
pub mod openapi;
pub mod payments;
pub mod providers;
pub mod ratelimit;
pub mod repo;
pub mod request_id;
pub mod routes;
pub mod s3;
pub mod storage;
pub mod styles;
