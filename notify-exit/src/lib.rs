// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod cap;
pub mod config;
pub mod exit;
pub mod handler;
pub mod policy;
pub mod ratelimit;
pub mod stats;

#[cfg(feature = "kvm")]
pub mod kvm;

/// The kvm-bindings this crate was built against (0.14), re-exported: the structs and
/// constants its API takes and returns are this version's.
pub use kvm_bindings;
/// The kvm-ioctls this crate was built against (0.25), re-exported so a VMM names the
/// same `VcpuFd`/`VmFd` types the `kvm` module takes. A VMM on another kvm-ioctls
/// version gets "multiple different versions of crate `kvm_ioctls`" when it passes its
/// own fds; it either moves to this version or uses the crate without the `kvm` feature
/// (the pure decode/policy modules take plain values and `kvm-bindings` structs).
#[cfg(feature = "kvm")]
pub use kvm_ioctls;

pub use cap::{
    CapArgError, NotifyCapArg, NotifyCaps, NotifyVmexitFlags, KVM_CAP_X86_NOTIFY_VMEXIT,
    KVM_CAP_X86_TRIPLE_FAULT_EVENT,
};
pub use config::{ConfigError, NotifyConfig, NotifyVmexitMode};
pub use exit::{
    decode, DecodeError, KvmRunNotify, NotifyExit, NotifyFlags, KVM_EXIT_NOTIFY,
    KVM_NOTIFY_CONTEXT_INVALID,
};
pub use handler::{HandlerOptions, NotifyDecision, NotifyHandler};
pub use policy::{decide, NotifyAction, NotifyPolicy, NotifySemantics, StopReason};
pub use ratelimit::{LogPermit, RateLimit};
pub use stats::{NotifyStats, StormConfig, StormDetector, StormEvent};
