// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! KVM glue (feature `kvm`): probing, enabling the caps in the right order, and reading a
//! notify exit out of a live `kvm_run`. Every ioctl of the crate is here; the crate has no
//! `unsafe` (the exit union is read by [`x86_kvm_base::kvm_run`]).
//!
//! # Ordering by construction
//!
//! `KVM_CAP_X86_NOTIFY_VMEXIT` must be enabled before the first vCPU is created (KVM
//! returns `-EINVAL` afterwards, and a vCPU created earlier would never get the exit).
//! [`PreVcpuVm`] encodes that: it *owns* the [`VmFd`] and does not lend it out, so no
//! vCPU can be created through it; [`PreVcpuVm::finish`] consumes it and hands the `VmFd`
//! back, together with a [`NotifySetup`] summary, for the VMM to go on with memory and
//! vCPUs. [`PreVcpuVm::create`] makes the VM itself, which proves no vCPU exists;
//! [`PreVcpuVm::from_new_vm`] accepts a `VmFd` the caller just created (the caller vouches
//! for it; if vCPUs exist KVM's `-EINVAL` comes back as [`KvmSetupError::EnableCap`]).
//!
//! # Outcomes
//!
//! A host without the Notify VM exit (every AMD host, Intel before Sapphire Rapids, nested
//! KVM that does not expose it) is an ordinary situation, reported as
//! [`CapOutcome::NotSupportedByHost`] — QEMU skips the cap silently in that case too. With
//! [`Requirement::Required`] it becomes [`KvmSetupError::NotSupportedByHost`] instead.
//!
//! Applying a [`NotifyAction::SynthesizeTripleFault`](crate::policy::NotifyAction) is the
//! VMM's job (`KVM_SET_VCPU_EVENTS` with `KVM_VCPUEVENT_VALID_TRIPLE_FAULT`, e.g. through
//! the `vcpu-events` crate); this library never acts on a vCPU.

use std::os::raw::c_ulong;

use kvm_bindings::kvm_run;
use kvm_ioctls::{Kvm, VmFd};
use x86_kvm_base::cap::{enable_cap_request, plan};

use crate::cap::{
    NotifyCapArg, NotifyCaps, KVM_CAP_X86_NOTIFY_VMEXIT, KVM_CAP_X86_TRIPLE_FAULT_EVENT,
    TRIPLE_FAULT_EVENT_ENABLE_ARG,
};
use crate::config::{NotifyConfig, NotifyVmexitMode};
use crate::exit::{self, DecodeError, NotifyExit};

use crate::policy::NotifyPolicy;
/// [`CapOutcome`] and [`Requirement`] moved to [`x86_kvm_base::cap`], shared with
/// vcpu-events.
pub use x86_kvm_base::cap::{CapOutcome, Requirement};

/// Probes both caps with `KVM_CHECK_EXTENSION` on the system fd (`/dev/kvm`).
pub fn probe_kvm(kvm: &Kvm) -> NotifyCaps {
    NotifyCaps::from_check_extension(
        kvm.check_extension_raw(c_ulong::from(KVM_CAP_X86_NOTIFY_VMEXIT)),
        kvm.check_extension_raw(c_ulong::from(KVM_CAP_X86_TRIPLE_FAULT_EVENT)),
    )
}

/// Probes both caps with `KVM_CHECK_EXTENSION` on a VM fd (the answer for that VM type).
pub fn probe_vm(vm: &VmFd) -> NotifyCaps {
    NotifyCaps::from_check_extension(
        vm.check_extension_raw(c_ulong::from(KVM_CAP_X86_NOTIFY_VMEXIT)),
        vm.check_extension_raw(c_ulong::from(KVM_CAP_X86_TRIPLE_FAULT_EVENT)),
    )
}

