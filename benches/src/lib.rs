//! `velro-benches`: criterion benches of the engine (`benches/engine.rs`) and the shared
//! synthetic-world seeding they use. Results and the commands that produced them are in
//! `benches/RESULTS.md`.

pub mod world;
