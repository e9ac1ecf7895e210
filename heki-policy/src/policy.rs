//! The pin policy: per-VM pinned CR0/CR4 bits that only grow.
//!
//! This is `heki_lock_cr()` and `heki_check_cr()` of Heki RFC v2 02/19 (unchanged in v3
//! 2/5), as a pure state machine. The host's CR values, which KVM reads with
//! `read_cr0()` / `__read_cr4()`, are supplied by the caller ([`HostCrs`]).
//!
//! # Lock validation, in the RFC's order
//! (flags and a0 were checked by [`decode_request`])
//! 1. `pin == 0` → `-KVM_EINVAL` ([`LockError::ZeroPin`]), before any host masking;
//! 2. CR0: the pin must contain `X86_CR0_WP` ([`LockError::Cr0WithoutWp`]), and every
//!    pinned bit must be set in the host's CR0 ([`LockError::Cr0NotSetOnHost`]). Other
//!    bits than WP are accepted when set on the host (PE, PG, ...);
//! 3. CR4: the pin must be a subset of Linux's `cr4_pinned_mask`
//!    ([`LockError::Cr4OutsidePinnable`]); then bits the host's CR4 does not have are
//!    silently dropped and the call succeeds, even if nothing remains
//!    ([`LockGrant::dropped_not_on_host`]);
//! 4. any other CR → `-KVM_EINVAL` ([`LockError::UnsupportedCr`]);
//! 5. the remaining bits are OR-ed into the VM's pins (`atomic_long_or`): there is no
//!    unpin path.
//!
//! # Enforcement
//! A CR0/CR4 write of `value` is denied iff `(value & pinned) != pinned`: only
//! *clearing* a pinned bit is denied; setting extra bits is always allowed; other CRs
//! are never checked ([`PinPolicy::check_cr`]).
//!
//! # Reboot, kexec, hibernation: a policy choice
//! The RFC keeps the pins for the VM's lifetime (v3 cover letter: it "doesn't handle VM
//! reboot, kexec, nor hybernate yet"), so a rebooted guest runs its early boot code with
//! the previous kernel's pins, which is why reviewers asked for a story there. This
//! crate does the same by default ([`RebootPolicy::KeepPins`]); a VMM that resets the
//! VM on guest reboot and wants the next kernel to start unpinned calls
//! [`PinPolicy::reset`] (or [`PinPolicy::on_reboot`] with
//! [`RebootPolicy::ResetPins`]) at that point. Nothing in the guest can reset pins.

#![deny(unsafe_code)]

use crate::abi::HekiAbi;
use crate::cr::{Cr0, Cr4};
use crate::hypercall::{decode_request, CallerMode, HypercallRegs, HypercallRet, KvmHcError};
use crate::hypercall::{LockCrRequest, RequestError};

/// The pinned bits of one VM (`kvm->heki_pinned_cr0`, `kvm->heki_pinned_cr4`).
///
/// A plain value: serialize it for snapshots and migration (feature `serde`). The
/// only-grows rule is enforced by [`PinPolicy`], which owns one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PinnedCrs {
    /// Pinned CR0 bits (raw).
    pub cr0: u64,
    /// Pinned CR4 bits (raw).
    pub cr4: u64,
}

impl PinnedCrs {
    /// Nothing pinned.
    pub const EMPTY: PinnedCrs = PinnedCrs { cr0: 0, cr4: 0 };

