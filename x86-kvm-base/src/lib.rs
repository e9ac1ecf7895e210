// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

#![doc = include_str!("../README.md")]
#![deny(missing_docs)]
// One item reads the kvm_run exit union and needs `unsafe`: `kvm_run::KvmRunExit::from_kvm_run`,
// which carries the only `#[allow(unsafe_code)]` of the crate.
#![deny(unsafe_code)]

// One module per fact.
pub mod cap;
pub mod control_bits;
pub mod exception;
pub mod exit_reason;
pub mod interruption;
pub mod kvm_run;
pub mod ratelimit;
