//! Deciding whether a kernel really implements a Heki revision's uapi.
//!
//! `KVM_CHECK_EXTENSION` alone proves nothing: the Heki cap numbers are upstream cap
//! numbers too. On an upstream kernel, 235 is `KVM_CAP_VM_TYPES` (answers a bitmask of
//! VM types: 1, or 3 with `KVM_X86_SW_PROTECTED_VM` — exactly the Heki answer), 236 is
//! `KVM_CAP_PRE_FAULT_MEMORY` (0 or 1), 237 is `KVM_CAP_X86_APIC_BUS_CYCLES_NS` (1).
//! Worse, *enabling* 237 with a Heki reason mask would set the APIC bus period on an
//! upstream kernel. So [`probe`] requires all of this evidence, cheapest first, and
//! stops at the first failure:
//!
//! 1. **The caller selected the revision** (the `abi` argument): numbers are never
//!    guessed, and a revision without uapi (RFC v1) is [`NotSupported::NoUapi`].
//! 2. **Both caps answer exactly the valid reason mask** (CR0 | CR4 = 3), which is the
//!    constant the RFC returns — a subset check would accept the `1` upstream's
//!    `VM_TYPES`/`APIC_BUS_CYCLES_NS` give ([`NotSupported::CheckExtension`]).
//! 3. **The numbering stops where the revision's did**: the [`SENTINEL_SPAN`] cap
//!    numbers right after the revision's last Heki cap all answer 0. Those numbers did
//!    not exist in the RFC's base tree; an upstream kernel that knows them (e.g.
//!    `KVM_CAP_X86_APIC_BUS_CYCLES_NS` = 237, `KVM_CAP_X86_GUEST_MODE` = 238) has
//!    upstream meanings at the Heki numbers ([`NotSupported::UpstreamNumbering`]).
//! 4. **Both caps behave like Heki caps on a scratch VM**: `KVM_ENABLE_CAP(args[0] = 0)`
//!    succeeds (clearing is allowed) and `args[0]` with an unknown reason bit fails
//!    with `EINVAL` ([`NotSupported::EnableRejected`],
//!    [`NotSupported::UnknownBitsAccepted`]). The scratch VM is never the caller's VM,
//!    so even on a wrong kernel nothing the caller owns is changed.
//!
//! Only then does [`probe`] return a [`HekiSupported`] token, which is the only way to
//! reach the enabling helper of the `kvm` module. The steps talk to the kernel through
//! [`CapQuery`], so the logic is tested here against simulated kernels.
//!
//! # What the probe can change (read before running it on a production host)
//!
//! Steps 1–3 are `KVM_CHECK_EXTENSION` only: no state changes anywhere. Step 4 is the
//! only one that enables anything, and it is reached only when both caps answered
//! exactly 3 and the sentinels 0. **On an upstream kernel step 4 is never reached**:
//! `KVM_CAP_PRE_FAULT_MEMORY` (236, a cap of both revisions) answers `tdp_enabled`,
//! i.e. 0 or 1, never 3, so the probe stops at step 2 for RFC v3 and at step 2 or 3 for
//! RFC v2 (235 = `KVM_CAP_VM_TYPES` may answer 3 with `CONFIG_KVM_SW_PROTECTED_VM`,
//! then 236 fails). Even if step 4 ran on an upstream kernel, nothing would change
//! (Linux 6.16–6.18 `kvm_vm_ioctl_enable_cap`):
//!
//! | cap | upstream meaning | `KVM_ENABLE_CAP(args[0] = 0)` | `args[0] = 4` (unknown reason) |
//! |---|---|---|---|
//! | 235 | `KVM_CAP_VM_TYPES` (query only) | `-EINVAL` (default case) | `-EINVAL` |
//! | 236 | `KVM_CAP_PRE_FAULT_MEMORY` (query only) | `-EINVAL` | `-EINVAL` |
//! | 237 | `KVM_CAP_X86_APIC_BUS_CYCLES_NS` | `-EINVAL` (0 ns is refused) | not reached (the probe stops at the failed `enable(0)`); on the scratch VM, which has no in-kernel irqchip, it would be `-ENXIO` |
//!
//! Observed on this project's host (Linux 6.18, no VMX): `KVM_CHECK_EXTENSION` gives
//! 235 → 1, 236 → 0, 237 → 1; the probe answers `CheckExtension` for v2 and v3, and
//! `KVM_ENABLE_CAP(n, 0)` is `EINVAL` for all three (`tests/kvm.rs`).
//!
//! On a kernel that does reach step 4 (a Heki kernel, or an unknown downstream kernel
//! that happens to answer like one), `KVM_ENABLE_CAP` is issued only on the scratch VM
//! ([`CapQuery::enable_on_scratch_vm`]; `kvm::KvmCapQuery` creates a fresh VM and
//! closes it when dropped). A Heki kernel ends with both reason masks at 0 on that VM
//! (the unknown-bit call is refused). The caller's VMs are never touched.
//!
//! Creating the scratch VM itself (`KVM_CREATE_VM`) is observable on the host, like any
//! short-lived VM: it costs a file descriptor and some kernel memory until dropped; KVM
//! sends a `change@/devices/virtual/misc/kvm` uevent (`CREATED=`, `COUNT=`, `PID=`) and,
//! when debugfs is mounted, creates and removes a per-VM directory under
//! `/sys/kernel/debug/kvm`; it may start and stop the per-VM NX-huge-page recovery
//! thread; and with `kvm.enable_virt_at_load=0` (or a kernel older than 6.12) the first
//! VM in the system turns hardware virtualization on (VMXON/EFER.SVME) on every CPU
//! until the last VM is gone, which matters only if another hypervisor shares the host.
//! No vCPU is created and no guest memory is mapped. A caller that must avoid all of
//! this can implement [`CapQuery`] itself, e.g. with `enable_on_scratch_vm` returning
//! an error, which makes [`probe`] answer [`NotSupported::EnableRejected`].

