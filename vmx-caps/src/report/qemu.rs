// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Byte-for-byte the output of QEMU's `scripts/kvm/vmxcap` (commit 0c49c918, the
//! version the golden fixtures come from) for the same MSR values ([`render`]), and of
//! the script after the June 2024 FRED patch ([`render_2024`]: BASIC bit 58, exit
//! control 31, the "secondary VM-Exit controls" section and entry control 23; no
//! golden output of that version was available, so it follows the patch text).
//!
//! It mirrors the script's quirks on purpose: an absent MSR reads as 0; the TRUE MSR
//! is consulted whenever it is present (the script never looks at BASIC bit 55);
//! `Hex:` values print without leading zeros; ranges print in decimal.

use std::fmt::Write as _;

use crate::caps::VmxCaps;
use crate::control::ControlWord;
use crate::msr;
use crate::names::{control_bits, Vmxcap};

/// One field of a vmxcap "Misc" section: a single bit or an inclusive bit range.
struct Field {
    lo: u32,
    hi: u32,
    label: &'static str,
}

const fn bit(b: u32, label: &'static str) -> Field {
    Field {
        lo: b,
        hi: b,
        label,
    }
}
const fn range(lo: u32, hi: u32, label: &'static str) -> Field {
    Field { lo, hi, label }
}

const BASIC_2024: &[Field] = &[
    range(0, 30, "Revision"),
    range(32, 44, "VMCS size"),
    bit(48, "VMCS restricted to 32 bit addresses"),
    bit(49, "Dual-monitor support"),
    range(50, 53, "VMCS memory type"),
    bit(54, "INS/OUTS instruction information"),
    bit(55, "IA32_VMX_TRUE_*_CTLS support"),
    bit(56, "Skip checks on event error code"),
    bit(58, "VMX nested exception support"),
];

/// The pre-2024 list: the 2024 one without its last line (bit 58).
const BASIC: &[Field] = BASIC_2024.split_at(BASIC_2024.len() - 1).0;

const MISC: &[Field] = &[
    range(0, 4, "VMX-preemption timer scale (log2)"),
    bit(5, "Store EFER.LMA into IA-32e mode guest control"),
    bit(6, "HLT activity state"),
    bit(7, "Shutdown activity state"),
    bit(8, "Wait-for-SIPI activity state"),
    bit(14, "PT in VMX operation"),
    bit(15, "IA32_SMBASE support"),
    range(16, 24, "Number of CR3-target values"),
    range(25, 27, "MSR-load/store count recommendation"),
    bit(28, "IA32_SMM_MONITOR_CTL[2] can be set to 1"),
    bit(29, "VMWRITE to VM-exit information fields"),
    bit(30, "Inject event with insn length=0"),
    range(32, 63, "MSEG revision identifier"),
];

const EPT_VPID: &[Field] = &[
    bit(0, "Execute-only EPT translations"),
    bit(6, "Page-walk length 4"),
    bit(7, "Page-walk length 5"),
    bit(8, "Paging-structure memory type UC"),
    bit(14, "Paging-structure memory type WB"),
    bit(16, "2MB EPT pages"),
    bit(17, "1GB EPT pages"),
    bit(20, "INVEPT supported"),
    bit(21, "EPT accessed and dirty flags"),
    bit(22, "Advanced VM-exit information for EPT violations"),
    bit(25, "Single-context INVEPT"),
    bit(26, "All-context INVEPT"),
    bit(32, "INVVPID supported"),
    bit(40, "Individual-address INVVPID"),
    bit(41, "Single-context INVVPID"),
    bit(42, "All-context INVVPID"),
    bit(43, "Single-context-retaining-globals INVVPID"),
];

const VMFUNC: &[Field] = &[bit(0, "EPTP Switching")];

fn line(out: &mut String, label: &str, value: &str) {
    // Python '  %-40s %s'.
    let _ = writeln!(out, "  {label:<40} {value}");
}

fn misc_section(out: &mut String, title: &str, value: u64, fields: &[Field]) {
    out.push_str(title);
    out.push('\n');
    let _ = writeln!(out, "  Hex: {value:#x}");
    for f in fields {
        let width = f.hi - f.lo + 1;
        let mask = if width >= 64 {
            u64::MAX
        } else {
            (1u64 << width) - 1
        };
        let v = (value >> f.lo) & mask;
        if f.lo == f.hi {
            line(out, f.label, if v != 0 { "yes" } else { "no" });
        } else {
            line(out, f.label, &v.to_string());
        }
    }
}

