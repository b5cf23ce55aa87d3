//! `velro-benches`: criterion benches of the engine (`benches/engine.rs`), the `velro-load` load
//! generator for the PDP service, and the synthetic worlds they decide on. Results and the
//! commands that produced them are in `benches/RESULTS.md`.

pub mod load;
pub mod synthetic;
pub mod world;