#![deny(unsafe_code)]

use crate::abi::{upstream_cap_name, HekiAbi, HekiCap, HekiUapi};
use crate::cap::{CapError, HekiExitReasons, CHECK_EXTENSION_VALUE};
use kvm_bindings::kvm_enable_cap;

/// How many cap numbers after the revision's last Heki cap must answer 0.
pub const SENTINEL_SPAN: u32 = 3;

/// `EINVAL`, the errno the RFC returns for unknown reason bits.
pub const EINVAL: i32 = 22;

/// The kernel operations the probe needs.
pub trait CapQuery {
    /// `KVM_CHECK_EXTENSION(cap)` (the ioctl's return value).
    fn check_extension(&mut self, cap: u32) -> i64;
    /// `KVM_ENABLE_CAP(cap, args[0] = arg)` on a scratch VM that nothing else uses;
    /// `Err(errno)` on failure.
    fn enable_on_scratch_vm(&mut self, cap: u32, arg: u64) -> Result<(), i32>;
}

/// Proof that [`probe`] found a revision's uapi. Only [`probe`] creates it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HekiSupported {
    uapi: HekiUapi,
}

impl HekiSupported {
    /// The revision found.
    pub const fn abi(&self) -> HekiAbi {
        self.uapi.abi()
    }
    /// Its numbers.
    pub const fn uapi(&self) -> HekiUapi {
        self.uapi
    }

    /// The `KVM_ENABLE_CAP` request that asks this revision's `cap` for exits on
    /// `reasons`: `cap` = the revision's number for it, `args[0]` = the reason mask
    /// (`KVM_HEKI_EXIT_REASON_*`), every other field 0 (RFC v2 03/19,
    /// `kvm_vm_ioctl_enable_cap`). Pure: the `kvm` module's `enable_cap` sends exactly
    /// this. Unknown reason bits are refused here rather than by the kernel.
    pub fn enable_request(
        &self,
        cap: HekiCap,
        reasons: HekiExitReasons,
    ) -> Result<kvm_enable_cap, CapError> {
        Ok(x86_kvm_base::cap::enable_cap_request(
            self.uapi.cap(cap),
            reasons.to_enable_arg()?,
        ))
    }
}