    /// Typed view of the CR0 pins.
    pub const fn cr0_flags(&self) -> Cr0 {
        Cr0::from_bits_retain(self.cr0)
    }
    /// Typed view of the CR4 pins.
    pub const fn cr4_flags(&self) -> Cr4 {
        Cr4::from_bits_retain(self.cr4)
    }
    /// The pins of control register `cr` (0 or 4); `None` for any other register,
    /// which Heki never pins.
    pub const fn get(&self, cr: u32) -> Option<u64> {
        match cr {
            0 => Some(self.cr0),
            4 => Some(self.cr4),
            _ => None,
        }
    }
    /// Whether nothing is pinned.
    pub const fn is_empty(&self) -> bool {
        self.cr0 == 0 && self.cr4 == 0
    }
    /// Whether every pin of `other` is also pinned here.
    pub const fn contains(&self, other: &PinnedCrs) -> bool {
        self.cr0 & other.cr0 == other.cr0 && self.cr4 & other.cr4 == other.cr4
    }
    /// Bitwise union.
    pub const fn union(self, other: PinnedCrs) -> PinnedCrs {
        PinnedCrs {
            cr0: self.cr0 | other.cr0,
            cr4: self.cr4 | other.cr4,
        }
    }
    /// Pins of `self` that `other` lacks.
    pub const fn difference(self, other: PinnedCrs) -> PinnedCrs {
        PinnedCrs {
            cr0: self.cr0 & !other.cr0,
            cr4: self.cr4 & !other.cr4,
        }
    }
    /// Check a write of `value` to control register `cr` against these pins (see
    /// [`PinPolicy::check_cr`]).
    pub const fn check_cr(&self, cr: u32, value: u64) -> CrCheck {
        let pinned = match self.get(cr) {
            Some(p) => p,
            None => return CrCheck::Allow,
        };
        let cleared = pinned & !value;
        if cleared == 0 {
            CrCheck::Allow
        } else {
            CrCheck::Deny { cleared }
        }
    }
}

/// The host's control register values, which the RFC reads with `read_cr0()` and
/// `__read_cr4()` on the CPU handling the hypercall.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HostCrs {
    /// Host CR0.
    pub cr0: u64,
    /// Host CR4.
    pub cr4: u64,
}

/// The result of checking a CR write against the pins.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CrCheck {
    /// No pinned bit would be cleared.
    Allow,
    /// The write would clear pinned bits: KVM injects `#GP(0)` (or exits with
    /// `KVM_EXIT_HEKI_DENIAL` first).
    Deny {
        /// The pinned bits the write would clear.
        cleared: u64,
    },
}

/// Why a lock request is refused. Every variant is `-KVM_EINVAL` to the guest; the
/// variants say which RFC check failed.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum LockError {
    /// `pin == 0`.
    #[error("empty pin: -KVM_EINVAL")]
    ZeroPin,
    /// CR0 pin without `X86_CR0_WP`.
    #[error("CR0 pin {pin:#x} lacks WP: -KVM_EINVAL")]
    Cr0WithoutWp {
        /// The requested pin.
        pin: u64,
    },
    /// CR0 pin with bits the host's CR0 does not have set.
    #[error("CR0 pin {pin:#x} has bits {missing:#x} clear on the host: -KVM_EINVAL")]
    Cr0NotSetOnHost {
        /// The requested pin.
        pin: u64,
        /// `pin & !host_cr0`.
        missing: u64,
    },
    /// CR4 pin outside the pinnable mask (`cr4_pinned_mask`).
    #[error("CR4 pin {pin:#x} has non-pinnable bits {outside:#x}: -KVM_EINVAL")]
    Cr4OutsidePinnable {
        /// The requested pin.
        pin: u64,
        /// The bits outside the mask.
        outside: u64,
    },
    /// A control register other than 0 and 4.
    #[error("CR{cr} cannot be pinned: -KVM_EINVAL")]
    UnsupportedCr {
        /// a0.
        cr: u32,
    },
}

impl LockError {
    /// The value the guest gets: always `-KVM_EINVAL`.
    pub const fn error(self) -> KvmHcError {
        KvmHcError::Inval
    }
}

/// The control registers Heki pins.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum PinnableCr {
    /// CR0.
    Cr0,
    /// CR4.
    Cr4,
}

impl PinnableCr {
    /// The register number (0 or 4).
    pub const fn number(self) -> u32 {
        match self {
            PinnableCr::Cr0 => 0,
            PinnableCr::Cr4 => 4,
        }
    }
    /// The register with number `cr`, if Heki pins it.
    pub const fn from_number(cr: u32) -> Option<Self> {
        match cr {
            0 => Some(PinnableCr::Cr0),
            4 => Some(PinnableCr::Cr4),
            _ => None,
        }
    }
}

/// An accepted lock request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LockGrant {
    /// The register.
    pub cr: PinnableCr,
    /// a1 as the guest passed it.
    pub requested: u64,
    /// The bits OR-ed into the pins (for CR4: after host masking). This is what a
    /// configure exit reports as `cr_pinned`.
    pub applied: u64,
    /// CR4 bits dropped because the host's CR4 does not have them (the call still
    /// succeeds). Always 0 for CR0.
    pub dropped_not_on_host: u64,
    /// Bits of `applied` that were not pinned before.
    pub newly_pinned: u64,
}

