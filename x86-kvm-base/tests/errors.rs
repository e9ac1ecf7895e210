// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Every error of the crate prints its own message once: the errors here are leaves (no
//! `source()`), produced by the public functions that return them.

use x86_kvm_base::cap::{plan, Requirement};
use x86_kvm_base::interruption::{
    check_entry_interruption, EventInjectionCaps, EventInjectionContext, InterruptionInfo,
    InterruptionType,
};
use x86_kvm_base::kvm_run::KvmRunExit;

#[test]
fn errors_are_leaves_with_one_message() {
    let missing = plan(218, false, Requirement::Required).unwrap_err();
    assert_eq!(
        test_support::assert_message_once(&missing),
        ["KVM capability 218 is not supported by this host's KVM"]
    );

    let truncated = KvmRunExit::from_kvm_run_bytes(&[0; 8]).unwrap_err();
    assert_eq!(test_support::assert_message_once(&truncated).len(), 1);

    // SDM 27.2.1.3: #GP (vector 13) delivers an error code.
    let gp = InterruptionInfo::new(13, InterruptionType::HardwareException, false);
    let violations = check_entry_interruption(
        gp,
        0,
        0,
        &EventInjectionCaps::default(),
        &EventInjectionContext::default(),
    );
    assert!(!violations.is_empty());
    for v in &violations {
        assert_eq!(test_support::assert_message_once(v).len(), 1);
    }
}
