//! `velro-pdp`: the Velro policy decision point's library. The binary is a thin wrapper over
//! `cli::run`; integration tests drive the same functions.

pub mod cli;
