// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Invariant checks over a whole capability set (SDM Appendix A, kvm-unit-tests
//! `test_vmx_caps`, KVM `setup_vmcs_config`), each finding naming the MSR and the bits
//! at fault.
//!
//! Severities: [`Severity::Violation`] breaks an architectural invariant (the set
//! cannot come from a correct CPU); [`Severity::Warning`] is legal but KVM would refuse
//! or misbehave (e.g. UC VMCS memory type, an inconsistent entry/exit pair);
//! [`Severity::Info`] reports unknown or reserved bits and MSRs a capture left out.
//! Unknown bits are never a violation: newer CPUs set them (BASIC bit 57 on Arrow Lake).

use std::fmt;

use crate::allowed::AllowedSettings;
use crate::basic;
use crate::caps::VmxCaps;
use crate::control::ControlWord;
use crate::misc;
use crate::msr;
use crate::names;

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
#[non_exhaustive]
pub enum Severity {
    /// Unknown/reserved bits, missing optional MSRs: information only.
    Info,
    /// Architecturally legal but KVM would refuse or drop something.
    Warning,
    /// An architectural invariant is broken.
    Violation,
}

/// Which invariant a finding is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum Invariant {
    /// Allowed-0 ⊆ allowed-1: a must-be-1 control is not allowed to be 1.
    LowSubsetOfHigh,
    /// Legacy allowed-0 must contain every default1 bit.
    Default1InLegacyLow,
    /// TRUE allowed-1 must equal legacy allowed-1.
    TrueHighEqualsLegacyHigh,
    /// Legacy allowed-0 must equal TRUE allowed-0 | default1.
    LegacyLowEqualsTrueLowOrDefault1,
    /// CRx FIXED0 ⊆ FIXED1.
    Fixed0SubsetOfFixed1,
    /// CR4 FIXED0 must contain CR4.VMXE (bit 13).
    Cr4Fixed0HasVmxe,
    /// IA32_VMX_PROCBASED_CTLS2 allowed-0 half must be 0.
    SecondaryLowZero,
    /// BASIC VMCS size in (0, 4096].
    VmcsSize,
    /// BASIC memory type 0 (UC) or 6 (WB); KVM needs WB.
    MemoryType,
    /// BASIC bit 48 must be 0 on Intel 64 processors (KVM refuses it).
    PhysAddr32Bit,
    /// Unknown or reserved bits set (information).
    UnknownBits,
    /// An MSR the existence conditions call for is absent.
    MissingMsr,
    /// An MSR is present although its existence condition is false.
    UnexpectedMsr,
    /// EPT (VPID) capabilities reported without "enable EPT" ("enable VPID") allowed-1.
    EptVpidWithoutControl,
    /// MISC bit 5 must be 1 when "unrestricted guest" may be 1.
    UnrestrictedGuestNeedsSaveEferLma,
    /// MISC CR3-target count ≤ 256.
    Cr3TargetCount,
    /// INVEPT/INVVPID types reported without INVEPT/INVVPID.
    InvalidationTypesWithoutInstruction,
    /// EPT allowed but no usable page-walk length or memory type.
    EptUnusable,
    /// KVM entry/exit control pair allowed on one side only.
    EntryExitPair,
}

/// One finding.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Finding {
    /// How bad it is.
    pub severity: Severity,
    /// Which invariant.
    pub invariant: Invariant,
    /// MSR index at fault.
    pub msr: u32,
    /// The bits at fault, in that MSR's numbering (0 when the finding is about
    /// presence).
    pub bits: u64,
    /// One-line explanation.
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Violation => "VIOLATION",
        };
        write!(f, "{sev}: ")?;
        msr::write_note(f, self.msr, self.bits, &self.message)
    }
}

/// The result of [`check`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Report {
    /// Findings, most severe first, then by MSR.
    pub findings: Vec<Finding>,
}

impl Report {
    /// Whether any architectural invariant is violated.
    pub fn is_violated(&self) -> bool {
        self.findings
            .iter()
            .any(|f| f.severity == Severity::Violation)
    }

    /// Findings of exactly `severity`.
    pub fn with_severity(&self, severity: Severity) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(move |f| f.severity == severity)
    }

    /// Whether some finding has this invariant, MSR and bits.
    pub fn has(&self, invariant: Invariant, msr: u32, bits: u64) -> bool {
        self.findings
            .iter()
            .any(|f| f.invariant == invariant && f.msr == msr && f.bits == bits)
    }
}

