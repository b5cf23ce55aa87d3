//! `velro-benches`: criterion benches and the `velro-load` load generator (DESIGN §11). Not built
//! yet: the engine data path (issue 3) and the PDP service (issue 4) add them with their results in
//! `benches/RESULTS.md`.
