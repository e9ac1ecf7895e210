//! Property functions behind the cargo-fuzz targets of the vmx-toolkit workspace.
//!
//! Every function in [`properties`] takes the raw fuzz input and panics only when a
//! property of a workspace crate is violated (a round trip that is not the identity,
//! a computed configuration with a bit the CPU does not allow, pins that shrink, a
//! panic inside a decoder...). The same module is compiled into
//! `reference-vmm/tests/fuzz_seeds.rs`, which replays the committed seed corpus
//! (`fuzz/seeds/<target>/`) under plain `cargo test` on stable Rust.

pub mod properties;
