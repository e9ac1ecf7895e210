//! `KVM_CAP_HEKI_CONFIGURE` / `KVM_CAP_HEKI_DENIAL` semantics (RFC v2 03/19).
//!
//! Both caps are VM-level (`KVM_ENABLE_CAP` on the VM fd). `args[0]` is a bitmask of
//! `KVM_HEKI_EXIT_REASON_*` ([`HekiExitReasons`]): unknown bits → `-EINVAL`; otherwise
//! the mask is *assigned* (the last call wins, it can narrow or clear), whether or not
//! vCPUs exist. `KVM_CHECK_EXTENSION` on either cap returns the valid mask
//! (CR0 | CR4 = 3) — in the RFC diff even when the kernel lacks `CONFIG_HEKI`.
//! Cap *numbers* depend on the revision: see [`HekiUapi`](crate::abi::HekiUapi).

#![deny(unsafe_code)]

use crate::abi::HekiCap;
use bitflags::bitflags;

bitflags! {
    /// `KVM_HEKI_EXIT_REASON_*`: the enable argument of both caps, and (one bit at a
    /// time) the `reason` of both exits. Unknown bits are retained so they can be
    /// reported.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct HekiExitReasons: u64 {
        /// `KVM_HEKI_EXIT_REASON_CR0` (`1ULL << 0`).
        const CR0 = 1 << 0;
        /// `KVM_HEKI_EXIT_REASON_CR4` (`1ULL << 1`).
        const CR4 = 1 << 1;
        const _ = !0;
    }
}

impl HekiExitReasons {
    /// Every defined reason: what `KVM_CHECK_EXTENSION` returns for both caps.
    pub const VALID: HekiExitReasons = HekiExitReasons::CR0.union(HekiExitReasons::CR4);

    /// The reason bit of control register `cr` (0 or 4).
    pub const fn for_cr(cr: u32) -> Option<HekiExitReasons> {
        match cr {
            0 => Some(HekiExitReasons::CR0),
            4 => Some(HekiExitReasons::CR4),
            _ => None,
        }
    }

    /// Bits no revision defines.
    pub const fn unknown(self) -> u64 {
        self.bits() & !Self::VALID.bits()
    }

    /// Validate a `KVM_ENABLE_CAP` `args[0]` as the RFC does: unknown bits are rejected.
    pub const fn from_enable_arg(arg: u64) -> Result<HekiExitReasons, CapError> {
        let reasons = HekiExitReasons::from_bits_retain(arg);
        if reasons.unknown() != 0 {
            Err(CapError::UnknownReasons {
                arg,
                unknown: reasons.unknown(),
            })
        } else {
            Ok(reasons)
        }
    }

    /// The `KVM_ENABLE_CAP` `args[0]` for these reasons (refuses unknown bits, so a
    /// caller never sends something the kernel would reject).
    pub const fn to_enable_arg(self) -> Result<u64, CapError> {
        match Self::from_enable_arg(self.bits()) {
            Ok(r) => Ok(r.bits()),
            Err(e) => Err(e),
        }
    }
}

/// `KVM_CHECK_EXTENSION` value of both Heki caps on a Heki kernel.
pub const CHECK_EXTENSION_VALUE: u64 = HekiExitReasons::VALID.bits();

/// A refused `KVM_ENABLE_CAP` argument.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum CapError {
    /// `args[0]` has bits outside CR0 | CR4: `-EINVAL`.
    #[error("enable argument {arg:#x} has unknown reason bits {unknown:#x}: -EINVAL")]
    UnknownReasons {
        /// The raw argument.
        arg: u64,
        /// The unknown bits.
        unknown: u64,
    },
}

/// Which CR events a VM asked to exit to userspace for (the kernel side of both caps).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct HekiCapState {
    configure: HekiExitReasons,
    denial: HekiExitReasons,
}

impl HekiCapState {
    /// Both caps disabled (the state of a new VM).
    pub const fn new() -> Self {
        HekiCapState {
            configure: HekiExitReasons::empty(),
            denial: HekiExitReasons::empty(),
        }
    }
    /// `KVM_ENABLE_CAP(cap, args[0] = arg)`: validate and assign (last call wins).
    pub fn enable(&mut self, cap: HekiCap, arg: u64) -> Result<(), CapError> {
        let reasons = HekiExitReasons::from_enable_arg(arg)?;
        match cap {
            HekiCap::Configure => self.configure = reasons,
            HekiCap::Denial => self.denial = reasons,
        }
        Ok(())
    }
    /// The reasons enabled for `cap`.
    pub const fn enabled(&self, cap: HekiCap) -> HekiExitReasons {
        match cap {
            HekiCap::Configure => self.configure,
            HekiCap::Denial => self.denial,
        }
    }
    /// Whether events of `cap` on control register `cr` exit to userspace.
    pub const fn exits_for(&self, cap: HekiCap, cr: u32) -> bool {
        match HekiExitReasons::for_cr(cr) {
            Some(bit) => self.enabled(cap).contains(bit),
            None => false,
        }
    }
}