/// Why setting up the caps failed.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum KvmSetupError {
    /// `KVM_CREATE_VM` failed.
    #[error("KVM_CREATE_VM failed")]
    CreateVm(#[source] kvm_ioctls::Error),
    /// The cap is absent and the caller required it.
    #[error("KVM capability {cap} is not supported by this host's KVM")]
    NotSupportedByHost {
        /// The capability number.
        cap: u32,
    },
    /// The host has the cap but `KVM_ENABLE_CAP` failed (for 219: `-EINVAL` if a vCPU
    /// already exists).
    #[error("KVM_ENABLE_CAP({cap}, {arg:#x}) failed")]
    EnableCap {
        /// The capability number.
        cap: u32,
        /// `args[0]`.
        arg: u64,
        /// The errno.
        #[source]
        source: kvm_ioctls::Error,
    },
}

/// The result of the pre-vCPU setup, for the VMM's policy.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct NotifySetup {
    /// The configuration asked for.
    pub config: NotifyConfig,
    /// What happened to `KVM_CAP_X86_NOTIFY_VMEXIT`.
    pub notify_vmexit: CapOutcome,
    /// The argument passed when it was enabled.
    pub notify_arg: Option<NotifyCapArg>,
    /// What happened to `KVM_CAP_X86_TRIPLE_FAULT_EVENT`.
    pub triple_fault_event: CapOutcome,
}

impl NotifySetup {
    /// Records the result of one `enable_notify_vmexit` call. KVM keeps an enabled exit
    /// enabled, so once [`CapOutcome::Enabled`] the outcome, argument and mode stay those
    /// of the last call that actually enabled it.
    fn record_notify(
        &mut self,
        config: &NotifyConfig,
        outcome: CapOutcome,
        arg: Option<NotifyCapArg>,
    ) {
        if outcome.is_enabled() {
            self.config = *config;
            self.notify_vmexit = outcome;
            self.notify_arg = arg;
        } else if !self.notify_vmexit.is_enabled() {
            self.config = *config;
            self.notify_vmexit = outcome;
            self.notify_arg = None;
        }
    }

    /// The handling policy matching what was actually enabled. If the Notify VM exit is
    /// not on (disabled or unsupported), the mode is `disable`: any notify exit is then
    /// unexpected (see [`crate::policy`]).
    pub const fn policy(&self) -> NotifyPolicy {
        let mode = if self.notify_vmexit.is_enabled() {
            self.config.mode
        } else {
            NotifyVmexitMode::Disable
        };
        NotifyPolicy::new(mode, self.triple_fault_event.is_enabled())
    }
}

/// A VM that has no vCPU yet: the only place the notify cap can be enabled. See the
/// module docs for how this enforces the order.
#[derive(Debug)]
pub struct PreVcpuVm {
    vm: VmFd,
    caps: NotifyCaps,
    setup: NotifySetup,
}

impl PreVcpuVm {
    /// Creates a VM (`KVM_CREATE_VM`, default type); it has no vCPU by construction.
    pub fn create(kvm: &Kvm) -> Result<Self, KvmSetupError> {
        let vm = kvm.create_vm().map_err(KvmSetupError::CreateVm)?;
        Ok(Self::from_new_vm(vm))
    }

    /// Wraps a VM the caller has just created and on which it has created no vCPU.
    pub fn from_new_vm(vm: VmFd) -> Self {
        let caps = probe_vm(&vm);
        PreVcpuVm {
            vm,
            caps,
            setup: NotifySetup {
                config: NotifyConfig::new(NotifyVmexitMode::Disable, 0),
                notify_vmexit: CapOutcome::NotRequested,
                notify_arg: None,
                triple_fault_event: CapOutcome::NotRequested,
            },
        }
    }

    /// What `KVM_CHECK_EXTENSION` said on this VM.
    pub fn caps(&self) -> NotifyCaps {
        self.caps
    }