/// Why a revision's uapi is not (provably) there.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum NotSupported {
    /// The revision defines no uapi (RFC v1).
    #[error("{abi} has no exits or caps")]
    NoUapi {
        /// The revision.
        abi: HekiAbi,
    },
    /// `KVM_CHECK_EXTENSION` did not answer exactly CR0 | CR4.
    #[error("KVM_CHECK_EXTENSION({cap}) = {value}, Heki answers 3 (upstream: {upstream:?})")]
    CheckExtension {
        /// The cap number.
        cap: u32,
        /// The answer.
        value: i64,
        /// Upstream's name for `cap`.
        upstream: Option<&'static str>,
    },
    /// A cap number after the Heki ones answered non-zero: upstream numbering.
    #[error("KVM_CHECK_EXTENSION({cap}) = {value}: kernel numbers caps past the Heki ones (upstream: {upstream:?})")]
    UpstreamNumbering {
        /// The sentinel cap number.
        cap: u32,
        /// Its answer.
        value: i64,
        /// Upstream's name for `cap`.
        upstream: Option<&'static str>,
    },
    /// `KVM_ENABLE_CAP(cap, 0)` failed, which a Heki cap allows.
    #[error("KVM_ENABLE_CAP({cap}, 0) failed with errno {errno} (upstream: {upstream:?})")]
    EnableRejected {
        /// The cap number.
        cap: u32,
        /// The errno.
        errno: i32,
        /// Upstream's name for `cap`.
        upstream: Option<&'static str>,
    },
    /// `KVM_ENABLE_CAP(cap, unknown bit)` did not fail with EINVAL.
    #[error("KVM_ENABLE_CAP({cap}, unknown reason) gave {result:?}, Heki gives EINVAL")]
    UnknownBitsAccepted {
        /// The cap number.
        cap: u32,
        /// `Ok` or the errno seen.
        result: Result<(), i32>,
    },
}

/// The probe's verdict.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HekiSupport {
    /// Every piece of evidence holds.
    Supported(HekiSupported),
    /// Not supported; the first failed check.
    NotSupported(NotSupported),
}

impl HekiSupport {
    /// The token, if supported.
    pub const fn supported(&self) -> Option<HekiSupported> {
        match self {
            HekiSupport::Supported(s) => Some(*s),
            HekiSupport::NotSupported(_) => None,
        }
    }
}

/// Decide whether the kernel behind `kernel` implements revision `abi` (see the module
/// docs for the evidence required).
pub fn probe(abi: HekiAbi, kernel: &mut impl CapQuery) -> HekiSupport {
    match probe_inner(abi, kernel) {
        Ok(s) => HekiSupport::Supported(s),
        Err(e) => HekiSupport::NotSupported(e),
    }
}

fn probe_inner(abi: HekiAbi, kernel: &mut impl CapQuery) -> Result<HekiSupported, NotSupported> {
    let uapi = abi.uapi().ok_or(NotSupported::NoUapi { abi })?;
    let caps = [uapi.cap(HekiCap::Configure), uapi.cap(HekiCap::Denial)];
    for cap in caps {
        let value = kernel.check_extension(cap);
        if u64::try_from(value).ok() != Some(CHECK_EXTENSION_VALUE) {
            return Err(NotSupported::CheckExtension {
                cap,
                value,
                upstream: upstream_cap_name(cap),
            });
        }
    }
    let last = caps[0].max(caps[1]);
    for cap in (1..=SENTINEL_SPAN).filter_map(|i| last.checked_add(i)) {
        let value = kernel.check_extension(cap);
        if value != 0 {
            return Err(NotSupported::UpstreamNumbering {
                cap,
                value,
                upstream: upstream_cap_name(cap),
            });
        }
    }
    let unknown_bit = HekiExitReasons::VALID.bits() + 1;
    for cap in caps {
        if let Err(errno) = kernel.enable_on_scratch_vm(cap, 0) {
            return Err(NotSupported::EnableRejected {
                cap,
                errno,
                upstream: upstream_cap_name(cap),
            });
        }
        match kernel.enable_on_scratch_vm(cap, unknown_bit) {
            Err(EINVAL) => {}
            result => return Err(NotSupported::UnknownBitsAccepted { cap, result }),
        }
    }
    Ok(HekiSupported { uapi })
}
