// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Text rendering of a nested view: every control bit marked passed through,
//! emulated, default1 or masked, and why.

use std::fmt::Write as _;

use super::provenance::BitProvenance;
use super::view::NestedView;
use super::LINUX_VERSION;
use crate::controls::ControlField;

// A bit is worth a line when it has a name, L0's CPU allows it, or L1 gets it.
fn shown(view: &NestedView, b: &BitProvenance) -> bool {
    let l0_allows = b
        .field
        .is_some_and(|f| view.l0.config.field(f) & (1u64 << b.bit) != 0);
    b.name.is_some() || l0_allows || b.provenance.offered()
}

fn line(out: &mut String, b: &BitProvenance, setting: &str) {
    let name = b.name.unwrap_or("(unnamed)");
    let _ = writeln!(
        out,
        "  {:>2} {:<40} {:<8} {:<8} {}",
        b.bit,
        name,
        setting,
        b.provenance.word(),
        b.provenance
    );
}

/// The text report: header (model version, assumptions, effective parameters, L0's
/// configuration), one section per control word with every named or offered bit, the
/// EPT/VPID capabilities, VMFUNC, then per-MSR notes.
pub fn render_text(view: &NestedView, cpu: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Nested VMX view of {cpu}");
    let _ = writeln!(
        out,
        "model: {LINUX_VERSION} arch/x86/kvm/vmx/nested.c nested_vmx_setup_ctls_msrs (feature MSRs of /dev/kvm, before per-vCPU CPUID adjustments)"
    );
    let _ = writeln!(out, "assumptions: {}", view.summary);
    let p = &view.params;
    let _ = writeln!(out, "effective parameters (vmx_hardware_setup):");
    for (name, param) in [
        ("ept", p.ept),
        ("eptad", p.eptad),
        ("vpid", p.vpid),
        ("unrestricted_guest", p.unrestricted_guest),
        ("flexpriority", p.flexpriority),
        ("enable_apicv", p.apicv),
        ("sgx", p.sgx),
    ] {
        match param.why_off {
            None => {
                let _ = writeln!(out, "  {name:<20} on");
            }
            Some(why) => {
                let _ = writeln!(out, "  {name:<20} off ({why})");
            }
        }
    }
    let _ = writeln!(
        out,
        "columns: bit, name, L1 setting (vmxcap words), provenance, why"
    );
    for field in [
        ControlField::PinBased,
        ControlField::Primary,
        ControlField::Secondary,
        ControlField::Exit,
        ControlField::Entry,
    ] {
        // vmx-caps' `ControlWord` is the same type as `ControlField`.
        let word = field;
        let l0 = view.l0.config.field(field);
        let _ = writeln!(
            out,
            "{} (L1 {:#018x}; L0 VMCS configuration {})",
            field.name(),
            view.caps
                .get(word.true_msr().unwrap_or(word.msr()))
                .unwrap_or(0),
            field.hex(l0)
        );
        for b in view.field_bits(field).filter(|b| shown(view, b)) {
            line(
                &mut out,
                b,
                view.caps.control_setting(word, b.bit).vmxcap_word(),
            );
        }
    }
    let _ = writeln!(
        out,
        "VPID and EPT capabilities (L1 {:#018x})",
        view.caps.get(0x48C).unwrap_or(0)
    );
    for b in view
        .bits
        .iter()
        .filter(|b| b.msr == 0x48C && (b.name.is_some() || b.provenance.offered()))
    {
        let yes = view.caps.get(0x48C).unwrap_or(0) & (1u64 << b.bit) != 0;
        line(&mut out, b, if yes { "yes" } else { "no" });
    }
    let _ = writeln!(
        out,
        "VM Functions (L1 {:#x})",
        view.caps.get(0x491).unwrap_or(0)
    );
    for b in view.bits.iter().filter(|b| b.msr == 0x491) {
        let yes = view.caps.get(0x491).unwrap_or(0) & (1u64 << b.bit) != 0;
        line(&mut out, b, if yes { "yes" } else { "no" });
    }
    let _ = writeln!(out, "other MSRs:");
    for n in &view.notes {
        let name = vmx_caps::msr::name(n.msr).unwrap_or("?");
        match view.caps.get(n.msr) {
            Some(v) => {
                let _ = writeln!(
                    out,
                    "  {name} ({:#x}) = {v:#x}: {} ({})",
                    n.msr, n.message, n.rule
                );
            }
            None => {
                let _ = writeln!(out, "  {name} ({:#x}): {} ({})", n.msr, n.message, n.rule);
            }
        }
    }
    out
}