    /// Enables `KVM_CAP_X86_NOTIFY_VMEXIT` with `(window << 32) | ENABLED | USER` unless
    /// the mode is `disable` ([`CapOutcome::NotRequested`], even when required). A later
    /// call overwrites an earlier one's window and mode, as in KVM.
    ///
    /// KVM cannot turn the exit off again (`KVM_ENABLE_CAP` without `ENABLED` is
    /// `-EINVAL`), so a `disable` call after a successful enable returns
    /// [`CapOutcome::NotRequested`] (nothing was called) but the [`NotifySetup`] keeps
    /// reporting the earlier enable, and its [`policy`](NotifySetup::policy) keeps handling
    /// the exits KVM will deliver. A failed call leaves the setup as it was.
    pub fn enable_notify_vmexit(
        &mut self,
        config: &NotifyConfig,
        requirement: Requirement,
    ) -> Result<CapOutcome, KvmSetupError> {
        let Some(arg) = NotifyCapArg::for_config(config) else {
            self.setup
                .record_notify(config, CapOutcome::NotRequested, None);
            return Ok(CapOutcome::NotRequested);
        };
        let outcome = enable(
            &self.vm,
            self.caps.notify_vmexit,
            KVM_CAP_X86_NOTIFY_VMEXIT,
            arg.raw(),
            requirement,
        )?;
        self.setup.record_notify(config, outcome, Some(arg));
        Ok(outcome)
    }

    /// Enables `KVM_CAP_X86_TRIPLE_FAULT_EVENT` (`args[0] = 1`), which lets the VMM apply
    /// [`NotifyAction::SynthesizeTripleFault`](crate::policy::NotifyAction).
    pub fn enable_triple_fault_event(
        &mut self,
        requirement: Requirement,
    ) -> Result<CapOutcome, KvmSetupError> {
        let outcome = enable(
            &self.vm,
            self.caps.triple_fault_event,
            KVM_CAP_X86_TRIPLE_FAULT_EVENT,
            TRIPLE_FAULT_EVENT_ENABLE_ARG,
            requirement,
        )?;
        self.setup.triple_fault_event = outcome;
        Ok(outcome)
    }

    /// Ends the pre-vCPU phase: returns the VM, on which vCPUs may now be created, and
    /// what was enabled.
    pub fn finish(self) -> (VmFd, NotifySetup) {
        (self.vm, self.setup)
    }
}

/// Enables `KVM_CAP_X86_TRIPLE_FAULT_EVENT` on any VM. KVM accepts it after vCPUs exist
/// (it is read at `KVM_SET_VCPU_EVENTS` time), so this needs no [`PreVcpuVm`].
pub fn enable_triple_fault_event(
    vm: &VmFd,
    requirement: Requirement,
) -> Result<CapOutcome, KvmSetupError> {
    enable(
        vm,
        probe_vm(vm).triple_fault_event,
        KVM_CAP_X86_TRIPLE_FAULT_EVENT,
        TRIPLE_FAULT_EVENT_ENABLE_ARG,
        requirement,
    )
}

fn enable(
    vm: &VmFd,
    supported: bool,
    cap: u32,
    arg: u64,
    requirement: Requirement,
) -> Result<CapOutcome, KvmSetupError> {
    match plan(cap, supported, requirement) {
        Ok(None) => {}
        Ok(Some(skipped)) => return Ok(skipped),
        Err(missing) => return Err(KvmSetupError::NotSupportedByHost { cap: missing.cap }),
    }
    vm.enable_cap(&enable_cap_request(cap, arg))
        .map_err(|source| KvmSetupError::EnableCap { cap, arg, source })?;
    Ok(CapOutcome::Enabled)
}

