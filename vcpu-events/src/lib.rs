// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

#![doc = include_str!("../README.md")]
#![cfg_attr(not(feature = "kvm"), forbid(unsafe_code))]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod event;
pub mod idt_vectoring;
pub mod injector;
pub mod interruption;
#[cfg(target_arch = "x86_64")]
#[cfg_attr(docsrs, doc(cfg(target_arch = "x86_64")))]
pub mod lapic;
pub mod raise;
#[cfg(target_arch = "x86_64")]
#[cfg_attr(docsrs, doc(cfg(target_arch = "x86_64")))]
pub mod restore;
pub mod sdm_checks;
#[cfg(target_arch = "x86_64")]
#[cfg_attr(docsrs, doc(cfg(target_arch = "x86_64")))]
pub mod snapshot;
#[cfg(target_arch = "x86_64")]
#[cfg_attr(docsrs, doc(cfg(target_arch = "x86_64")))]
pub mod validate;
#[cfg(target_arch = "x86_64")]
#[cfg_attr(docsrs, doc(cfg(target_arch = "x86_64")))]
pub mod vcpu_events;

#[cfg(all(feature = "kvm", target_arch = "x86_64"))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "kvm", target_arch = "x86_64"))))]
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

pub use event::{
    ActivityState, Event, EventStatus, ExceptionPayload, HardwareException, Interruptibility,
};
pub use idt_vectoring::{IdtVectoring, Reinjection};
pub use injector::{
    Decision, ExitKind, Injector, InjectorState, InjectorStateError, InjectorStats, RaiseError,
    RaiseOutcome, RunState, WaitReason,
};
pub use interruption::{EntryInterruption, InterruptionInfo, InterruptionType};
#[cfg(target_arch = "x86_64")]
pub use lapic::{LapicLoss, LapicVectors};
pub use raise::{Accounting, RaiseHandle, VcpuInterrupts};
pub use sdm_checks::{
    check_entry, EntryCaps, EntryControls, EventRule, GuestEventState, GuestRule, Rule, Violation,
};
#[cfg(target_arch = "x86_64")]
pub use snapshot::{SnapshotError, VcpuSnapshot, SNAPSHOT_VERSION};
#[cfg(all(target_arch = "x86_64", feature = "serde"))]
pub use snapshot::{SnapshotReadError, MAX_SNAPSHOT_JSON_BYTES};
#[cfg(target_arch = "x86_64")]
pub use validate::{validate, GuestContext, KvmContext, Report};
#[cfg(target_arch = "x86_64")]
pub use vcpu_events::{RawVcpuEvents, Shadow, VcpuEvents};
