// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The `text` report: vmxcap's layout, but every bit the reference knows is named
//! (tertiary and secondary VM-exit controls, FRED, CET, bus-lock, notify, ...) by its
//! one name, the Linux name without the field prefix (`NMI_EXITING`; the typed flags'
//! and `vmxcap config`'s name; see `x86_kvm_base::control_bits`), every
//! section names its MSRs, absent MSRs say so, set bits with no known meaning are
//! listed and flagged `[unknown]`, and CR0/CR4 fixed bits and VMCS_ENUM are shown.
//!
//! Unlike vmxcap it follows the architecture: TRUE MSRs are consulted only when BASIC
//! bit 55 says they exist.

use std::fmt::Write as _;

use crate::caps::{ControlSetting, VmxCaps};
use crate::control::ControlWord;
use crate::msr;
use crate::names::{control_bits, lookup};

const UNKNOWN: &str = "[unknown]";

fn line(out: &mut String, label: &str, value: &str) {
    let _ = writeln!(out, "  {label:<40} {value}");
}

fn yn(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn msr_tag(index: u32, present: bool) -> String {
    let name = msr::name(index).unwrap_or("?");
    if present {
        format!("{name} {index:#x}")
    } else {
        format!("{name} {index:#x}: absent")
    }
}

fn bit_list(mask: u64) -> String {
    let bits: Vec<String> = (0..64)
        .filter(|b| mask & (1u64 << b) != 0)
        .map(|b| b.to_string())
        .collect();
    bits.join(",")
}

fn unknown_line(out: &mut String, mask: u64) {
    if mask != 0 {
        line(
            out,
            "Unknown bits set",
            &format!("{mask:#x} (bits {}) {UNKNOWN}", bit_list(mask)),
        );
    }
}

fn basic(out: &mut String, caps: &VmxCaps) {
    let b = caps.basic();
    let _ = writeln!(
        out,
        "Basic VMX Information ({})",
        msr_tag(msr::IA32_VMX_BASIC, true)
    );
    let _ = writeln!(out, "  Hex: {:#018x}", b.raw());
    line(out, "Revision", &b.revision_id().to_string());
    line(out, "VMCS size", &b.vmcs_size().to_string());
    line(
        out,
        "VMCS restricted to 32 bit addresses",
        yn(b.phys_addr_32bit()),
    );
    line(out, "Dual-monitor support", yn(b.dual_monitor()));
    let mt = match b.memory_type() {
        0 => "0 (UC)".to_string(),
        6 => "6 (WB)".to_string(),
        v => format!("{v} (reserved)"),
    };
    line(out, "VMCS memory type", &mt);
    line(
        out,
        "INS/OUTS instruction information",
        yn(b.ins_outs_info()),
    );
    line(out, "IA32_VMX_TRUE_*_CTLS support", yn(b.true_ctls()));
    line(
        out,
        "Skip checks on event error code",
        yn(b.no_hw_error_code_cc()),
    );
    line(
        out,
        "VMX nested exception support",
        yn(b.nested_exception()),
    );
    unknown_line(out, b.unknown_bits());
}

fn expected_unnamed(caps: &VmxCaps, word: ControlWord, bit: u32) -> bool {
    // An unnamed bit is unremarkable when it is reserved-0 ("no") or a default1 bit
    // behaving as default1 ("forced", or "default" with TRUE MSRs).
    let s = caps.control_setting(word, bit);
    if bit < 32 && word.default1() & (1 << bit) != 0 {
        matches!(s, ControlSetting::Forced | ControlSetting::Default)
    } else {
        s == ControlSetting::No
    }
}

fn control(out: &mut String, caps: &VmxCaps, word: ControlWord) {
    let present = caps.get(word.msr()).is_some();
    let mut tag = msr_tag(word.msr(), present);
    if let Some(t) = word.true_msr() {
        if caps.has_true_ctls() {
            let _ = write!(tag, ", {}", msr_tag(t, caps.get(t).is_some()));
        }
    }
    let _ = writeln!(out, "{} ({tag})", word.title());
    let width = if word.is_allowed1_only() { 64 } else { 32 };
    for bit in 0..width {
        match lookup(word, bit) {
            Some(n) => line(out, n.name, caps.control_setting(word, bit).vmxcap_word()),
            None if !expected_unnamed(caps, word, bit) => {
                let v = caps.control_setting(word, bit).vmxcap_word();
                line(out, &format!("Bit {bit}"), &format!("{v} {UNKNOWN}"));
            }
            None => {}
        }
    }
    debug_assert!(control_bits(word).len() <= width as usize);
}

fn misc(out: &mut String, caps: &VmxCaps) {
    let m = caps.misc();
    let _ = writeln!(
        out,
        "Miscellaneous data ({})",
        msr_tag(msr::IA32_VMX_MISC, true)
    );
    let _ = writeln!(out, "  Hex: {:#x}", m.raw());
    line(
        out,
        "VMX-preemption timer scale (log2)",
        &m.preemption_timer_rate().to_string(),
    );
    line(
        out,
        "Store EFER.LMA into IA-32e mode guest control",
        yn(m.save_efer_lma()),
    );
    line(out, "HLT activity state", yn(m.activity_hlt()));
    line(out, "Shutdown activity state", yn(m.activity_shutdown()));
    line(
        out,
        "Wait-for-SIPI activity state",
        yn(m.activity_wait_sipi()),
    );
    line(out, "PT in VMX operation", yn(m.intel_pt()));
    line(out, "IA32_SMBASE support", yn(m.rdmsr_in_smm()));
    line(
        out,
        "Number of CR3-target values",
        &m.cr3_count().to_string(),
    );
    line(
        out,
        "MSR-load/store count recommendation",
        &format!("{} ({} entries)", m.max_msr_field(), m.max_msr()),
    );
    line(
        out,
        "IA32_SMM_MONITOR_CTL[2] can be set to 1",
        yn(m.vmxoff_block_smi()),
    );
    line(
        out,
        "VMWRITE to VM-exit information fields",
        yn(m.vmwrite_shadow_ro_fields()),
    );
    line(out, "Inject event with insn length=0", yn(m.zero_len_ins()));
    line(out, "MSEG revision identifier", &m.mseg_revid().to_string());
    unknown_line(out, m.unknown_bits());
}

fn ept_vpid(out: &mut String, caps: &VmxCaps) {
    let c = caps.ept_vpid();
    let _ = writeln!(
        out,
        "VPID and EPT capabilities ({})",
        msr_tag(msr::IA32_VMX_EPT_VPID_CAP, c.is_some())
    );
    let c = c.unwrap_or(crate::ept_vpid::EptVpidCap(0));
    let _ = writeln!(out, "  Hex: {:#x}", c.raw());
    let rows: [(&str, bool); 18] = [
        ("Execute-only EPT translations", c.execute_only()),
        ("Page-walk length 4", c.page_walk_4()),
        ("Page-walk length 5", c.page_walk_5()),
        ("Paging-structure memory type UC", c.eptp_uc()),
        ("Paging-structure memory type WB", c.eptp_wb()),
        ("2MB EPT pages", c.ept_2mb_page()),
        ("1GB EPT pages", c.ept_1gb_page()),
        ("INVEPT supported", c.invept()),
        ("EPT accessed and dirty flags", c.ept_ad()),
        (
            "Advanced VM-exit information for EPT violations",
            c.advanced_exit_info(),
        ),
        (
            "Supervisor shadow-stack control",
            c.supervisor_shadow_stack(),
        ),
        ("Single-context INVEPT", c.invept_single_context()),
        ("All-context INVEPT", c.invept_all_context()),
        ("INVVPID supported", c.invvpid()),
        ("Individual-address INVVPID", c.invvpid_individual_addr()),
        ("Single-context INVVPID", c.invvpid_single_context()),
        ("All-context INVVPID", c.invvpid_all_context()),
        (
            "Single-context-retaining-globals INVVPID",
            c.invvpid_single_non_global(),
        ),
    ];
    for (label, v) in rows {
        line(out, label, yn(v));
    }
    line(
        out,
        "Maximum HLAT prefix size",
        &c.hlat_prefix_size().to_string(),
    );
    unknown_line(out, c.unknown_bits());
}

fn vmfunc(out: &mut String, caps: &VmxCaps) {
    let f = caps.vmfunc();
    let _ = writeln!(
        out,
        "VM Functions ({})",
        msr_tag(msr::IA32_VMX_VMFUNC, f.is_some())
    );
    let f = f.unwrap_or(crate::fixed::VmFunc(0));
    let _ = writeln!(out, "  Hex: {:#x}", f.raw());
    line(out, "EPTP Switching", yn(f.eptp_switching()));
    unknown_line(out, f.unknown_bits());
}

fn fixed(out: &mut String, caps: &VmxCaps) {
    for (cr, f, i0) in [
        ("CR0", caps.cr0_fixed(), msr::IA32_VMX_CR0_FIXED0),
        ("CR4", caps.cr4_fixed(), msr::IA32_VMX_CR4_FIXED0),
    ] {
        let _ = writeln!(
            out,
            "{cr} fixed bits ({}, {})",
            msr_tag(i0, true),
            msr_tag(i0 + 1, true)
        );
        line(out, "Fixed to 1 (FIXED0)", &format!("{:#x}", f.fixed0));
        line(out, "Allowed to be 1 (FIXED1)", &format!("{:#x}", f.fixed1));
        line(out, "Free bits", &format!("{:#x}", f.flexible()));
    }
    let e = caps.vmcs_enum();
    let _ = writeln!(
        out,
        "VMCS enumeration ({})",
        msr_tag(msr::IA32_VMX_VMCS_ENUM, true)
    );
    let _ = writeln!(out, "  Hex: {:#x}", e.raw());
    line(out, "Highest VMCS field index", &e.max_index().to_string());
    unknown_line(out, e.unknown_bits());
}

/// Renders the `text` report.
pub fn render(caps: &VmxCaps) -> String {
    let mut out = String::with_capacity(8 * 1024);
    basic(&mut out, caps);
    for w in ControlWord::ALL {
        control(&mut out, caps, w);
    }
    misc(&mut out, caps);
    ept_vpid(&mut out, caps);
    vmfunc(&mut out, caps);
    fixed(&mut out, caps);
    out
}
