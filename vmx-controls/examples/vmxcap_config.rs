// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! What `vmxcap config` does, as a stand-alone example:
//!
//! ```text
//! cargo run -p vmx-controls --example vmxcap_config -- \
//!     --dump vmx-controls/tests/data/tigerlake-i5-1135g7.json \
//!     [--on-inconsistent error|sanitize] [--format text|json]
//! ```
//!
//! Exit status: 0 configuration computed, 1 configuration fails, 2 unusable input or
//! bad arguments.

use std::path::PathBuf;
use std::process::ExitCode;

use vmx_controls::report::{config_from_dump_file, render_outcome, Format};
use vmx_controls::{OnInconsistent, VmcsPolicy, EXIT_UNUSABLE_INPUT};

fn usage(msg: &str) -> ExitCode {
    eprintln!("error: {msg}");
    eprintln!(
        "usage: vmxcap_config --dump FILE [--on-inconsistent error|sanitize] [--format text|json]"
    );
    ExitCode::from(EXIT_UNUSABLE_INPUT as u8)
}

fn main() -> ExitCode {
    let mut dump: Option<PathBuf> = None;
    let mut on_inconsistent = OnInconsistent::Error;
    let mut format = Format::Text;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let Some(value) = args.next() else {
            return usage(&format!("{arg} needs a value"));
        };
        match arg.as_str() {
            "--dump" => dump = Some(PathBuf::from(value)),
            "--on-inconsistent" => match value.parse() {
                Ok(v) => on_inconsistent = v,
                Err(e) => return usage(&e.to_string()),
            },
            "--format" => match value.parse() {
                Ok(v) => format = v,
                Err(e) => return usage(&e.to_string()),
            },
            _ => return usage(&format!("unknown argument {arg}")),
        }
    }
    let Some(dump) = dump else {
        return usage("--dump is required");
    };
    let policy = VmcsPolicy::linux().with_on_inconsistent(on_inconsistent);
    let outcome = config_from_dump_file(&dump, &policy);
    let rendered = render_outcome(&outcome, format);
    if outcome.is_err() && format == Format::Text {
        eprint!("{}", rendered.output);
    } else {
        print!("{}", rendered.output);
    }
    // Statuses are 0, 1 or 2.
    ExitCode::from(u8::try_from(rendered.exit_status).unwrap_or(1))
}
