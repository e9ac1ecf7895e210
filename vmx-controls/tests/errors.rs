// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Every error prints its own message once and leaves the cause to `source()`; the JSON
//! error report and the text output print the whole chain (`message_chain`), each cause
//! once, exactly as before the causes moved to `source()`.

use vmx_caps::CapsError;
use vmx_controls::nested::{CompatError, NestedError};
use vmx_controls::report::{render_outcome, Format};
use vmx_controls::{ConfigError, SetupError};

fn io_error() -> CapsError {
    CapsError::io(
        "fleet/host1.json",
        std::io::Error::from(std::io::ErrorKind::NotFound),
    )
}

#[test]
fn config_errors_print_each_cause_once() {
    let e = ConfigError::from(io_error());
    let chain = test_support::assert_message_once(&e);
    assert_eq!(
        chain,
        ["unusable input", "fleet/host1.json", "entity not found"]
    );
    // What `vmxcap config` prints and reports: the same line as when the messages
    // embedded their causes.
    assert_eq!(
        e.report().error.message,
        "unusable input: fleet/host1.json: entity not found"
    );
    let out = render_outcome(&Err(e), Format::Text);
    assert_eq!(
        out.output,
        "error: unusable input: fleet/host1.json: entity not found\n"
    );
    assert_eq!(out.exit_status, vmx_controls::EXIT_UNUSABLE_INPUT);

    let setup = SetupError::EptCapWithoutEnableEpt { ept_cap: 0x4141 };
    let e = ConfigError::from(setup.clone());
    let chain = test_support::assert_message_once(&e);
    assert_eq!(chain, ["configuration fails".to_owned(), setup.to_string()]);
    assert_eq!(e.report().error.kind, setup.kind());
}

#[test]
fn nested_errors_print_each_cause_once() {
    let setup = SetupError::EptCapWithoutEnableEpt { ept_cap: 0x4141 };
    for e in [
        &NestedError::from(setup.clone()) as &(dyn std::error::Error + 'static),
        &CompatError::from(setup.clone()),
    ] {
        let chain = test_support::assert_message_once(e);
        assert_eq!(chain.len(), 2, "{chain:?}");
        assert_eq!(chain[1], setup.to_string());
    }
}
