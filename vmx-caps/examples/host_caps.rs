// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! This host's VMX capabilities as KVM offers them to a nested guest, read with plain
//! kvm-ioctls (`KVM_GET_MSR_FEATURE_INDEX_LIST` + `KVM_GET_MSRS` on `/dev/kvm`, through
//! [`vmx_caps::kvm::read_kvm_from`]), decoded, checked and printed; `--json` prints the
//! dump (the fixtures' format, what `vmxcap baseline` and vmx-controls' `fleet_config`
//! example read).
//!
//! ```text
//! cargo run -p vmx-caps --features kvm --example host_caps [-- --json]
//! ```
//!
//! A host whose KVM lists no VMX MSR (AMD, no VMX, `kvm_intel.nested=0`) is reported as
//! such (exit status 0: that is an answer); failing to open `/dev/kvm` is exit status 1.

use std::process::ExitCode;

use kvm_ioctls::Kvm;
use vmx_caps::report::{self, Format};
use vmx_caps::{check, CapsError};

fn main() -> ExitCode {
    let json = std::env::args().any(|a| a == "--json");
    let kvm = match Kvm::new() {
        Ok(kvm) => kvm,
        Err(e) => {
            eprintln!("/dev/kvm: {e}");
            return ExitCode::from(1);
        }
    };
    let dump = match vmx_caps::kvm::read_kvm_from(&kvm) {
        Ok(dump) => dump,
        Err(e @ CapsError::NoVmx { .. }) => {
            println!("this host's KVM offers no nested VMX: {e}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    if json {
        println!("{}", dump.to_json());
        return ExitCode::SUCCESS;
    }
    match dump.caps() {
        Ok(caps) => {
            print!("{}", report::render(&caps, Format::Text));
            let findings = check::check(&caps);
            println!("check: {} finding(s)", findings.findings.len());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("decode: {e}");
            ExitCode::from(1)
        }
    }
}