/// What the guest gets for a `KVM_HC_LOCK_CR_UPDATE` call, and what happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HypercallOutcome {
    /// The decoded request, if the call got past the dispatcher checks.
    pub request: Option<LockCrRequest>,
    /// What the guest sees in RAX.
    pub ret: HypercallRet,
    /// The applied pin, for a successful lock.
    pub grant: Option<LockGrant>,
    /// Why the call was refused, if it was.
    pub refusal: Option<Refusal>,
}

/// Why a hypercall was refused.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// Refused by the dispatcher or the flags check.
    Request(RequestError),
    /// Refused by the pin rules.
    Lock(LockError),
}

/// What to do with the pins when the guest reboots (or kexecs into another kernel).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum RebootPolicy {
    /// Keep every pin (the RFC's behaviour: pins live as long as the VM).
    #[default]
    KeepPins,
    /// Drop every pin, so the next kernel starts unpinned and pins again.
    ResetPins,
}

/// The per-VM Heki pin state and rules of one ABI revision: what a hypervisor (or a
/// VMM that enforces pins itself) runs for `KVM_HC_LOCK_CR_UPDATE` and CR writes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PinPolicy {
    abi: HekiAbi,
    cr4_pinnable: u64,
    pins: PinnedCrs,
}

impl PinPolicy {
    /// Empty pins, with the CR4 pinnable mask of `abi`'s base kernel.
    pub const fn new(abi: HekiAbi) -> Self {
        PinPolicy {
            abi,
            cr4_pinnable: abi.cr4_pinnable().bits(),
            pins: PinnedCrs::EMPTY,
        }
    }

    /// Restore pins from a snapshot (migration destination).
    pub const fn with_pins(mut self, pins: PinnedCrs) -> Self {
        self.pins = pins;
        self
    }

    /// Use the host kernel's actual `cr4_pinned_mask` instead of the revision's
    /// default (the RFC validates against the mask of the kernel KVM runs in).
    pub const fn with_cr4_pinnable(mut self, mask: Cr4) -> Self {
        self.cr4_pinnable = mask.bits();
        self
    }

    /// The ABI revision.
    pub const fn abi(&self) -> HekiAbi {
        self.abi
    }
    /// The CR4 pinnable mask in use.
    pub const fn cr4_pinnable(&self) -> Cr4 {
        Cr4::from_bits_retain(self.cr4_pinnable)
    }
    /// The current pins.
    pub const fn pins(&self) -> PinnedCrs {
        self.pins
    }

    /// Apply the RFC's rules to a lock of `pin` in `cr` without changing the pins.
    pub const fn validate_lock(
        &self,
        cr: u32,
        pin: u64,
        host: HostCrs,
    ) -> Result<LockGrant, LockError> {
        if pin == 0 {
            return Err(LockError::ZeroPin);
        }
        let (which, applied, dropped) = match cr {
            0 => {
                if pin & Cr0::WP.bits() == 0 {
                    return Err(LockError::Cr0WithoutWp { pin });
                }
                let missing = pin & !host.cr0;
                if missing != 0 {
                    return Err(LockError::Cr0NotSetOnHost { pin, missing });
                }
                (PinnableCr::Cr0, pin, 0)
            }
            4 => {
                let outside = pin & !self.cr4_pinnable;
                if outside != 0 {
                    return Err(LockError::Cr4OutsidePinnable { pin, outside });
                }
                (PinnableCr::Cr4, pin & host.cr4, pin & !host.cr4)
            }
            _ => return Err(LockError::UnsupportedCr { cr }),
        };
        let before = match which {
            PinnableCr::Cr0 => self.pins.cr0,
            PinnableCr::Cr4 => self.pins.cr4,
        };
        Ok(LockGrant {
            cr: which,
            requested: pin,
            applied,
            dropped_not_on_host: dropped,
            newly_pinned: applied & !before,
        })
    }