struct Out(Vec<Finding>);

impl Out {
    fn push(
        &mut self,
        severity: Severity,
        invariant: Invariant,
        msr: u32,
        bits: u64,
        message: String,
    ) {
        self.0.push(Finding {
            severity,
            invariant,
            msr,
            bits,
            message,
        });
    }
}

fn check_allowed(out: &mut Out, index: u32, a: AllowedSettings) {
    let bad = a.contradictory();
    if bad != 0 {
        out.push(
            Severity::Violation,
            Invariant::LowSubsetOfHigh,
            index,
            u64::from(bad),
            "controls must be 1 (allowed-0) but are not allowed to be 1 (allowed-1)".into(),
        );
    }
}

fn controls(out: &mut Out, caps: &VmxCaps) {
    let true_ctls = caps.has_true_ctls();
    for word in [
        ControlWord::PinBased,
        ControlWord::Primary,
        ControlWord::Exit,
        ControlWord::Entry,
    ] {
        let legacy = AllowedSettings::from_raw(caps.get(word.msr()).unwrap_or(0));
        check_allowed(out, word.msr(), legacy);
        let d1 = word.default1();
        let missing = d1 & !legacy.must_be_one();
        if missing != 0 {
            out.push(
                Severity::Violation,
                Invariant::Default1InLegacyLow,
                word.msr(),
                u64::from(missing),
                format!("default1 bits ({d1:#x}) must be must-be-1 in the legacy MSR"),
            );
        }
        let Some(tm) = word.true_msr() else { continue };
        match (true_ctls, caps.get(tm)) {
            (true, Some(v)) => {
                let t = AllowedSettings::from_raw(v);
                check_allowed(out, tm, t);
                let hi = t.may_be_one() ^ legacy.may_be_one();
                if hi != 0 {
                    out.push(
                        Severity::Violation,
                        Invariant::TrueHighEqualsLegacyHigh,
                        tm,
                        u64::from(hi) << 32,
                        format!(
                            "TRUE allowed-1 differs from {} allowed-1",
                            msr::name(word.msr()).unwrap_or("?")
                        ),
                    );
                }
                let lo = (t.must_be_one() | d1) ^ legacy.must_be_one();
                if lo != 0 {
                    out.push(
                        Severity::Violation,
                        Invariant::LegacyLowEqualsTrueLowOrDefault1,
                        tm,
                        u64::from(lo),
                        format!(
                            "legacy allowed-0 ({:#x}) != TRUE allowed-0 | default1 ({:#x})",
                            legacy.must_be_one(),
                            t.must_be_one() | d1
                        ),
                    );
                }
            }
            (true, None) => out.push(
                Severity::Violation,
                Invariant::MissingMsr,
                tm,
                0,
                "BASIC bit 55 says TRUE control MSRs exist, but this one is absent".into(),
            ),
            (false, Some(_)) => out.push(
                Severity::Warning,
                Invariant::UnexpectedMsr,
                tm,
                0,
                "TRUE control MSR present although BASIC bit 55 is clear (ignored)".into(),
            ),
            (false, None) => {}
        }
    }
    if let Some(s) = caps.secondary() {
        check_allowed(out, msr::IA32_VMX_PROCBASED_CTLS2, s);
        if s.must_be_one() != 0 {
            out.push(
                Severity::Violation,
                Invariant::SecondaryLowZero,
                msr::IA32_VMX_PROCBASED_CTLS2,
                u64::from(s.must_be_one()),
                "every secondary control may be 0: the allowed-0 half must read 0".into(),
            );
        }
    }
    // Unknown bits that may be 1 (or are forced) in each word.
    for word in ControlWord::ALL {
        let known = names::known_mask(word) | u64::from(word.default1());
        let allowed = caps.may_be_one(word) | caps.must_be_one(word);
        let unknown = allowed & !known;
        if unknown != 0 {
            out.push(
                Severity::Info,
                Invariant::UnknownBits,
                word.msr(),
                if word.is_allowed1_only() {
                    unknown
                } else {
                    unknown << 32
                },
                format!("{}: controls with no known meaning may be 1", word.title()),
            );
        }
    }
}

