// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

#![doc = include_str!("../README.md")]
//!
//! # Modules
//! - [`abi`]: the named ABI revisions ([`HekiAbi`]) and every number they use;
//! - [`cr`]: CR0/CR4 bits and the CR4 pinnable masks;
//! - [`hypercall`]: `KVM_HC_LOCK_CR_UPDATE` registers, request, return values;
//! - [`policy`]: the pin rules ([`PinPolicy`]) and pin state ([`PinnedCrs`]);
//! - [`intercept`]: which CR bits must be intercepted for pins to hold;
//! - [`cap`]: the two caps' argument and state;
//! - [`exit`]: the two exits' kvm_run layout, decode and encode;
//! - [`enforce`]: the hypervisor side of one VM ([`HekiVm`]);
//! - [`handler`]: the VMM side ([`HekiExitHandler`]);
//! - [`probe`]: deciding whether a kernel really has a revision's uapi;
//! - `kvm` (feature `kvm`): the probe and cap enabling over kvm-ioctls.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod abi;
pub mod cap;
pub mod cr;
pub mod enforce;
pub mod exit;
pub mod handler;
pub mod hypercall;
pub mod intercept;
pub mod policy;
pub mod probe;

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

pub use abi::{HekiAbi, HekiCap, HekiExitKind, HekiUapi};
pub use cap::HekiExitReasons;
pub use enforce::{CrWriteVerdict, HekiVm};
pub use exit::{decode_exit, encode_exit, ExitDecode, HekiExit, HekiExitReason, NotHeki};
pub use handler::{DenialPolicy, HekiAction, HekiDecision, HekiExitHandler, RateLimit};
pub use hypercall::{CallerMode, HypercallRegs, HypercallRet, KvmHcError, LockCrRequest};
pub use intercept::{required_intercepts, CrGuestHostMasks};
pub use policy::{CrCheck, HostCrs, LockError, PinPolicy, PinnedCrs, RebootPolicy};
pub use probe::{HekiSupport, HekiSupported, NotSupported};
