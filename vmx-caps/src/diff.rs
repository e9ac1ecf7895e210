// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! What one capability set has that the other lacks, per control word and per field.

use std::fmt::Write as _;

use crate::caps::VmxCaps;
use crate::control::ControlWord;
use crate::msr;
use crate::names::lookup;

/// Differences in one control word (effective views, widened to 64 bits).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ControlDiff {
    /// The control word (`pin_based`, `primary`, ...).
    pub word: &'static str,
    /// Controls A allows to be 1 and B does not.
    pub only_a: u64,
    /// Controls B allows to be 1 and A does not.
    pub only_b: u64,
    /// Controls A forces to 1 and B does not.
    pub forced_only_a: u64,
    /// Controls B forces to 1 and A does not.
    pub forced_only_b: u64,
    #[cfg_attr(feature = "serde", serde(skip))]
    kind: Option<ControlWord>,
}

/// A field or flag whose value differs.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct FieldDiff {
    /// MSR holding the field.
    pub msr: u32,
    /// Field name (the accessor's name, e.g. `vmcs_size`).
    pub field: &'static str,
    /// Value in A.
    pub a: String,
    /// Value in B.
    pub b: String,
}

/// The differences between two capability sets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Diff {
    /// Control words that differ.
    pub controls: Vec<ControlDiff>,
    /// Other fields that differ.
    pub fields: Vec<FieldDiff>,
}

type Getter = fn(&VmxCaps) -> String;

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "absent".to_string(), |v| v.to_string())
}

const FIELDS: &[(u32, &str, Getter)] = &[
    (msr::IA32_VMX_BASIC, "revision_id", |c| {
        c.basic().revision_id().to_string()
    }),
    (msr::IA32_VMX_BASIC, "vmcs_size", |c| {
        c.basic().vmcs_size().to_string()
    }),
    (msr::IA32_VMX_BASIC, "phys_addr_32bit", |c| {
        c.basic().phys_addr_32bit().to_string()
    }),
    (msr::IA32_VMX_BASIC, "dual_monitor", |c| {
        c.basic().dual_monitor().to_string()
    }),
    (msr::IA32_VMX_BASIC, "memory_type", |c| {
        c.basic().memory_type().to_string()
    }),
    (msr::IA32_VMX_BASIC, "ins_outs_info", |c| {
        c.basic().ins_outs_info().to_string()
    }),
    (msr::IA32_VMX_BASIC, "true_ctls", |c| {
        c.basic().true_ctls().to_string()
    }),
    (msr::IA32_VMX_BASIC, "no_hw_error_code_cc", |c| {
        c.basic().no_hw_error_code_cc().to_string()
    }),
    (msr::IA32_VMX_BASIC, "nested_exception", |c| {
        c.basic().nested_exception().to_string()
    }),
    (msr::IA32_VMX_BASIC, "unknown_bits", |c| {
        format!("{:#x}", c.basic().unknown_bits())
    }),
    (msr::IA32_VMX_MISC, "preemption_timer_rate", |c| {
        c.misc().preemption_timer_rate().to_string()
    }),
    (msr::IA32_VMX_MISC, "save_efer_lma", |c| {
        c.misc().save_efer_lma().to_string()
    }),
    (msr::IA32_VMX_MISC, "activity_hlt", |c| {
        c.misc().activity_hlt().to_string()
    }),
    (msr::IA32_VMX_MISC, "activity_shutdown", |c| {
        c.misc().activity_shutdown().to_string()
    }),
    (msr::IA32_VMX_MISC, "activity_wait_sipi", |c| {
        c.misc().activity_wait_sipi().to_string()
    }),
    (msr::IA32_VMX_MISC, "intel_pt", |c| {
        c.misc().intel_pt().to_string()
    }),
    (msr::IA32_VMX_MISC, "rdmsr_in_smm", |c| {
        c.misc().rdmsr_in_smm().to_string()
    }),
    (msr::IA32_VMX_MISC, "cr3_count", |c| {
        c.misc().cr3_count().to_string()
    }),
    (msr::IA32_VMX_MISC, "max_msr", |c| {
        c.misc().max_msr().to_string()
    }),
    (msr::IA32_VMX_MISC, "vmxoff_block_smi", |c| {
        c.misc().vmxoff_block_smi().to_string()
    }),
    (msr::IA32_VMX_MISC, "vmwrite_shadow_ro_fields", |c| {
        c.misc().vmwrite_shadow_ro_fields().to_string()
    }),
    (msr::IA32_VMX_MISC, "zero_len_ins", |c| {
        c.misc().zero_len_ins().to_string()
    }),
    (msr::IA32_VMX_MISC, "mseg_revid", |c| {
        c.misc().mseg_revid().to_string()
    }),
    (msr::IA32_VMX_MISC, "unknown_bits", |c| {
        format!("{:#x}", c.misc().unknown_bits())
    }),
    (msr::IA32_VMX_CR0_FIXED0, "cr0_fixed0", |c| {
        format!("{:#x}", c.cr0_fixed().fixed0)
    }),
    (msr::IA32_VMX_CR0_FIXED1, "cr0_fixed1", |c| {
        format!("{:#x}", c.cr0_fixed().fixed1)
    }),
    (msr::IA32_VMX_CR4_FIXED0, "cr4_fixed0", |c| {
        format!("{:#x}", c.cr4_fixed().fixed0)
    }),
    (msr::IA32_VMX_CR4_FIXED1, "cr4_fixed1", |c| {
        format!("{:#x}", c.cr4_fixed().fixed1)
    }),
    (msr::IA32_VMX_VMCS_ENUM, "max_index", |c| {
        c.vmcs_enum().max_index().to_string()
    }),
    (msr::IA32_VMX_EPT_VPID_CAP, "ept_vpid_cap", |c| {
        opt(c.ept_vpid().map(|e| format!("{:#x}", e.raw())))
    }),
    (msr::IA32_VMX_VMFUNC, "vmfunc", |c| {
        opt(c.vmfunc().map(|e| format!("{:#x}", e.raw())))
    }),
];

