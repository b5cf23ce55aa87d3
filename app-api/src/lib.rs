//! `velro-api`, the product REST API (DESIGN §8). Not built yet: issues 5 and 6 fill this crate.
//! It holds no code so that nothing here pretends to work.
