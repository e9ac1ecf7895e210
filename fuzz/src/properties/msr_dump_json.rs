//! `msr_dump_json`: vmx-caps MSR dump JSON and `vmxcap config --dump`.

use super::common::assert_error_message;
use super::input::Input;
use super::vmx_caps_raw::{check_caps, ALL_FORMATS};
use vmx_caps::{CapsError, Dump};

/// `msr_dump_json`: MSR dump JSON parsing (`Dump::from_json`).
///
/// Garbage gives a typed error with a message; a dump that parses writes back to
/// canonical JSON that parses to the same dump (and is a fixed point of write∘parse);
/// a dump whose MSRs decode goes through the raw capability properties too.
pub fn msr_dump_json(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let dump = match Dump::from_json(text) {
        Ok(dump) => dump,
        Err(error) => {
            assert_error_message(&error);
            return;
        }
    };
    let json = dump.to_json();
    let again = Dump::from_json(&json)
        .unwrap_or_else(|e| panic!("canonical JSON of a parsed dump does not parse: {e}\n{json}"));
    assert_eq!(again, dump, "dump -> JSON -> dump is not the identity");
    assert_eq!(again.to_json(), json, "canonical JSON is not a fixed point");
    // `vmxcap config --dump`: exit status 0 / 1 (configuration fails) / 2 (unusable
    // input), JSON output that parses, an `error:` line for text.
    let policy = vmx_controls::VmcsPolicy::linux();
    let outcome = vmx_controls::config_from_dump_json(text, &policy);
    for format in [
        vmx_controls::report::Format::Text,
        vmx_controls::report::Format::Json,
    ] {
        let rendered = vmx_controls::report::render_outcome(&outcome, format);
        let expected = match &outcome {
            Ok(_) => 0,
            Err(vmx_controls::report::ConfigError::Setup(_)) => 1,
            Err(_) => 2,
        };
        assert_eq!(rendered.exit_status, expected, "vmxcap config exit status");
        if format == vmx_controls::report::Format::Json {
            serde_json::from_str::<serde::de::IgnoredAny>(&rendered.output)
                .unwrap_or_else(|e| panic!("config JSON does not parse: {e}"));
        } else if outcome.is_err() {
            assert!(rendered.output.starts_with("error: "), "text error output");
        }
    }
    match dump.caps() {
        Ok(caps) => {
            assert!(
                outcome.is_ok()
                    || matches!(outcome, Err(vmx_controls::report::ConfigError::Setup(_)))
            );
            check_caps(&caps, &ALL_FORMATS, &mut Input::new(&[]));
        }
        Err(error) => {
            assert_error_message(&error);
            assert!(
                matches!(error, CapsError::MissingMsr { .. }),
                "a parsed dump failed to decode with something other than a missing MSR: {error:?}"
            );
        }
    }
}
