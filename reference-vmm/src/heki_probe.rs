// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Heki on the host: the heki-probe guest's hypercall arguments (numbers from
//! heki-policy), how to read its answers, and the Heki caps (listed, and
//! enabled only if heki-policy's probe finds real Heki support: on upstream
//! kernels their numbers belong to other caps).

#![deny(unsafe_code)]

use heki_policy::{HekiAbi as PolicyAbi, HypercallRet, LockCrRequest};

use crate::config::{HekiExits, Policy};
use crate::plan::CapStep;

/// CR4.SMEP, the bit the probe asks to pin.
pub const X86_CR4_SMEP: u64 = 1 << 20;

/// The ABI revision the probe speaks (v2 and v3 share the hypercall ABI).
pub const PROBE_ABI: PolicyAbi = PolicyAbi::RfcV2;

/// The two requests the probe guest makes.
pub const VERSION_QUERY: LockCrRequest = LockCrRequest::VersionQuery;
/// Lock CR4.SMEP.
pub const LOCK_CR4: LockCrRequest = LockCrRequest::Lock {
    cr: 4,
    pin: X86_CR4_SMEP,
};

/// (rdi, rsi, rdx) for the heki-probe guest: hypercall number, version-query
/// flag (a2 of the query), CR4 pin mask (a1 of the lock); from heki-policy.
pub fn guest_args() -> (u64, u64, u64) {
    let q = VERSION_QUERY.to_regs(PROBE_ABI).unwrap_or_default();
    let l = LOCK_CR4.to_regs(PROBE_ABI).unwrap_or_default();
    (q.nr, q.a2, l.a1)
}

/// A hypercall return value (rax) as heki-policy reads it, in words.
pub fn describe_answer(request: LockCrRequest, rax: u64) -> String {
    match request.interpret_return(rax, true) {
        Ok(HypercallRet::Error(e)) => format!(
            "{} ({e:?}{})",
            rax as i64,
            match e {
                heki_policy::KvmHcError::Nosys => ": unknown hypercall, this host has no Heki",
                _ => "",
            }
        ),
        Ok(HypercallRet::AbiVersion(v)) => format!("{v} (Heki ABI version {v})"),
        Ok(HypercallRet::Success) => "0 (success)".into(),
        Ok(other) => format!("{other:?}"),
        Err(_) => format!("{} (unexpected)", rax as i64),
    }
}

/// Heki cap steps under `policy`: enabled only when heki-policy's probe says
/// the host really has Heki for that ABI.
pub fn cap_steps(policy: &Policy, _check: &dyn Fn(u32) -> i32) -> Vec<CapStep> {
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