/// EPT/VPID capability flags, for naming differing bits.
const EPT_FLAGS: &[(u32, &str)] = &[
    (0, "execute_only"),
    (6, "page_walk_4"),
    (7, "page_walk_5"),
    (8, "eptp_uc"),
    (14, "eptp_wb"),
    (16, "ept_2mb_page"),
    (17, "ept_1gb_page"),
    (20, "invept"),
    (21, "ept_ad"),
    (22, "advanced_exit_info"),
    (23, "supervisor_shadow_stack"),
    (25, "invept_single_context"),
    (26, "invept_all_context"),
    (32, "invvpid"),
    (40, "invvpid_individual_addr"),
    (41, "invvpid_single_context"),
    (42, "invvpid_all_context"),
    (43, "invvpid_single_non_global"),
];

/// Compares two capability sets.
///
/// ```
/// use vmx_caps::diff::diff;
/// use vmx_caps::VmxCaps;
///
/// # // Intel Coffee Lake (CPUID 906EA): IA32_VMX_BASIC..IA32_VMX_VMFUNC of a real CPU.
/// # let coffee_lake: vmx_caps::RawMsrs = [
/// #     (0x480, 0x00da_0400_0000_0004), (0x481, 0x0000_007f_0000_0016),
/// #     (0x482, 0xfff9_fffe_0401_e172), (0x483, 0x01ff_ffff_0003_6dff),
/// #     (0x484, 0x0003_ffff_0000_11ff), (0x485, 0x0000_0000_7004_c1e7),
/// #     (0x486, 0x0000_0000_8000_0021), (0x487, 0x0000_0000_ffff_ffff),
/// #     (0x488, 0x0000_0000_0000_2000), (0x489, 0x0000_0000_0037_27ff),
/// #     (0x48a, 0x0000_0000_0000_002e), (0x48b, 0x005f_bcff_0000_0000),
/// #     (0x48c, 0x0000_0f01_0673_4141), (0x48d, 0x0000_007f_0000_0016),
/// #     (0x48e, 0xfff9_fffe_0400_6172), (0x48f, 0x01ff_ffff_0003_6dfb),
/// #     (0x490, 0x0003_ffff_0000_11fb), (0x491, 0x0000_0000_0000_0001),
/// # ].into_iter().collect();
/// let a = VmxCaps::from_raw(coffee_lake.clone())?;
/// assert!(diff(&a, &a).is_empty());
/// // B lacks the VMX-preemption timer (pin-based bit 6).
/// let mut raw = coffee_lake;
/// raw.insert(0x481, 0x0000_003f_0000_0016);
/// raw.insert(0x48d, 0x0000_003f_0000_0016);
/// let d = diff(&a, &VmxCaps::from_raw(raw)?);
/// assert_eq!(d.controls.len(), 1);
/// assert_eq!((d.controls[0].word, d.controls[0].only_a), ("pin_based", 1 << 6));
/// # Ok::<(), vmx_caps::CapsError>(())
/// ```
pub fn diff(a: &VmxCaps, b: &VmxCaps) -> Diff {
    let mut d = Diff::default();
    for word in ControlWord::ALL {
        let c = ControlDiff {
            word: word.id(),
            only_a: a.may_be_one(word) & !b.may_be_one(word),
            only_b: b.may_be_one(word) & !a.may_be_one(word),
            forced_only_a: a.must_be_one(word) & !b.must_be_one(word),
            forced_only_b: b.must_be_one(word) & !a.must_be_one(word),
            kind: Some(word),
        };
        if c.only_a | c.only_b | c.forced_only_a | c.forced_only_b != 0 {
            d.controls.push(c);
        }
    }
    for (msr, field, get) in FIELDS {
        let (x, y) = (get(a), get(b));
        if x != y {
            d.fields.push(FieldDiff {
                msr: *msr,
                field,
                a: x,
                b: y,
            });
        }
    }
    d
}

