// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Helpers shared by the integration tests of heki-policy.

use heki_policy::HypercallRegs;

/// The hypercall registers `nr` (rax) and `a0`..`a2` (rbx, rcx, rdx); `a3`
/// (rsi) is 0 — `KVM_HC_LOCK_CR_UPDATE` takes three arguments.
pub fn regs(nr: u64, a0: u64, a1: u64, a2: u64) -> HypercallRegs {
    HypercallRegs {
        nr,
        a0,
        a1,
        a2,
        a3: 0,
    }
}
