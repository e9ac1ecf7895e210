// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The KVM set-up a run does: each `KVM_ENABLE_CAP`, with its argument, and
//! whether this host supports it. `plan` prints it without creating a VM.

#![deny(unsafe_code)]

use serde::{Serialize, Serializer};

use crate::config::{HekiExits, NotifyMode, Policy};
use crate::exit::HekiAbi;

/// The capabilities a run enables, from kvm-bindings.
pub use kvm_bindings::{
    KVM_CAP_EXCEPTION_PAYLOAD, KVM_CAP_X86_NOTIFY_VMEXIT, KVM_CAP_X86_TRIPLE_FAULT_EVENT,
};

/// One `KVM_ENABLE_CAP` step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CapStep {
    /// Capability number.
    pub cap: u32,
    /// Linux name.
    pub name: &'static str,
    /// `args[0]`.
    #[serde(serialize_with = "hex")]
    pub arg: u64,
    /// `KVM_CHECK_EXTENSION` says the host has it.
    pub supported: bool,
    /// The VMM will call `KVM_ENABLE_CAP`.
    pub enable: bool,
    /// After a run: whether `KVM_ENABLE_CAP` succeeded (`None` = not tried).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Why the VMM wants it.
    pub why: &'static str,
    /// A warning when it cannot be enabled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

fn hex<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("0x{v:x}"))
}

/// notify-exit's configuration for `policy` (`None` when disabled).
pub fn notify_config(policy: &Policy) -> Option<notify_exit::NotifyConfig> {
    let mode = match policy.notify_mode {
        NotifyMode::Run => notify_exit::NotifyVmexitMode::Run,
        NotifyMode::InternalError => notify_exit::NotifyVmexitMode::InternalError,
        NotifyMode::Disable => return None,
    };
    Some(notify_exit::NotifyConfig {
        mode,
        window: policy.notify_window,
    })
}

/// The notify cap argument, computed by notify-exit: window in bits 63:32,
/// flags in 31:0 (`ENABLED | USER`, as QEMU does).
pub fn notify_arg(policy: &Policy) -> Option<u64> {
    notify_exit::cap::NotifyCapArg::for_config(&notify_config(policy)?).map(|a| a.raw())
}

/// The caps a run under `policy` enables, in order. `check` is `KVM_CHECK_EXTENSION`.
pub fn cap_steps(policy: &Policy, check: impl Fn(u32) -> i32) -> Vec<CapStep> {
    let mut steps = Vec::new();
    let tf = check(KVM_CAP_X86_TRIPLE_FAULT_EVENT) > 0;
    steps.push(CapStep {
        cap: KVM_CAP_X86_TRIPLE_FAULT_EVENT,
        name: "KVM_CAP_X86_TRIPLE_FAULT_EVENT",
        arg: 1,
        supported: tf,
        enable: tf,
        enabled: None,
        why: "lets the VMM synthesize a triple fault through KVM_SET_VCPU_EVENTS",
        warning: (!tf).then(|| {
            "host has no KVM_CAP_X86_TRIPLE_FAULT_EVENT: synthesized triple faults are refused"
                .to_string()
        }),
    });
    let ep = check(KVM_CAP_EXCEPTION_PAYLOAD) > 0;
    steps.push(CapStep {
        cap: KVM_CAP_EXCEPTION_PAYLOAD,
        name: "KVM_CAP_EXCEPTION_PAYLOAD",
        arg: 1,
        supported: ep,
        enable: ep,
        enabled: None,
        why: "injected exceptions carry their payload (CR2 of #PF) until delivery",
        warning: None,
    });
    if let Some(arg) = notify_arg(policy) {
        let nf = check(KVM_CAP_X86_NOTIFY_VMEXIT) > 0;
        steps.push(CapStep {
            cap: KVM_CAP_X86_NOTIFY_VMEXIT,
            name: "KVM_CAP_X86_NOTIFY_VMEXIT",
            arg,
            supported: nf,
            enable: nf,
            enabled: None,
            why: "exit when the guest blocks event windows for longer than the notify window",
            warning: (!nf).then(|| {
                "this host's KVM has no notify VM exit (KVM_CAP_X86_NOTIFY_VMEXIT = 0): \
                 notify exits cannot happen here; the run goes on without them"
                    .to_string()
            }),
        });
    }
    steps.extend(heki_cap_steps(policy, &check));
    steps
}

/// Whether a Heki ABI and Heki exits are both selected.
pub fn wants_heki_exits(policy: &Policy) -> bool {
    policy.heki_abi != HekiAbi::None && policy.heki_exits != HekiExits::None
}

/// Heki cap steps under `policy`: enabled only when heki-policy's probe says
/// the host really has Heki for that ABI.
pub fn heki_cap_steps(policy: &Policy, _check: &dyn Fn(u32) -> i32) -> Vec<CapStep> {
    let Some(abi) = policy.heki_abi.policy_abi() else {
        return Vec::new();
    };
    let Some(uapi) = abi.uapi() else {
        return Vec::new();
    };
    let support = kvm_ioctls::Kvm::new()
        .ok()
        .and_then(|k| heki_policy::kvm::probe(&k, abi).ok());
    let supported = matches!(support, Some(heki_policy::HekiSupport::Supported(_)));
    let mut v = Vec::new();
    let mut push = |cap: u32, name: &'static str| {
        v.push(CapStep {
            cap,
            name,
            arg: heki_policy::HekiExitReasons::VALID.bits(),
            supported,
            enable: false,
            enabled: None,
            why: "Heki exits for CR0 and CR4 (KVM_HEKI_EXIT_REASON_CR0 | _CR4)",
            warning: (!supported).then(|| {
                format!(
                    "not enabling {name} ({cap}): upstream KVM uses {cap} for {}, and heki-policy's probe finds no Heki here",
                    heki_policy::abi::upstream_cap_name(cap).unwrap_or("another cap")
                )
            }),
        })
    };
    if matches!(policy.heki_exits, HekiExits::Configure | HekiExits::All) {
        push(uapi.cap_configure(), "KVM_CAP_HEKI_CONFIGURE");
    }
    if matches!(policy.heki_exits, HekiExits::Denial | HekiExits::All) {
        push(uapi.cap_denial(), "KVM_CAP_HEKI_DENIAL");
    }
    v
}
