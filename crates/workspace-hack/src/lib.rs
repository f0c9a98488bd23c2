//! No code: see Cargo.toml. This crate only makes the normal build ask for the dependency
//! features that building the tests turns on, so that the two builds share their crates.
