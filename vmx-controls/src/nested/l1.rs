// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! What L2 gets: L1's own KVM run on the nested view.

use super::assumptions::NestedAssumptions;
use super::view::{nested_view, NestedError, NestedView};
use crate::setup::{setup_vmcs_config, SetupError, VmcsSetup};

/// L1's KVM on the nested view: does kvm_intel load in L1, with which VMCS
/// configuration, and what it reports to L2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct L1Outcome {
    /// L1's `setup_vmcs_config` on the nested view (an error: kvm_intel in L1 refuses to
    /// load).
    pub setup: Result<VmcsSetup, SetupError>,
    /// The nested view L1's KVM gives its L2 (`None` when L1's KVM does not load).
    pub l2: Option<Result<NestedView, NestedError>>,
}

impl L1Outcome {
    /// Whether kvm_intel loads in L1.
    pub fn loads(&self) -> bool {
        self.setup.is_ok()
    }
}

/// Runs L1's KVM, with the same module parameters and CET/SGX assumptions as L0, on
/// `view`. Host UMIP in L1 is inferred from the nested IA32_VMX_CR4_FIXED1 (L0 exposes
/// UMIP when the CPU has it or when it emulates it).
pub fn l1_config(view: &NestedView) -> L1Outcome {
    let mut a: NestedAssumptions = view.assumptions;
    a.host_umip = None;
    let setup = setup_vmcs_config(&view.caps, &a.l0_policy());
    let l2 = setup.is_ok().then(|| nested_view(&view.caps, &a));
    L1Outcome { setup, l2 }
}