fn presence(out: &mut Out, caps: &VmxCaps) {
    let primary_hi = caps.primary_legacy().may_be_one();
    let exit_hi = caps.exit_legacy().may_be_one();
    let sec_hi = caps.secondary().map_or(0, |s| s.may_be_one());
    // (msr, condition, severity when missing, what)
    let conds: [(u32, bool, Severity, &str); 5] = [
        (
            msr::IA32_VMX_PROCBASED_CTLS2,
            primary_hi & (1 << 31) != 0,
            Severity::Violation,
            "\"activate secondary controls\" may be 1",
        ),
        (
            msr::IA32_VMX_EPT_VPID_CAP,
            sec_hi & ((1 << 1) | (1 << 5)) != 0,
            Severity::Violation,
            "\"enable EPT\" or \"enable VPID\" may be 1",
        ),
        // Older capture tools stop at 0x490: information only.
        (
            msr::IA32_VMX_VMFUNC,
            sec_hi & (1 << 13) != 0,
            Severity::Info,
            "\"enable VM functions\" may be 1",
        ),
        (
            msr::IA32_VMX_PROCBASED_CTLS3,
            primary_hi & (1 << 17) != 0,
            Severity::Info,
            "\"activate tertiary controls\" may be 1",
        ),
        (
            msr::IA32_VMX_EXIT_CTLS2,
            exit_hi & (1 << 31) != 0,
            Severity::Info,
            "\"activate secondary VM-exit controls\" may be 1",
        ),
    ];
    for (index, cond, sev, what) in conds {
        match (cond, caps.get(index).is_some()) {
            (true, false) => out.push(
                sev,
                Invariant::MissingMsr,
                index,
                0,
                format!("absent although {what}; its controls read as unavailable"),
            ),
            (false, true) => out.push(
                Severity::Warning,
                Invariant::UnexpectedMsr,
                index,
                0,
                format!("present although it exists only when {what}"),
            ),
            _ => {}
        }
    }
}

fn basic_checks(out: &mut Out, caps: &VmxCaps) {
    let b = caps.basic();
    let i = msr::IA32_VMX_BASIC;
    let size = b.vmcs_size();
    if size == 0 || size > 4096 {
        out.push(
            Severity::Violation,
            Invariant::VmcsSize,
            i,
            basic::VMCS_SIZE_MASK,
            format!("VMCS region size {size} is not in (0, 4096]"),
        );
    }
    match b.memory_type() {
        6 => {}
        0 => out.push(
            Severity::Warning,
            Invariant::MemoryType,
            i,
            basic::MEM_TYPE_MASK,
            "VMCS memory type UC: KVM requires WB and refuses to load".into(),
        ),
        t => out.push(
            Severity::Violation,
            Invariant::MemoryType,
            i,
            basic::MEM_TYPE_MASK,
            format!("VMCS memory type {t} is reserved (0 = UC, 6 = WB)"),
        ),
    }
    if b.phys_addr_32bit() {
        out.push(
            Severity::Warning,
            Invariant::PhysAddr32Bit,
            i,
            basic::VMX_BASIC_32BIT_PHYS_ADDR_ONLY,
            "VMX structures limited to 32-bit addresses (always 0 on Intel 64; KVM refuses)".into(),
        );
    }
    if b.unknown_bits() != 0 {
        out.push(
            Severity::Info,
            Invariant::UnknownBits,
            i,
            b.unknown_bits(),
            "reserved/unknown BASIC bits set (kept, not rejected)".into(),
        );
    }
}

fn misc_checks(out: &mut Out, caps: &VmxCaps) {
    let m = caps.misc();
    let i = msr::IA32_VMX_MISC;
    if m.unknown_bits() != 0 {
        out.push(
            Severity::Info,
            Invariant::UnknownBits,
            i,
            m.unknown_bits(),
            "reserved MISC bits set".into(),
        );
    }
    if m.cr3_count() > 256 {
        out.push(
            Severity::Violation,
            Invariant::Cr3TargetCount,
            i,
            misc::VMX_MISC_CR3_COUNT_MASK,
            format!("{} CR3-target values (at most 256)", m.cr3_count()),
        );
    }
    let ug = caps.secondary().is_some_and(|s| s.may_be_one_bit(7));
    if ug && !m.save_efer_lma() {
        out.push(
            Severity::Violation,
            Invariant::UnrestrictedGuestNeedsSaveEferLma,
            i,
            misc::VMX_MISC_SAVE_EFER_LMA,
            "\"unrestricted guest\" may be 1 but MISC bit 5 (store EFER.LMA) is 0".into(),
        );
    }
}