fn control_section(out: &mut String, caps: &VmxCaps, word: ControlWord, fred: bool) {
    out.push_str(word.title());
    out.push('\n');
    let read = |m: u32| caps.get(m).unwrap_or(0);
    let (mb1, cb1) = if word.is_allowed1_only() {
        (0, read(word.msr()))
    } else {
        let v = read(word.msr());
        (v & 0xFFFF_FFFF, v >> 32)
    };
    let (tmb1, tcb1) = match word.true_msr() {
        Some(m) => {
            let v = read(m);
            (v & 0xFFFF_FFFF, v >> 32)
        }
        None => (0, 0),
    };
    let shown = |v: Vmxcap| v == Vmxcap::Original || (fred && v == Vmxcap::Fred2024);
    for name in control_bits(word).iter().filter(|n| shown(n.vmxcap)) {
        let m = 1u64 << name.bit;
        let zero = mb1 & m == 0;
        let one = cb1 & m != 0;
        let true_zero = tmb1 & m == 0;
        let true_one = tcb1 & m != 0;
        let s = if word.true_msr().is_some() && true_zero && true_one && one && !zero {
            "default"
        } else if zero && !one {
            "no"
        } else if one && !zero {
            "forced"
        } else if one && zero {
            "yes"
        } else {
            "?"
        };
        line(out, name.label, s);
    }
}

/// Renders `caps` exactly as QEMU's vmxcap (commit 0c49c918) prints it.
pub fn render(caps: &VmxCaps) -> String {
    render_version(caps, false)
}

/// Renders `caps` as QEMU's vmxcap prints it after the June 2024 FRED patch.
pub fn render_2024(caps: &VmxCaps) -> String {
    render_version(caps, true)
}

fn render_version(caps: &VmxCaps, fred: bool) -> String {
    let mut out = String::with_capacity(6 * 1024);
    let read = |m: u32| caps.get(m).unwrap_or(0);
    let basic = if fred { BASIC_2024 } else { BASIC };
    misc_section(
        &mut out,
        "Basic VMX Information",
        read(msr::IA32_VMX_BASIC),
        basic,
    );
    for w in ControlWord::ALL {
        if w == ControlWord::SecondaryExit && !fred {
            continue;
        }
        control_section(&mut out, caps, w, fred);
    }
    misc_section(
        &mut out,
        "Miscellaneous data",
        read(msr::IA32_VMX_MISC),
        MISC,
    );
    misc_section(
        &mut out,
        "VPID and EPT capabilities",
        read(msr::IA32_VMX_EPT_VPID_CAP),
        EPT_VPID,
    );
    misc_section(&mut out, "VM Functions", read(msr::IA32_VMX_VMFUNC), VMFUNC);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raw::RawMsrs;

    fn fred_caps() -> VmxCaps {
        let raw: RawMsrs = [
            (0x480, 0x05DA_0600_0000_0015u64), // bits 56 and 58
            (0x481, 0x0000_00FF_0000_0016),
            (0x482, 0x7FF9_FFFE_0401_E172),
            (0x483, 0x8000_0000_0003_6DFF), // activate secondary exit controls
            (0x484, 0x0080_0000_0000_11FF), // load FRED
            (0x485, 0),
            (0x486, 0x8000_0021),
            (0x487, 0xFFFF_FFFF),
            (0x488, 0x2000),
            (0x489, 0x1_0000_2000),
            (0x48A, 0x2E),
            (0x493, 0x3),
        ]
        .into_iter()
        .collect();
        VmxCaps::from_raw(raw).unwrap()
    }

    #[test]
    fn true_msrs_consulted_whatever_basic_bit_55_says() {
        // QEMU's script reads the TRUE MSR whenever it can; a dump with TRUE MSRs but
        // BASIC bit 55 clear still shows "default" here (and "forced" in `text`).
        let mut raw = crate::caps::tests::penryn();
        let forced = "  CR3-load exiting                         forced\n";
        let default = "  CR3-load exiting                         default\n";
        assert!(render(&VmxCaps::from_raw(raw.clone()).unwrap()).contains(forced));
        raw.insert(0x48E, 0xF7F9_FFFE_0400_6172);
        let c = VmxCaps::from_raw(raw).unwrap();
        assert!(render(&c).contains(default));
        let text_forced = "  CR3_LOAD_EXITING                         forced\n";
        assert!(crate::report::text::render(&c).contains(text_forced));
    }

    #[test]
    fn fred_2024_lines() {
        let c = fred_caps();
        let old = render(&c);
        let new = render_2024(&c);
        assert!(!old.contains("FRED") && !old.contains("nested exception"));
        for l in [
            "  VMX nested exception support             yes\n",
            "  Activate secondary VM-exit controls      yes\n",
            "secondary VM-Exit controls\n  Save IA32 FRED MSRs                      yes\n  Load IA32 FRED MSRs                      yes\nVM-Entry controls\n",
            "  Load IA32 FRED MSRs                      yes\nMiscellaneous data\n",
        ] {
            assert!(new.contains(l), "{l:?} not in\n{new}");
        }
        assert_eq!(new.lines().count(), old.lines().count() + 6);
    }
}
