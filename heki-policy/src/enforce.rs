//! The hypervisor side of one VM: pins, cap state, and the exits KVM would produce.
//!
//! [`HekiVm`] combines a [`PinPolicy`] with the caps' [`HekiCapState`] and answers the
//! two events of the RFC exactly as KVM with Heki v2/v3 does:
//! - `KVM_HC_LOCK_CR_UPDATE` → RAX, plus a `KVM_EXIT_HEKI_CONFIGURE` if enabled for that
//!   CR (the pin is applied first; the guest sees 0 either way);
//! - a MOV to CR0/CR4 → allowed, or denied with `#GP(0)`, preceded by a
//!   `KVM_EXIT_HEKI_DENIAL` if enabled for that CR.
//!
//! Useful for a userspace hypervisor, a stand-in for tests and replay, and to produce
//! exits for a VMM's [`HekiExitHandler`](crate::handler::HekiExitHandler).
//!
//! RFC v1 enforced differently: its `heki_check_cr()` sat in `vmx_set_cr0()` /
//! `vmx_set_cr4()` and a blocked write simply returned, i.e. the write was dropped
//! without `#GP` (on every path into those functions, `KVM_SET_SREGS` included), and
//! `emulator_set_cr()` returned `-KVM_EPERM` as an emulator result (v1 5/9). For a
//! [`PinPolicy`] of [`HekiAbi::RfcV1`], read [`CrWriteVerdict::InjectGp`] as "blocked";
//! the verdict does not model v1's silent drop.

#![deny(unsafe_code)]

use crate::abi::{HekiAbi, HekiCap};
use crate::cap::{CapError, HekiCapState};
use crate::exit::{HekiExit, HekiExitReason};
use crate::hypercall::{CallerMode, HypercallRegs};
use crate::policy::{CrCheck, HostCrs, HypercallOutcome, PinPolicy};

/// What happens to a guest MOV to CR.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CrWriteVerdict {
    /// The write proceeds.
    Allow,
    /// The write is blocked; `#GP(0)` is injected, the instruction is not skipped.
    InjectGp {
        /// The pinned bits the write would clear.
        cleared: u64,
    },
    /// The write is blocked; exit to userspace first with this denial exit, then
    /// inject `#GP(0)` on the next `KVM_RUN`.
    ExitThenGp {
        /// The exit for userspace.
        exit: HekiExit,
        /// The pinned bits the write would clear.
        cleared: u64,
    },
}

/// Refused `KVM_ENABLE_CAP`.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum EnableCapError {
    /// The revision has no caps (RFC v1): the kernel's default `-EINVAL`.
    #[error("{0} has no Heki caps: -EINVAL")]
    NoUapi(HekiAbi),
    /// Bad argument.
    #[error(transparent)]
    Arg(#[from] CapError),
}

/// One VM's Heki state on the hypervisor side.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HekiVm {
    policy: PinPolicy,
    caps: HekiCapState,
}

impl HekiVm {
    /// A new VM: no pins, both caps disabled.
    pub const fn new(policy: PinPolicy) -> Self {
        HekiVm {
            policy,
            caps: HekiCapState::new(),
        }
    }
    /// The pin policy.
    pub const fn policy(&self) -> &PinPolicy {
        &self.policy
    }
    /// The pin policy, mutably (reset at reboot).
    pub fn policy_mut(&mut self) -> &mut PinPolicy {
        &mut self.policy
    }
    /// The cap state.
    pub const fn caps(&self) -> HekiCapState {
        self.caps
    }
    /// VM-level `KVM_ENABLE_CAP` of a Heki cap.
    pub fn enable_cap(&mut self, cap: HekiCap, arg: u64) -> Result<(), EnableCapError> {
        if self.policy.abi().uapi().is_none() {
            return Err(EnableCapError::NoUapi(self.policy.abi()));
        }
        self.caps.enable(cap, arg)?;
        Ok(())
    }
    /// A hypercall: the outcome and, when `KVM_CAP_HEKI_CONFIGURE` covers the CR and the
    /// pin was applied, the configure exit to deliver before the guest resumes.
    /// `None` when the registers are not this revision's `KVM_HC_LOCK_CR_UPDATE`.
    pub fn on_hypercall(
        &mut self,
        regs: HypercallRegs,
        mode: CallerMode,
        host: HostCrs,
    ) -> Option<(HypercallOutcome, Option<HekiExit>)> {
        let outcome = self.policy.handle_hypercall(regs, mode, host)?;
        let exit = outcome.grant.and_then(|g| {
            let cr = g.cr.number();
            (self.policy.abi().uapi().is_some() && self.caps.exits_for(HekiCap::Configure, cr))
                .then_some(())
                .and(HekiExitReason::for_cr(cr))
                .map(|reason| HekiExit::configure(reason, g.applied))
        });
        Some((outcome, exit))
    }
    /// A guest MOV of `value` to control register `cr`.
    pub fn on_cr_write(&self, cr: u32, value: u64) -> CrWriteVerdict {
        match self.policy.check_cr(cr, value) {
            CrCheck::Allow => CrWriteVerdict::Allow,
            CrCheck::Deny { cleared } => match HekiExitReason::for_cr(cr) {
                Some(reason) if self.caps.exits_for(HekiCap::Denial, cr) => {
                    CrWriteVerdict::ExitThenGp {
                        exit: HekiExit::denial(reason, value),
                        cleared,
                    }
                }
                _ => CrWriteVerdict::InjectGp { cleared },
            },
        }
    }
}