fn fixed_checks(out: &mut Out, caps: &VmxCaps) {
    for (f, i) in [
        (caps.cr0_fixed(), msr::IA32_VMX_CR0_FIXED0),
        (caps.cr4_fixed(), msr::IA32_VMX_CR4_FIXED0),
    ] {
        if f.contradictory() != 0 {
            out.push(
                Severity::Violation,
                Invariant::Fixed0SubsetOfFixed1,
                i,
                f.contradictory(),
                "bits fixed to 1 (FIXED0) are not allowed to be 1 (FIXED1)".into(),
            );
        }
    }
    const CR4_VMXE: u64 = 1 << 13;
    if caps.cr4_fixed().fixed0 & CR4_VMXE == 0 {
        out.push(
            Severity::Warning,
            Invariant::Cr4Fixed0HasVmxe,
            msr::IA32_VMX_CR4_FIXED0,
            CR4_VMXE,
            "CR4.VMXE is not fixed to 1 in VMX operation".into(),
        );
    }
    let e = caps.vmcs_enum();
    if e.unknown_bits() != 0 {
        out.push(
            Severity::Info,
            Invariant::UnknownBits,
            msr::IA32_VMX_VMCS_ENUM,
            e.unknown_bits(),
            "reserved VMCS_ENUM bits set".into(),
        );
    }
    if let Some(f) = caps.vmfunc() {
        if f.unknown_bits() != 0 {
            out.push(
                Severity::Info,
                Invariant::UnknownBits,
                msr::IA32_VMX_VMFUNC,
                f.unknown_bits(),
                "VM functions with no known meaning may be enabled".into(),
            );
        }
    }
}

fn ept_checks(out: &mut Out, caps: &VmxCaps) {
    use crate::ept_vpid::*;
    let Some(c) = caps.ept_vpid() else { return };
    let i = msr::IA32_VMX_EPT_VPID_CAP;
    let sec = caps.secondary();
    let ept_ok = sec.is_some_and(|s| s.may_be_one_bit(1));
    let vpid_ok = sec.is_some_and(|s| s.may_be_one_bit(5));
    if c.has_ept() && !ept_ok {
        out.push(
            Severity::Violation,
            Invariant::EptVpidWithoutControl,
            i,
            u64::from(c.ept_raw()),
            "EPT capabilities reported but \"enable EPT\" may not be 1 (KVM refuses)".into(),
        );
    }
    if c.has_vpid() && !vpid_ok {
        out.push(
            Severity::Violation,
            Invariant::EptVpidWithoutControl,
            i,
            u64::from(c.vpid_raw()) << 32,
            "VPID capabilities reported but \"enable VPID\" may not be 1 (KVM refuses)".into(),
        );
    }
    let types = c.raw() & (VMX_EPT_EXTENT_CONTEXT_BIT | VMX_EPT_EXTENT_GLOBAL_BIT);
    if types != 0 && !c.invept() {
        out.push(
            Severity::Warning,
            Invariant::InvalidationTypesWithoutInstruction,
            i,
            types,
            "INVEPT types reported without INVEPT".into(),
        );
    }
    let vtypes = c.raw()
        & (VMX_VPID_EXTENT_INDIVIDUAL_ADDR_BIT
            | VMX_VPID_EXTENT_SINGLE_CONTEXT_BIT
            | VMX_VPID_EXTENT_GLOBAL_CONTEXT_BIT
            | VMX_VPID_EXTENT_SINGLE_NON_GLOBAL_BIT);
    if vtypes != 0 && !c.invvpid() {
        out.push(
            Severity::Warning,
            Invariant::InvalidationTypesWithoutInstruction,
            i,
            vtypes,
            "INVVPID types reported without INVVPID".into(),
        );
    }
    if ept_ok && (!(c.page_walk_4() || c.page_walk_5()) || !(c.eptp_uc() || c.eptp_wb())) {
        out.push(
            Severity::Warning,
            Invariant::EptUnusable,
            i,
            VMX_EPT_PAGE_WALK_4_BIT | VMX_EPT_PAGE_WALK_5_BIT | VMX_EPTP_UC_BIT | VMX_EPTP_WB_BIT,
            "\"enable EPT\" may be 1 but no page-walk length or EPTP memory type is supported"
                .into(),
        );
    }
    if c.unknown_bits() != 0 {
        out.push(
            Severity::Info,
            Invariant::UnknownBits,
            i,
            c.unknown_bits(),
            "EPT/VPID capability bits with no known meaning".into(),
        );
    }
}

