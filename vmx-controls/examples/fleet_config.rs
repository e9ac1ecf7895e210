// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! From a fleet's capability dumps to the VMCS configuration a VM may use on every host:
//! read each dump with vmx-caps, intersect them into a baseline
//! ([`vmx_caps::baseline::intersect`]), and compute KVM's configuration on the baseline
//! ([`vmx_controls::setup_vmcs_config`], Linux `setup_vmcs_config`).
//!
//! ```text
//! cargo run -p vmx-controls --example fleet_config -- fixtures/vmx/*.json
//! ```
//!
//! Dumps are JSON in the fixtures' format (`vmxcap --host --format json` writes one on
//! each host; `vmxcap baseline` does what this example does). Exits 1 when KVM would
//! refuse the baseline, 2 on unreadable input.

use std::path::PathBuf;
use std::process::ExitCode;

use vmx_caps::{baseline, Dump, VmxCaps};
use vmx_controls::{setup_vmcs_config, VmcsPolicy};

fn main() -> ExitCode {
    let paths: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    if paths.is_empty() {
        eprintln!("usage: fleet_config DUMP.json...");
        return ExitCode::from(2);
    }
    let mut fleet: Vec<VmxCaps> = Vec::new();
    for path in &paths {
        match Dump::read(path).and_then(|d| d.caps()) {
            Ok(caps) => fleet.push(caps),
            Err(e) => {
                eprintln!("{}: {e}", path.display());
                return ExitCode::from(2);
            }
        }
    }
    let base = match baseline::intersect(&fleet) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("baseline: {e}");
            return ExitCode::from(2);
        }
    };
    println!("baseline of {} hosts", fleet.len());
    for note in &base.notes {
        println!(
            "  note: MSR {:#x} bits {:#x}: {}",
            note.msr, note.bits, note.message
        );
    }
    match setup_vmcs_config(&base.caps, &VmcsPolicy::linux()) {
        Ok(setup) => {
            print!("{}", setup.render_text());
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("KVM would not load on the baseline: {e}");
            ExitCode::from(1)
        }
    }
}