    /// Lock `pin` in `cr`: validate, then OR the accepted bits into the pins.
    ///
    /// ```
    /// use heki_policy::policy::{CrCheck, LockError};
    /// use heki_policy::{HekiAbi, HostCrs, PinPolicy};
    ///
    /// let host = HostCrs { cr0: 0x8005_0033, cr4: 0x0037_0ef0 };
    /// let mut policy = PinPolicy::new(HekiAbi::RfcV2);
    /// // Pin CR4.SMEP | SMAP.
    /// let grant = policy.lock(4, (1 << 20) | (1 << 21), host)?;
    /// assert_eq!(grant.newly_pinned, (1 << 20) | (1 << 21));
    /// // A CR0 pin must include WP (the RFC's rule).
    /// assert_eq!(policy.lock(0, 1, host), Err(LockError::Cr0WithoutWp { pin: 1 }));
    /// // A later CR4 write that clears SMEP is refused (KVM injects #GP(0)).
    /// assert_eq!(policy.check_cr(4, 0x0027_0ef0), CrCheck::Deny { cleared: 1 << 20 });
    /// assert_eq!(policy.check_cr(4, 0x0037_0ef0), CrCheck::Allow);
    /// # Ok::<(), LockError>(())
    /// ```
    pub fn lock(&mut self, cr: u32, pin: u64, host: HostCrs) -> Result<LockGrant, LockError> {
        let grant = self.validate_lock(cr, pin, host)?;
        match grant.cr {
            PinnableCr::Cr0 => self.pins.cr0 |= grant.applied,
            PinnableCr::Cr4 => self.pins.cr4 |= grant.applied,
        }
        Ok(grant)
    }

    /// Handle the hypercall registers of a guest. `None` when they are not this
    /// revision's `KVM_HC_LOCK_CR_UPDATE` (not ours to answer).
    pub fn handle_hypercall(
        &mut self,
        regs: HypercallRegs,
        mode: CallerMode,
        host: HostCrs,
    ) -> Option<HypercallOutcome> {
        let request = match decode_request(self.abi, regs, mode) {
            Ok(None) => return None,
            Ok(Some(r)) => r,
            Err(e) => {
                return Some(HypercallOutcome {
                    request: None,
                    ret: HypercallRet::Error(e.error()),
                    grant: None,
                    refusal: Some(Refusal::Request(e)),
                })
            }
        };
        let outcome = match request {
            LockCrRequest::VersionQuery => HypercallOutcome {
                request: Some(request),
                // decode_request only yields a query for revisions that have one.
                ret: match self.abi.abi_version() {
                    Some(v) => HypercallRet::AbiVersion(v),
                    None => HypercallRet::Error(KvmHcError::Inval),
                },
                grant: None,
                refusal: None,
            },
            LockCrRequest::Lock { cr, pin } => match self.lock(cr, pin, host) {
                Ok(grant) => HypercallOutcome {
                    request: Some(request),
                    ret: HypercallRet::Success,
                    grant: Some(grant),
                    refusal: None,
                },
                Err(e) => HypercallOutcome {
                    request: Some(request),
                    ret: HypercallRet::Error(e.error()),
                    grant: None,
                    refusal: Some(Refusal::Lock(e)),
                },
            },
        };
        Some(outcome)
    }

    /// Check a guest write of `value` to control register `cr` (`heki_check_cr()`):
    /// denied iff it would clear a pinned bit. CRs other than 0 and 4 are always
    /// allowed. A VMM that emulates LMSW/CLTS (which the RFC does not check) can pass
    /// the resulting full CR0 value here too.
    pub const fn check_cr(&self, cr: u32, value: u64) -> CrCheck {
        self.pins.check_cr(cr, value)
    }

    /// Drop every pin. Not reachable by the guest; for a VMM that resets the VM on
    /// reboot (see the module docs). Returns the pins that were dropped.
    pub fn reset(&mut self) -> PinnedCrs {
        core::mem::take(&mut self.pins)
    }

    /// Apply `policy` at a guest reboot. Returns the pins dropped (empty for
    /// [`RebootPolicy::KeepPins`]).
    pub fn on_reboot(&mut self, policy: RebootPolicy) -> PinnedCrs {
        match policy {
            RebootPolicy::KeepPins => PinnedCrs::EMPTY,
            RebootPolicy::ResetPins => self.reset(),
        }
    }
}