/// KVM's `vmcs_entry_exit_pairs` (entry bit, exit bit), reference §3.5.
pub const ENTRY_EXIT_PAIRS: [(u32, u32); 6] = [
    (13, 12), // LOAD_IA32_PERF_GLOBAL_CTRL
    (14, 19), // LOAD_IA32_PAT
    (15, 21), // LOAD_IA32_EFER
    (16, 23), // LOAD_BNDCFGS / CLEAR_BNDCFGS
    (18, 25), // LOAD_IA32_RTIT_CTL / CLEAR_IA32_RTIT_CTL
    (20, 28), // LOAD_CET_STATE
];

fn pair_checks(out: &mut Out, caps: &VmxCaps) {
    // KVM reads the legacy MSRs; with the default error_on_inconsistent_vmcs_config it
    // refuses to load when a pair is allowed on one side only.
    let entry = caps.entry_legacy().may_be_one();
    let exit = caps.exit_legacy().may_be_one();
    for (n, x) in ENTRY_EXIT_PAIRS {
        let e = entry & (1 << n) != 0;
        let xx = exit & (1 << x) != 0;
        if e != xx {
            let (index, bit) = if e {
                (msr::IA32_VMX_ENTRY_CTLS, n)
            } else {
                (msr::IA32_VMX_EXIT_CTLS, x)
            };
            out.push(
                Severity::Warning,
                Invariant::EntryExitPair,
                index,
                1u64 << (32 + bit),
                format!(
                    "entry control {n} / exit control {x} pair allowed on one side only (KVM rejects or clears the pair)"
                ),
            );
        }
    }
    // FRED: entry LOAD_IA32_FRED (23) vs secondary-exit SAVE|LOAD_IA32_FRED (0, 1).
    let fred_entry = entry & (1 << 23) != 0;
    let exit2 = caps.secondary_exit().map_or(0, |s| s.may_be_one());
    let fred_exit = exit & (1 << 31) != 0 && exit2 & 0b11 != 0;
    if fred_entry != fred_exit {
        let (index, bits) = if fred_entry {
            (msr::IA32_VMX_ENTRY_CTLS, 1u64 << (32 + 23))
        } else {
            (msr::IA32_VMX_EXIT_CTLS2, exit2 & 0b11)
        };
        out.push(
            Severity::Warning,
            Invariant::EntryExitPair,
            index,
            bits,
            "FRED entry/secondary-exit pair allowed on one side only".into(),
        );
    }
}

/// Checks every invariant; findings are sorted most severe first, then by MSR.
///
/// ```
/// use vmx_caps::check::{check, Severity};
/// use vmx_caps::{RawMsrs, VmxCaps};
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
/// let report = check(&VmxCaps::from_raw(coffee_lake.clone())?);
/// assert!(!report.is_violated());
/// // A broken dump: the pin-based low half (must be 1) sets a bit the high half forbids.
/// let mut raw: RawMsrs = coffee_lake;
/// raw.insert(0x481, 0x0000_007f_0000_0096);
/// let report = check(&VmxCaps::from_raw(raw)?);
/// assert!(report.is_violated());
/// let finding = report.with_severity(Severity::Violation).next().unwrap();
/// assert_eq!((finding.msr, finding.bits), (0x481, 0x80));
/// # Ok::<(), vmx_caps::CapsError>(())
/// ```
pub fn check(caps: &VmxCaps) -> Report {
    let mut out = Out(Vec::new());
    basic_checks(&mut out, caps);
    controls(&mut out, caps);
    presence(&mut out, caps);
    misc_checks(&mut out, caps);
    fixed_checks(&mut out, caps);
    ept_checks(&mut out, caps);
    pair_checks(&mut out, caps);
    let mut findings = out.0;
    findings.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.msr.cmp(&b.msr)));
    Report { findings }
}
