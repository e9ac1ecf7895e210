//! One property function per fuzz target, one module per target.
//!
//! Each function takes the raw fuzz input and panics only when a property of a workspace
//! crate is violated: a round trip that is not the identity, a computed configuration
//! containing a bit the CPU does not allow, a sanitized configuration failing the pair
//! check, pins that shrink, a decoder that panics on garbage, an error message that is
//! not one clean line, a decision that differs from the independently restated table,
//! an answer that changes when asked twice. Inputs that a surface rejects are fine as
//! long as they are rejected with a typed error.
//!
//! This module is compiled twice: as `vmx_toolkit_fuzz::properties` (the cargo-fuzz
//! targets in `fuzz/fuzz_targets/` call it) and, through `#[path]`, inside
//! `reference-vmm/tests/fuzz_seeds.rs`, which replays `fuzz/seeds/<target>/` under plain
//! `cargo test`. So it may only use crates that reference-vmm depends on (JSON output is
//! checked with `serde::de::IgnoredAny`, which validates without building a tree), and no
//! `arbitrary`: structured inputs are read with [`input::Input`], a little-endian cursor that
//! yields zeros once the data runs out (so every input, even an empty one, means
//! something and seed files stay readable byte layouts).
//!
//! Layout: `<target>.rs` holds the target's property function (same name as the
//! module) and its private helpers; [`common`] and [`input`] hold what several targets
//! share; [`vmm_table`] restates the reference VMM's decision table that `vmm_exits` and
//! `trace_replay` check against. Adding a target is two lines here (`pub mod <target>;` and
//! its name in the `targets!` list) plus its `<target>.rs`, `fuzz_targets/<target>.rs`,
//! `[[bin]]` and `seeds/<target>/`.

// Matches on the crates' enums end in a catch-all arm so that a crate marking an enum
// `#[non_exhaustive]` later does not break the build; where the enum is still exhaustive
// that arm is unreachable, which is fine here.
#![allow(unreachable_patterns)]

pub mod common;
pub mod input;
pub mod vmm_table;

/// A target's property function: panics exactly when the input violates a property.
pub type Property = fn(&[u8]);

// One module per target. Declared here rather than by `targets!` so that rustfmt (which
// does not look inside macros) formats them.
pub mod heki_exit;
pub mod heki_hypercall;
pub mod msr_dump_json;
pub mod notify_exit;
pub mod notify_options;
pub mod sdm_controls;
pub mod trace_replay;
pub mod vcpu_events;
pub mod vcpu_injector;
pub mod vcpu_interruption;
pub mod vcpu_snapshot;
pub mod vmm_exits;
pub mod vmm_snapshot;
pub mod vmx_caps_raw;
pub mod vmx_nested;

/// Re-exports each target's property function under the target's name and lists it in
/// [`TARGETS`].
macro_rules! targets {
    ($($target:ident),* $(,)?) => {
        $(pub use $target::$target;)*

        /// Every target: its name (the `fuzz_targets/<name>.rs` file and the
        /// `seeds/<name>/` directory) and its property function.
        pub const TARGETS: &[(&str, Property)] = &[$((stringify!($target), $target)),*];
    };
}

targets!(
    msr_dump_json,
    vmx_caps_raw,
    notify_options,
    notify_exit,
    vcpu_interruption,
    vcpu_events,
    vcpu_injector,
    vcpu_snapshot,
    sdm_controls,
    heki_hypercall,
    heki_exit,
    trace_replay,
    vmm_exits,
    vmx_nested,
    vmm_snapshot,
);