impl Diff {
    /// Whether the sets are equivalent (same effective controls and fields).
    pub fn is_empty(&self) -> bool {
        self.controls.is_empty() && self.fields.is_empty()
    }

    /// Human-readable report; `a`/`b` label the two sides.
    pub fn render_text(&self, a: &str, b: &str) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "A: {a}\nB: {b}");
        if self.is_empty() {
            out.push_str("no differences\n");
            return out;
        }
        for c in &self.controls {
            let Some(word) = c.kind else { continue };
            let _ = writeln!(
                out,
                "{} ({})",
                word.title(),
                msr::name(word.msr()).unwrap_or("?")
            );
            for (what, mask) in [
                ("only A allows", c.only_a),
                ("only B allows", c.only_b),
                ("only A forces", c.forced_only_a),
                ("only B forces", c.forced_only_b),
            ] {
                for bit in (0..64).filter(|b| mask & (1u64 << b) != 0) {
                    let label = lookup(word, bit).map_or("(unknown)", |n| n.name);
                    let _ = writeln!(out, "  {what:<14} {label} [bit {bit}]");
                }
            }
        }
        for f in &self.fields {
            let _ = writeln!(
                out,
                "{}.{}: A {} / B {}",
                msr::name(f.msr).unwrap_or("?"),
                f.field,
                f.a,
                f.b
            );
            if f.field == "ept_vpid_cap" {
                let pa = crate::dump::parse_hex(&f.a).unwrap_or(0);
                let pb = crate::dump::parse_hex(&f.b).unwrap_or(0);
                for (bit, name) in EPT_FLAGS {
                    let m = 1u64 << bit;
                    if pa & m != pb & m {
                        let side = if pa & m != 0 {
                            "only A has"
                        } else {
                            "only B has"
                        };
                        let _ = writeln!(out, "  {side:<14} {name} [bit {bit}]");
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raw::RawMsrs;

    /// The crate's Skylake-X fixture cut down to the MSRs every VMX CPU has
    /// (0x480..=0x48A) and without secondary controls (IA32_VMX_PROCBASED_CTLS
    /// allowed-1 bit 63 clear), so the diff sees only the words both sides have.
    fn base() -> RawMsrs {
        let skx = crate::caps::tests::skx();
        let mut r: RawMsrs = skx.iter().filter(|&(i, _)| i <= 0x48A).collect();
        let primary = skx.get(0x482).unwrap();
        r.insert(0x482, primary & !(1 << 63));
        r
    }

    #[test]
    fn identical_sets_have_no_diff() {
        let a = VmxCaps::from_raw(base()).unwrap();
        let d = diff(&a, &a);
        assert!(d.is_empty());
        assert!(d.render_text("x", "y").contains("no differences"));
    }

    #[test]
    fn control_and_field_differences() {
        let a = VmxCaps::from_raw(base()).unwrap();
        let mut r = base();
        r.insert(0x481, 0x0000_007F_0000_0016);
        r.insert(0x48A, 0x2A);
        let b = VmxCaps::from_raw(r).unwrap();
        let d = diff(&a, &b);
        assert_eq!(d.controls.len(), 1);
        assert_eq!(d.controls[0].word, "pin_based");
        assert_eq!(d.controls[0].only_a, 0x80);
        assert_eq!(d.controls[0].only_b, 0);
        assert_eq!(d.fields.len(), 1);
        assert_eq!(d.fields[0].field, "max_index");
        let t = d.render_text("A", "B");
        assert!(t.contains("only A allows  POSTED_INTR [bit 7]"), "{t}");
        assert!(
            t.contains("IA32_VMX_VMCS_ENUM.max_index: A 23 / B 21"),
            "{t}"
        );
    }
}
