//! Velro authorization engine: policy stores and their hot reload, the policy test runner, inline
//! evaluation, and the decision path (entities from SQL through tiered caches, consistency tokens,
//! signed media URLs, the audit log). Transport-free: the PDP and the app API wrap it.

pub mod audit;
pub mod cache;
pub mod changes;
pub mod clock;
pub mod consistency;
pub mod db;
pub mod decision;
pub mod engine;
pub mod entities;
pub mod error;
pub mod evaluate;
pub mod format;
pub mod ids;
pub mod media_url;
pub mod policy_store;
pub mod policy_test;
pub mod stores;
pub mod violations;

pub use engine::{Engine, EngineConfig, EngineTasks, Health};
pub use error::{Error, Result};
pub use policy_store::{Diagnostic, Evaluation, PolicyStore};
