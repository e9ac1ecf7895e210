// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod allowed;
pub mod baseline;
pub mod basic;
pub mod caps;
pub mod check;
pub mod control;
pub mod diff;
pub mod dump;
pub mod ept_vpid;
pub mod error;
pub mod fixed;
#[cfg(all(feature = "kvm", target_arch = "x86_64"))]
pub mod kvm;

/// The kvm-bindings this crate was built against (0.14), re-exported: the structs and
/// constants its API takes and returns are this version's.
#[cfg(feature = "kvm")]
pub use kvm_bindings;
/// The kvm-ioctls this crate was built against (0.25), re-exported so a VMM names the
/// same `VcpuFd`/`VmFd` types the `kvm` module takes. A VMM on another kvm-ioctls
/// version gets "multiple different versions of crate `kvm_ioctls`" when it passes its
/// own fds; it either moves to this version or uses the crate without the `kvm` feature
/// (the pure decode/policy modules take plain values and `kvm-bindings` structs).
#[cfg(feature = "kvm")]
pub use kvm_ioctls;
pub mod misc;
pub mod msr;
pub mod names;
pub mod raw;
pub mod report;
pub mod source;

pub use allowed::{AdjustError, Allowed1Settings, AllowedSettings, BitSetting};
pub use basic::{MemoryType, VmxBasic};
pub use caps::{ControlSetting, VmxCaps};
pub use control::ControlWord;
pub use dump::Dump;
pub use ept_vpid::EptVpidCap;
pub use error::CapsError;
pub use fixed::{CrFixed, VmFunc, VmcsEnum};
pub use misc::VmxMisc;
pub use raw::RawMsrs;
