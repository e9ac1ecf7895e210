// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

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
