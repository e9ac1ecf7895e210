// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Every error prints its own message once and leaves the cause to `source()`, so
//! anyhow's `{:#}` and `error::message_chain` print each cause once.

use std::path::Path;

use vmx_caps::error::message_chain;
use vmx_caps::{CapsError, RawMsrs, VmxCaps};

#[test]
fn io_errors_keep_the_cause_in_source() {
    // `source::read_host_from` with a missing /proc/cpuinfo: an I/O error with context.
    let missing = Path::new("/nonexistent/vmx-caps-test/cpuinfo");
    let e = vmx_caps::source::read_host_from(missing, Path::new("/nonexistent"), 0).unwrap_err();
    assert!(matches!(e, CapsError::Io { .. }), "{e:?}");
    let chain = test_support::assert_message_once(&e);
    assert_eq!(chain.len(), 2, "{chain:?}");
    assert_eq!(chain[0], missing.display().to_string());
    // The one-line form a tool prints: context, then the OS error, once.
    assert_eq!(message_chain(&e), chain.join(": "));
    assert_eq!(message_chain(&e).matches("No such file").count(), 1);
}

#[test]
fn leaf_errors_have_one_message() {
    // No IA32_VMX_BASIC: a required MSR is missing (no source).
    let e = VmxCaps::from_raw(RawMsrs::new()).unwrap_err();
    assert_eq!(test_support::assert_message_once(&e).len(), 1);
    assert_eq!(message_chain(&e), e.to_string());
}
