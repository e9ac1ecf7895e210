// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

// Modules, one per fact (each added by the change that moves the fact here):
// exception, interruption, control_bits (VMX), kvm_run, exit_reason, ratelimit, cap.

pub mod control_bits;
pub mod exception;
pub mod interruption;
