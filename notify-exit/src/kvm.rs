// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! KVM glue (feature `kvm`): probing, enabling the notify cap in the right order, and reading a
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
//! # The triple-fault event cap is vcpu-events'
//!
//! In `run` mode an invalid-context exit is answered with
//! [`NotifyAction::SynthesizeTripleFault`](crate::policy::NotifyAction), which the VMM
//! applies with `KVM_SET_VCPU_EVENTS` (`KVM_VCPUEVENT_VALID_TRIPLE_FAULT`); KVM accepts
//! that flag only once `KVM_CAP_X86_TRIPLE_FAULT_EVENT` is enabled on the VM. That cap
//! belongs to `KVM_SET_VCPU_EVENTS`, so the `vcpu-events` crate enables it
//! (`vcpu_events::kvm::enable_event_caps`, any time: KVM reads it at
//! `KVM_SET_VCPU_EVENTS`); this crate only probes it ([`probe_vm`]) and takes the outcome
//! as input: [`NotifySetup::needs_triple_fault_event`] says whether the policy needs it,
//! [`NotifySetup::policy`] takes the [`CapOutcome`] `enable_event_caps` returned
//! (`VmEventCaps::triple_fault_event`). This library never acts on a vCPU.

use std::os::raw::c_ulong;

use kvm_bindings::kvm_run;
use kvm_ioctls::{Kvm, VmFd};
use x86_kvm_base::cap::{enable_cap_request, plan};

use crate::cap::{
    NotifyCapArg, NotifyCaps, KVM_CAP_X86_NOTIFY_VMEXIT, KVM_CAP_X86_TRIPLE_FAULT_EVENT,
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
}

impl NotifySetup {
    /// A setup record: `config` was asked for and enabling `KVM_CAP_X86_NOTIFY_VMEXIT`
    /// gave `notify_vmexit` (the argument is [`NotifyCapArg::for_config`] when enabled).
    /// [`PreVcpuVm::finish`] returns the record of what it actually did; this builds one
    /// for a VM set up elsewhere (restored, or a saved configuration).
    pub const fn new(config: NotifyConfig, notify_vmexit: CapOutcome) -> Self {
        let notify_arg = if notify_vmexit.is_enabled() {
            NotifyCapArg::for_config(&config)
        } else {
            None
        };
        NotifySetup {
            config,
            notify_vmexit,
            notify_arg,
        }
    }

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

    /// The mode the exits KVM delivers are handled in: the configured one if the Notify
    /// VM exit is on, `disable` otherwise (any notify exit is then unexpected, see
    /// [`crate::policy`]).
    pub const fn effective_mode(&self) -> NotifyVmexitMode {
        if self.notify_vmexit.is_enabled() {
            self.config.mode
        } else {
            NotifyVmexitMode::Disable
        }
    }

    /// Whether the policy can ask for a triple fault, i.e. whether the VMM should enable
    /// `KVM_CAP_X86_TRIPLE_FAULT_EVENT` (with `vcpu_events::kvm::enable_event_caps`): the
    /// exit is on in `run` mode, where an invalid context is answered with
    /// [`NotifyAction::SynthesizeTripleFault`](crate::policy::NotifyAction). Without the
    /// cap that answer becomes a stop ([`StopReason::NoTripleFaultEvent`](crate::policy::StopReason)).
    pub const fn needs_triple_fault_event(&self) -> bool {
        matches!(self.effective_mode(), NotifyVmexitMode::Run)
    }

    /// The handling policy matching what was actually enabled: the
    /// [effective mode](Self::effective_mode), and `triple_fault_event`, what enabling
    /// `KVM_CAP_X86_TRIPLE_FAULT_EVENT` gave (`VmEventCaps::triple_fault_event` from
    /// `vcpu_events::kvm::enable_event_caps`; [`CapOutcome::NotRequested`] if the VMM
    /// did not enable it).
    ///
    /// ```
    /// use notify_exit::kvm::{CapOutcome, NotifySetup};
    /// use notify_exit::{NotifyConfig, NotifyVmexitMode, NotifyPolicy};
    ///
    /// let setup = NotifySetup::new(NotifyConfig::new(NotifyVmexitMode::Run, 0), CapOutcome::Enabled);
    /// assert!(setup.needs_triple_fault_event());
    /// assert_eq!(
    ///     setup.policy(CapOutcome::Enabled),
    ///     NotifyPolicy::new(NotifyVmexitMode::Run, true)
    /// );
    /// // The exit is not on: every notify exit is unexpected, whatever the cap.
    /// let off = NotifySetup::new(NotifyConfig::new(NotifyVmexitMode::Run, 0), CapOutcome::NotSupportedByHost);
    /// assert!(!off.needs_triple_fault_event());
    /// assert_eq!(off.policy(CapOutcome::NotRequested).mode, NotifyVmexitMode::Disable);
    /// ```
    pub const fn policy(&self, triple_fault_event: CapOutcome) -> NotifyPolicy {
        NotifyPolicy::new(self.effective_mode(), triple_fault_event.is_enabled())
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

    /// Ends the pre-vCPU phase: returns the VM, on which vCPUs may now be created, and
    /// what was enabled.
    pub fn finish(self) -> (VmFd, NotifySetup) {
        (self.vm, self.setup)
    }
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
        assert_eq!(setup.effective_mode(), NotifyVmexitMode::Run);
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
        assert_eq!(setup.effective_mode(), NotifyVmexitMode::Disable);
        let disable = NotifyConfig::new(NotifyVmexitMode::Disable, 0);
        setup.record_notify(&disable, CapOutcome::NotRequested, None);
        assert_eq!(setup.notify_vmexit, CapOutcome::NotRequested);
        assert_eq!(setup.config, disable);
    }

    #[test]
    fn setup_policy_follows_what_was_enabled() {
        let config = NotifyConfig::new(NotifyVmexitMode::InternalError, 7);
        let mut setup = NotifySetup::new(config, CapOutcome::Enabled);
        assert_eq!(setup.notify_arg, NotifyCapArg::for_config(&config));
        // internal-error never synthesizes a triple fault: the cap is not needed.
        assert!(!setup.needs_triple_fault_event());
        assert_eq!(
            setup.policy(CapOutcome::Enabled),
            NotifyPolicy::new(NotifyVmexitMode::InternalError, true)
        );
        setup.notify_vmexit = CapOutcome::NotSupportedByHost;
        assert_eq!(
            setup.policy(CapOutcome::NotSupportedByHost),
            NotifyPolicy::new(NotifyVmexitMode::Disable, false)
        );
        // run mode with the exit on needs the cap; the outcome decides the policy.
        let run = NotifySetup::new(
            NotifyConfig::new(NotifyVmexitMode::Run, 0),
            CapOutcome::Enabled,
        );
        assert!(run.needs_triple_fault_event());
        assert!(run.policy(CapOutcome::Enabled).triple_fault_event_enabled);
        assert!(
            !run.policy(CapOutcome::NotRequested)
                .triple_fault_event_enabled
        );
        // Not enabled: no argument recorded.
        let off = NotifySetup::new(
            NotifyConfig::new(NotifyVmexitMode::Run, 0),
            CapOutcome::NotSupportedByHost,
        );
        assert_eq!(off.notify_arg, None);
        assert!(!off.needs_triple_fault_event());
    }
}