/// Decodes the notify exit in a live `kvm_run` (from `VcpuFd::get_kvm_run()` after
/// `VcpuExit::Unsupported(37)`). Same as [`exit::from_kvm_run`], which needs no feature.
pub fn exit_from_kvm_run(run: &kvm_run) -> Result<NotifyExit, DecodeError> {
    exit::from_kvm_run(run)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::{KVM_EXIT_NOTIFY, KVM_NOTIFY_CONTEXT_INVALID};

    #[test]
    fn decodes_a_kvm_run_value() {
        let mut run = kvm_run {
            exit_reason: KVM_EXIT_NOTIFY,
            ..Default::default()
        };
        run.__bindgen_anon_1.notify.flags = KVM_NOTIFY_CONTEXT_INVALID | 0x100;
        let e = exit_from_kvm_run(&run).unwrap();
        assert!(e.context_invalid());
        assert_eq!(e.flags.unknown_bits(), 0x100);
        run.exit_reason = kvm_bindings::KVM_EXIT_HLT;
        assert_eq!(
            exit_from_kvm_run(&run),
            Err(DecodeError::NotNotifyExit {
                exit_reason: kvm_bindings::KVM_EXIT_HLT
            })
        );
    }

    /// The message names the ioctl once; the errno is the `#[source]`, not repeated.
    #[test]
    fn errors_print_their_message_once() {
        use std::error::Error;
        let e = KvmSetupError::EnableCap {
            cap: KVM_CAP_X86_NOTIFY_VMEXIT,
            arg: 3,
            source: kvm_ioctls::Error::new(22),
        };
        assert_eq!(e.to_string(), "KVM_ENABLE_CAP(219, 0x3) failed");
        assert_eq!(
            e.source().unwrap().to_string(),
            "Invalid argument (os error 22)"
        );
        let e = KvmSetupError::CreateVm(kvm_ioctls::Error::new(24));
        assert_eq!(e.to_string(), "KVM_CREATE_VM failed");
        assert!(e.source().is_some());
    }

    fn empty_setup() -> NotifySetup {
        NotifySetup {
            config: NotifyConfig::new(NotifyVmexitMode::Disable, 0),
            notify_vmexit: CapOutcome::NotRequested,
            notify_arg: None,
            triple_fault_event: CapOutcome::NotRequested,
        }
    }

    #[test]
    fn disable_after_enable_keeps_reporting_the_enabled_exit() {
        let run = NotifyConfig::new(NotifyVmexitMode::Run, 128);
        let arg = NotifyCapArg::for_config(&run);
        let mut setup = empty_setup();
        setup.record_notify(&run, CapOutcome::Enabled, arg);
        let disable = NotifyConfig::new(NotifyVmexitMode::Disable, 0);
        setup.record_notify(&disable, CapOutcome::NotRequested, None);
        // KVM still delivers notify exits: the setup and the policy must say so.
        assert_eq!(setup.notify_vmexit, CapOutcome::Enabled);
        assert_eq!(setup.notify_arg, arg);
        assert_eq!(setup.config, run);
        assert_eq!(setup.policy().mode, NotifyVmexitMode::Run);
        // A later enable with another window overwrites, as KVM does.
        let ie = NotifyConfig::new(NotifyVmexitMode::InternalError, 7);
        setup.record_notify(&ie, CapOutcome::Enabled, NotifyCapArg::for_config(&ie));
        assert_eq!(setup.config, ie);
        assert_eq!(setup.notify_arg.map(NotifyCapArg::window), Some(7));
    }

    #[test]
    fn unsupported_or_disabled_notify_is_recorded_as_such() {
        let mut setup = empty_setup();
        let run = NotifyConfig::new(NotifyVmexitMode::Run, 0);
        setup.record_notify(&run, CapOutcome::NotSupportedByHost, None);
        assert_eq!(setup.notify_vmexit, CapOutcome::NotSupportedByHost);
        assert_eq!(setup.config, run);
        assert_eq!(setup.policy().mode, NotifyVmexitMode::Disable);
        let disable = NotifyConfig::new(NotifyVmexitMode::Disable, 0);
        setup.record_notify(&disable, CapOutcome::NotRequested, None);
        assert_eq!(setup.notify_vmexit, CapOutcome::NotRequested);
        assert_eq!(setup.config, disable);
    }

    #[test]
    fn setup_policy_follows_what_was_enabled() {
        let config = NotifyConfig::new(NotifyVmexitMode::InternalError, 7);
        let mut setup = NotifySetup {
            config,
            notify_vmexit: CapOutcome::Enabled,
            notify_arg: NotifyCapArg::for_config(&config),
            triple_fault_event: CapOutcome::Enabled,
        };
        assert_eq!(
            setup.policy(),
            NotifyPolicy::new(NotifyVmexitMode::InternalError, true)
        );
        setup.notify_vmexit = CapOutcome::NotSupportedByHost;
        setup.triple_fault_event = CapOutcome::NotSupportedByHost;
        assert_eq!(
            setup.policy(),
            NotifyPolicy::new(NotifyVmexitMode::Disable, false)
        );
    }
}
