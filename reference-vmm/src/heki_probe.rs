// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Heki on the host: the heki-probe guest's hypercall arguments (numbers from
//! heki-policy), how to read its answers, and the Heki caps (listed, and
//! enabled only if heki-policy's probe finds real Heki support: on upstream
//! kernels their numbers belong to other caps).

#![deny(unsafe_code)]

use heki_policy::{HekiAbi as PolicyAbi, HypercallRet, LockCrRequest};

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
