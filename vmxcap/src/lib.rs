// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The `vmxcap` crate is first a command line (`cargo install vmxcap`; see the README).
//! Its library holds the terminal-output contract that command line follows, so other
//! command lines over the vmx-toolkit crates (the workspace's reference VMM) give the
//! same exit statuses, one-line escaped errors and never-lost write failures:
//! [`output`].

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod output;
