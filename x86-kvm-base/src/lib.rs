// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

#![doc = include_str!("../README.md")]
#![deny(missing_docs)]
// One item reads the kvm_run exit union and needs `unsafe`: `kvm_run::KvmRunExit::from_kvm_run`,
// which carries the only `#[allow(unsafe_code)]` of the crate.
#![deny(unsafe_code)]

// Modules, one per fact (each added by the change that moves the fact here):
// exception, interruption, entry_checks, control_bits (VMX), kvm_run, exit_reason,
// ratelimit, cap.

pub mod cap;
pub mod exit_reason;
pub mod kvm_run;
pub mod ratelimit;
