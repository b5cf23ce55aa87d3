//! Velro authorization engine: policy stores and their hot reload, the policy test runner and
//! inline evaluation. Transport-free: the PDP and the app API wrap it.

pub mod error;
pub mod evaluate;
pub mod format;
pub mod policy_store;
pub mod policy_test;
pub mod stores;

pub use error::{Error, Result};
pub use policy_store::{Diagnostic, Evaluation, PolicyStore};
