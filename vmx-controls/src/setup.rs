// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The VMCS configuration, computed the way Linux KVM's `setup_vmcs_config` does.
//!
//! Steps, in KVM's order (reference §3.3):
//!
//! 1. primary = adjust(required, optional, IA32_VMX_PROCBASED_CTLS 0x482); a required
//!    control that is not allowed-1 fails ([`SetupError::RequiredControlsMissing`]);
//! 2. if ACTIVATE_SECONDARY_CONTROLS survived: secondary = adjust(.., 0x48B);
//! 3. (32-bit hosts) no VIRTUALIZE_APIC_ACCESSES clears TPR_SHADOW; no TPR_SHADOW clears
//!    APIC_REGISTER_VIRT, VIRTUALIZE_X2APIC_MODE and VIRTUAL_INTR_DELIVERY;
//! 4. EPT capabilities without ENABLE_EPT, VPID capabilities without ENABLE_VPID: an
//!    error with [`OnInconsistent::Error`], else the capabilities are zeroed (and, as
//!    since Linux 6.10, EPT_VIOLATION_VE is cleared with the EPT capabilities);
//! 5. (CPUID: SGX known absent) ENCLS_EXITING cleared;
//! 6. if ACTIVATE_TERTIARY_CONTROLS survived: tertiary = optional & 0x492;
//! 7. exit = adjust(.., 0x483);
//! 8. pin = adjust(.., 0x481); (CPUID: broken-timer parts) VMX_PREEMPTION_TIMER cleared;
//!    no VIRTUAL_INTR_DELIVERY clears POSTED_INTR;
//! 9. entry = adjust(.., 0x484);
//! 10. if exit ACTIVATE_SECONDARY_CONTROLS survived (FRED): secondary exit = optional & 0x493;
//! 11. the entry/exit pair check ([`crate::pairs`]);
//! 12. (CPUID: Nehalem/Westmere) LOAD_IA32_PERF_GLOBAL_CTRL cleared on both sides —
//!     after the pair check, exactly where upstream commit 85434c3c73fc ("Revert \"KVM:
//!     VMX: Move LOAD_IA32_PERF_GLOBAL_CTRL errata handling out of
//!     setup_vmcs_config()\"", v6.13, backported to 6.12.y) puts it, just before the
//!     BASIC MSR is read;
//! 13. BASIC checks: VMCS region larger than 4 KiB, 32-bit physical-address limit
//!     (x86_64 only), VMCS memory type other than write-back.
//!
//! Deliberate differences from KVM:
//!
//! * Sanitize mode ([`OnInconsistent::Sanitize`]): when clearing both sides of an
//!   inconsistent pair would clear a control the CPU forces to 1 (the must-be-1 half of
//!   the legacy IA32_VMX_ENTRY_CTLS 0x484 or IA32_VMX_EXIT_CTLS 0x483; the FRED
//!   secondary VM-exit controls have none), KVM clears it anyway and loads with a
//!   configuration VM entry rejects (SDM 26.2.1). Here the computation fails with
//!   [`SetupError::SanitizeClearsForcedControls`], naming the pairs and the forced bits:
//!   a configuration VM entry rejects is never returned as a success. Only absurd MSRs
//!   reach this (vmx-caps' check already flags the pair).
//!
//! The other differences do not change the result:
//!
//! * KVM warns about the erratum whenever the CPU model matches; here the
//!   [`Diagnostic::PerfGlobalCtrlErratum`] appears only when a bit was actually cleared.
//! * With FRED, KVM checks the primary pair table and returns before looking at the
//!   FRED table; here every inconsistent pair of `policy.pairs` is reported at once.
//!
//! As in KVM, the *legacy* control MSRs are used (default1 bits come out set), the TRUE
//! MSRs are never consulted, and the fix-ups only ever clear bits. An absent optional
//! MSR (0x48B, 0x48C, 0x492, 0x493) reads as 0, like `rdmsr_safe`; where the CPU allows
//! the activating control but the MSR is absent a diagnostic says so.

use core::fmt;

use vmx_caps::VmxCaps;

use crate::controls::{
    ControlBits, ControlField, EntryControls, ExitControls, PinBasedControls, PrimaryControls,
    SecondaryControls, SecondaryExitControls, TertiaryControls,
};
use crate::pairs::{sanitize_pairs, ExitSide, InconsistentPair, OnInconsistent, PairId};
use crate::policy::{has_broken_preemption_timer, perf_global_ctrl_erratum, HostMode, VmcsPolicy};

/// Largest VMCS region KVM accepts ("SDM: VMCS size is never greater than 4kB").
pub const MAX_VMCS_SIZE: u32 = 4096;

/// Memory type write-back (BASIC\[53:50\] = 6), the only one KVM accepts.
pub const VMCS_MEMORY_TYPE_WB: u8 = 6;

/// The result of a successful computation: what KVM stores in `vmcs_config` and
/// `vmx_capability`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct VmcsConfig {
    /// Pin-based controls (`pin_based_exec_ctrl`).
    pub pin: PinBasedControls,
    /// Primary processor-based controls (`cpu_based_exec_ctrl`).
    pub primary: PrimaryControls,
    /// Secondary processor-based controls (`cpu_based_2nd_exec_ctrl`); 0 when
    /// ACTIVATE_SECONDARY_CONTROLS is not in `primary`.
    pub secondary: SecondaryControls,
    /// Tertiary processor-based controls (`cpu_based_3rd_exec_ctrl`).
    pub tertiary: TertiaryControls,
    /// Primary VM-exit controls (`vmexit_ctrl`).
    pub exit: ExitControls,
    /// Secondary VM-exit controls (`vmexit_2nd_ctrl`, FRED series).
    pub secondary_exit: SecondaryExitControls,
    /// VM-entry controls (`vmentry_ctrl`).
    pub entry: EntryControls,
    /// IA32_VMX_BASIC as read (`basic`).
    pub basic: u64,
    /// IA32_VMX_MISC as read (`misc`).
    pub misc: u64,
    /// EPT capabilities, low dword of 0x48C (`vmx_capability.ept`), after step 4.
    pub ept_cap: u32,
    /// VPID capabilities, high dword of 0x48C (`vmx_capability.vpid`), after step 4.
    pub vpid_cap: u32,
}

impl VmcsConfig {
    /// Raw value of one control field, widened to 64 bits (0 for a field this
    /// computation does not configure).
    pub fn field(&self, field: ControlField) -> u64 {
        match field {
            ControlField::PinBased => self.pin.raw_u64(),
            ControlField::Primary => self.primary.raw_u64(),
            ControlField::Secondary => self.secondary.raw_u64(),
            ControlField::Tertiary => self.tertiary.raw_u64(),
            ControlField::Exit => self.exit.raw_u64(),
            ControlField::SecondaryExit => self.secondary_exit.raw_u64(),
            ControlField::Entry => self.entry.raw_u64(),
            // `ControlField` is non-exhaustive: a word a newer x86-kvm-base adds is not
            // configured by this computation.
            _ => 0,
        }
    }
}

/// How much a diagnostic matters.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Severity {
    /// An expected adjustment (KVM does it silently).
    Info,
    /// Something KVM warns about (`pr_warn_once`).
    Warning,
}

/// Something the computation noticed or changed on the way; the configuration is still
/// usable.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Diagnostic {
    /// The CPU allows ACTIVATE_SECONDARY_CONTROLS but IA32_VMX_PROCBASED_CTLS2 (0x48B)
    /// is absent; the secondary controls are 0.
    SecondaryCapsMissing,
    /// 32-bit host without VIRTUALIZE_APIC_ACCESSES: TPR_SHADOW cleared.
    TprShadowWithoutApicAccesses,
    /// No TPR_SHADOW: these APIC-virtualization controls were cleared from the
    /// secondary controls.
    ApicVirtWithoutTprShadow {
        /// What was cleared.
        cleared: SecondaryControls,
    },
    /// EPT capabilities reported without ENABLE_EPT (sanitize mode): caps zeroed.
    EptCapWithoutEnableEpt {
        /// The EPT capabilities that were dropped.
        ept_cap: u32,
    },
    /// Stray EPT capabilities were dropped (sanitize mode) and EPT_VIOLATION_VE, which
    /// needs EPT, was cleared with them (Linux 6.10+, `CONFIG_KVM_INTEL_PROVE_VE`; only
    /// possible with [`VmcsPolicy::with_prove_ve`]).
    EptViolationVeWithoutEpt,
    /// VPID capabilities reported without ENABLE_VPID (sanitize mode): caps zeroed.
    VpidCapWithoutEnableVpid {
        /// The VPID capabilities that were dropped.
        vpid_cap: u32,
    },
    /// The caller says SGX is absent: ENCLS_EXITING cleared.
    EnclsExitingWithoutSgx,
    /// The CPU allows ACTIVATE_TERTIARY_CONTROLS but IA32_VMX_PROCBASED_CTLS3 (0x492) is
    /// absent; the tertiary controls are 0 (ACTIVATE_TERTIARY_CONTROLS stays, as in KVM).
    TertiaryCapsMissing,
    /// The CPU signature is on the broken VMX-preemption-timer list:
    /// VMX_PREEMPTION_TIMER cleared.
    BrokenPreemptionTimer {
        /// CPUID.1:EAX as supplied.
        signature: u32,
    },
    /// No VIRTUAL_INTR_DELIVERY: POSTED_INTR cleared.
    PostedIntrWithoutVid,
    /// The CPU allows exit ACTIVATE_SECONDARY_CONTROLS but IA32_VMX_EXIT_CTLS2 (0x493) is
    /// absent; the secondary VM-exit controls are 0.
    SecondaryExitCapsMissing,
    /// An inconsistent entry/exit pair (sanitize mode): both sides cleared.
    InconsistentPair(InconsistentPair),
    /// Nehalem/Westmere erratum: LOAD_IA32_PERF_GLOBAL_CTRL cleared on entry and exit.
    PerfGlobalCtrlErratum {
        /// Erratum name(s), e.g. "AAK155".
        erratum: &'static str,
    },
}

impl Diagnostic {
    /// Stable snake_case identifier (the `kind` of the JSON report).
    pub const fn kind(&self) -> &'static str {
        match self {
            Diagnostic::SecondaryCapsMissing => "secondary_caps_missing",
            Diagnostic::TprShadowWithoutApicAccesses => "tpr_shadow_without_apic_accesses",
            Diagnostic::ApicVirtWithoutTprShadow { .. } => "apic_virt_without_tpr_shadow",
            Diagnostic::EptCapWithoutEnableEpt { .. } => "ept_cap_without_enable_ept",
            Diagnostic::EptViolationVeWithoutEpt => "ept_violation_ve_without_ept",
            Diagnostic::VpidCapWithoutEnableVpid { .. } => "vpid_cap_without_enable_vpid",
            Diagnostic::EnclsExitingWithoutSgx => "encls_exiting_without_sgx",
            Diagnostic::TertiaryCapsMissing => "tertiary_caps_missing",
            Diagnostic::BrokenPreemptionTimer { .. } => "broken_preemption_timer",
            Diagnostic::PostedIntrWithoutVid => "posted_intr_without_vid",
            Diagnostic::SecondaryExitCapsMissing => "secondary_exit_caps_missing",
            Diagnostic::InconsistentPair(_) => "inconsistent_pair",
            Diagnostic::PerfGlobalCtrlErratum { .. } => "perf_global_ctrl_erratum",
        }
    }

    /// Whether KVM would warn about it.
    pub const fn severity(&self) -> Severity {
        match self {
            Diagnostic::EptCapWithoutEnableEpt { .. }
            | Diagnostic::VpidCapWithoutEnableVpid { .. }
            | Diagnostic::InconsistentPair(_)
            | Diagnostic::PerfGlobalCtrlErratum { .. }
            | Diagnostic::SecondaryCapsMissing
            | Diagnostic::TertiaryCapsMissing
            | Diagnostic::SecondaryExitCapsMissing => Severity::Warning,
            _ => Severity::Info,
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Diagnostic::SecondaryCapsMissing => f.write_str(
                "ACTIVATE_SECONDARY_CONTROLS is allowed but IA32_VMX_PROCBASED_CTLS2 (0x48b) is absent: secondary controls are 0",
            ),
            Diagnostic::TprShadowWithoutApicAccesses => f.write_str(
                "no VIRTUALIZE_APIC_ACCESSES on a 32-bit host: TPR_SHADOW cleared",
            ),
            Diagnostic::ApicVirtWithoutTprShadow { cleared } => {
                write!(f, "no TPR_SHADOW: cleared {cleared} from the secondary controls")
            }
            Diagnostic::EptCapWithoutEnableEpt { ept_cap } => write!(
                f,
                "EPT CAP should not exist if not support 1-setting enable EPT VM-execution control (EPT caps {ept_cap:#x} dropped)"
            ),
            Diagnostic::EptViolationVeWithoutEpt => f.write_str(
                "EPT caps dropped without ENABLE_EPT: EPT_VIOLATION_VE cleared",
            ),
            Diagnostic::VpidCapWithoutEnableVpid { vpid_cap } => write!(
                f,
                "VPID CAP should not exist if not support 1-setting enable VPID VM-execution control (VPID caps {vpid_cap:#x} dropped)"
            ),
            Diagnostic::EnclsExitingWithoutSgx => {
                f.write_str("no SGX (CPUID leaf 0x12): ENCLS_EXITING cleared")
            }
            Diagnostic::TertiaryCapsMissing => f.write_str(
                "ACTIVATE_TERTIARY_CONTROLS is allowed but IA32_VMX_PROCBASED_CTLS3 (0x492) is absent: tertiary controls are 0",
            ),
            Diagnostic::BrokenPreemptionTimer { signature } => write!(
                f,
                "VMX-preemption timer is broken on CPUID signature {signature:#010x}: VMX_PREEMPTION_TIMER cleared"
            ),
            Diagnostic::PostedIntrWithoutVid => {
                f.write_str("no VIRTUAL_INTR_DELIVERY: POSTED_INTR cleared")
            }
            Diagnostic::SecondaryExitCapsMissing => f.write_str(
                "exit ACTIVATE_SECONDARY_CONTROLS is allowed but IA32_VMX_EXIT_CTLS2 (0x493) is absent: secondary VM-exit controls are 0",
            ),
            Diagnostic::InconsistentPair(p) => write!(f, "{p}; both sides cleared"),
            Diagnostic::PerfGlobalCtrlErratum { erratum } => write!(
                f,
                "VM_EXIT_LOAD_IA32_PERF_GLOBAL_CTRL does not work properly. Using workaround (erratum {erratum})"
            ),
        }
    }
}

/// Why no configuration could be computed (KVM: `setup_vmcs_config` returns `-EIO` and
/// kvm_intel refuses to load).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetupError {
    /// Required controls of `field` are not allowed to be 1 (or the field is not
    /// available at all: the activating control or its capability MSR is missing).
    #[error("required {field} not allowed by MSR {msr:#x}: missing {} ({missing:#x}); allowed-1 {allowed1:#x}", describe_missing(.field, .missing))]
    RequiredControlsMissing {
        /// Which control field.
        field: ControlField,
        /// Capability MSR consulted.
        msr: u32,
        /// The required set asked for.
        required: u64,
        /// Required bits that cannot be 1.
        missing: u64,
        /// The allowed-1 settings seen (0 when the field is unavailable).
        allowed1: u64,
    },
    /// Inconsistent entry/exit pairs with [`OnInconsistent::Error`].
    #[error("{} inconsistent VM-Entry/VM-Exit pair(s): {}", .0.len(), join(.0))]
    InconsistentPairs(Vec<InconsistentPair>),
    /// EPT capabilities without ENABLE_EPT, with [`OnInconsistent::Error`].
    #[error("EPT CAP should not exist if not support 1-setting enable EPT VM-execution control (EPT caps {ept_cap:#x})")]
    EptCapWithoutEnableEpt {
        /// The EPT capabilities (low dword of 0x48C).
        ept_cap: u32,
    },
    /// VPID capabilities without ENABLE_VPID, with [`OnInconsistent::Error`].
    #[error("VPID CAP should not exist if not support 1-setting enable VPID VM-execution control (VPID caps {vpid_cap:#x})")]
    VpidCapWithoutEnableVpid {
        /// The VPID capabilities (high dword of 0x48C).
        vpid_cap: u32,
    },
    /// Sanitize mode ([`OnInconsistent::Sanitize`]): clearing both sides of the
    /// inconsistent pairs would clear controls the CPU forces to 1 (the allowed-0 half
    /// of IA32_VMX_ENTRY_CTLS 0x484 / IA32_VMX_EXIT_CTLS 0x483, the legacy MSRs KVM
    /// reads; the FRED secondary VM-exit controls have no must-be-1 half). KVM clears
    /// them anyway and loads; VM entry would then fail its checks on the VMX controls
    /// (SDM 26.2.1.2/26.2.1.3), so this crate refuses the configuration instead.
    #[error(
        "sanitizing inconsistent VM-Entry/VM-Exit pair(s) {} would clear controls the CPU forces to 1 \
         (VM-entry {entry_forced:#x} of IA32_VMX_ENTRY_CTLS 0x484, VM-exit {exit_forced:#x} of IA32_VMX_EXIT_CTLS 0x483); \
         KVM (error_on_inconsistent_vmcs_config=0) would clear them anyway, but VM entry rejects \
         such controls (SDM 26.2.1), so the configuration is refused here",
        join_ids(.pairs)
    )]
    SanitizeClearsForcedControls {
        /// The inconsistent pairs whose clearing hits a forced bit, in table order.
        pairs: Vec<PairId>,
        /// Forced VM-entry controls the sanitizer would clear (must-be-1 bits of 0x484).
        entry_forced: u32,
        /// Forced primary VM-exit controls the sanitizer would clear (must-be-1 bits of
        /// 0x483).
        exit_forced: u32,
    },
    /// BASIC\[44:32\]: the VMCS region is larger than 4 KiB.
    #[error("VMCS region size {size} bytes exceeds 4096 (IA32_VMX_BASIC[44:32])")]
    VmcsSizeTooLarge {
        /// The reported size.
        size: u32,
    },
    /// BASIC\[48\]: physical addresses limited to 32 bits (fatal on x86_64).
    #[error("IA32_VMX_BASIC[48] limits VMX physical addresses to 32 bits (not usable on x86_64)")]
    PhysAddr32Bit,
    /// BASIC\[53:50\]: the VMCS memory type is not write-back.
    #[error("VMCS memory type {memory_type} is not write-back (6) (IA32_VMX_BASIC[53:50])")]
    VmcsMemoryTypeNotWb {
        /// The reported memory type.
        memory_type: u8,
    },
}

fn describe_missing(field: &ControlField, missing: &u64) -> String {
    field.describe_bits(*missing)
}

fn join_ids(pairs: &[PairId]) -> String {
    pairs
        .iter()
        .map(|p| p.name())
        .collect::<Vec<_>>()
        .join(", ")
}

fn join(pairs: &[InconsistentPair]) -> String {
    pairs
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

impl SetupError {
    /// Stable snake_case identifier (the `kind` of the JSON error report).
    pub const fn kind(&self) -> &'static str {
        match self {
            SetupError::RequiredControlsMissing { .. } => "required_controls_missing",
            SetupError::InconsistentPairs(_) => "inconsistent_pairs",
            SetupError::EptCapWithoutEnableEpt { .. } => "ept_cap_without_enable_ept",
            SetupError::VpidCapWithoutEnableVpid { .. } => "vpid_cap_without_enable_vpid",
            SetupError::SanitizeClearsForcedControls { .. } => "sanitize_clears_forced_controls",
            SetupError::VmcsSizeTooLarge { .. } => "vmcs_size_too_large",
            SetupError::PhysAddr32Bit => "phys_addr_32bit",
            SetupError::VmcsMemoryTypeNotWb { .. } => "vmcs_memory_type_not_wb",
        }
    }
}

/// A configuration plus everything noticed on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmcsSetup {
    /// The configuration.
    pub config: VmcsConfig,
    /// Diagnostics in the order the steps produced them.
    pub diagnostics: Vec<Diagnostic>,
}

// KVM `adjust_vmx_controls` on a legacy MSR, with the failure typed.
fn adjust32(
    field: ControlField,
    settings: vmx_caps::AllowedSettings,
    required: u32,
    optional: u32,
) -> Result<u32, SetupError> {
    settings
        .adjust(required, optional)
        .map_err(|e| SetupError::RequiredControlsMissing {
            field,
            msr: field.capability_msr(),
            required: u64::from(e.required),
            missing: u64::from(e.missing),
            allowed1: u64::from(settings.may_be_one()),
        })
}

// KVM `adjust_vmx_controls64` (optional only), extended with a required set.
fn adjust64(
    field: ControlField,
    allowed1: u64,
    required: u64,
    optional: u64,
) -> Result<u64, SetupError> {
    let ctl = (required | optional) & allowed1;
    let missing = required & !ctl;
    if missing != 0 {
        return Err(SetupError::RequiredControlsMissing {
            field,
            msr: field.capability_msr(),
            required,
            missing,
            allowed1,
        });
    }
    Ok(ctl)
}

// A field whose activating control did not survive: only an empty required set is fine.
fn unavailable(field: ControlField, required: u64) -> Result<(), SetupError> {
    if required != 0 {
        return Err(SetupError::RequiredControlsMissing {
            field,
            msr: field.capability_msr(),
            required,
            missing: required,
            allowed1: 0,
        });
    }
    Ok(())
}

// Sanitize mode: refuse when clearing an inconsistent pair would clear a control the
// CPU forces to 1 (legacy MSRs, as KVM reads them). `entry`/`exit` are the words before
// sanitizing.
fn forced_cleared_by_sanitize(
    caps: &VmxCaps,
    policy: &VmcsPolicy,
    entry: EntryControls,
    exit: ExitControls,
    inconsistent: &[InconsistentPair],
) -> Result<(), SetupError> {
    let entry_must = caps.entry_legacy().must_be_one();
    let exit_must = caps.exit_legacy().must_be_one();
    let (mut pairs, mut entry_forced, mut exit_forced) = (Vec::new(), 0u32, 0u32);
    for bad in inconsistent {
        let Some(row) = policy.pairs.iter().find(|p| p.id == bad.pair) else {
            continue;
        };
        let e = entry.bits() & row.entry.bits() & entry_must;
        // The secondary VM-exit controls (FRED) are allowed-1 only: nothing is forced.
        let x = match row.exit {
            ExitSide::Primary(m) => exit.bits() & m.bits() & exit_must,
            ExitSide::Secondary(_) => 0,
        };
        if e | x != 0 {
            pairs.push(row.id);
            entry_forced |= e;
            exit_forced |= x;
        }
    }
    if pairs.is_empty() {
        return Ok(());
    }
    Err(SetupError::SanitizeClearsForcedControls {
        pairs,
        entry_forced,
        exit_forced,
    })
}

// Step 2: secondary controls, only when activated.
fn secondary_controls(
    caps: &VmxCaps,
    policy: &VmcsPolicy,
    primary: PrimaryControls,
    diags: &mut Vec<Diagnostic>,
) -> Result<SecondaryControls, SetupError> {
    if !primary.contains(PrimaryControls::ACTIVATE_SECONDARY_CONTROLS) {
        unavailable(ControlField::Secondary, policy.secondary.required.raw_u64())?;
        return Ok(SecondaryControls::empty());
    }
    match caps.secondary() {
        Some(s) => Ok(SecondaryControls::from_bits_retain(adjust32(
            ControlField::Secondary,
            s,
            policy.secondary.required.bits(),
            policy.secondary.optional.bits(),
        )?)),
        None => {
            diags.push(Diagnostic::SecondaryCapsMissing);
            unavailable(ControlField::Secondary, policy.secondary.required.raw_u64())?;
            Ok(SecondaryControls::empty())
        }
    }
}

// Step 3: APIC-virtualization controls depend on the TPR shadow.
fn apicv_fixups(
    policy: &VmcsPolicy,
    primary: &mut PrimaryControls,
    secondary: &mut SecondaryControls,
    diags: &mut Vec<Diagnostic>,
) {
    if policy.host == HostMode::I386
        && !secondary.contains(SecondaryControls::VIRTUALIZE_APIC_ACCESSES)
        && primary.contains(PrimaryControls::TPR_SHADOW)
    {
        primary.remove(PrimaryControls::TPR_SHADOW);
        diags.push(Diagnostic::TprShadowWithoutApicAccesses);
    }
    if !primary.contains(PrimaryControls::TPR_SHADOW) {
        let apicv = SecondaryControls::APIC_REGISTER_VIRT
            | SecondaryControls::VIRTUALIZE_X2APIC_MODE
            | SecondaryControls::VIRTUAL_INTR_DELIVERY;
        let cleared = *secondary & apicv;
        if !cleared.is_empty() {
            secondary.remove(apicv);
            diags.push(Diagnostic::ApicVirtWithoutTprShadow { cleared });
        }
    }
}

// Step 4: EPT/VPID capabilities must come with their controls. Returns the EPT and VPID
// capabilities KVM keeps.
fn ept_vpid_caps(
    caps: &VmxCaps,
    strict: bool,
    secondary: &mut SecondaryControls,
    diags: &mut Vec<Diagnostic>,
) -> Result<(u32, u32), SetupError> {
    let (mut ept_cap, mut vpid_cap) = caps
        .ept_vpid()
        .map_or((0, 0), |c| (c.ept_raw(), c.vpid_raw()));
    if ept_cap != 0 && !secondary.contains(SecondaryControls::ENABLE_EPT) {
        if strict {
            return Err(SetupError::EptCapWithoutEnableEpt { ept_cap });
        }
        diags.push(Diagnostic::EptCapWithoutEnableEpt { ept_cap });
        ept_cap = 0;
        // Linux 6.10 (PROVE_VE): #VE on EPT violations cannot be offered without EPT.
        if secondary.contains(SecondaryControls::EPT_VIOLATION_VE) {
            secondary.remove(SecondaryControls::EPT_VIOLATION_VE);
            diags.push(Diagnostic::EptViolationVeWithoutEpt);
        }
    }
    if vpid_cap != 0 && !secondary.contains(SecondaryControls::ENABLE_VPID) {
        if strict {
            return Err(SetupError::VpidCapWithoutEnableVpid { vpid_cap });
        }
        diags.push(Diagnostic::VpidCapWithoutEnableVpid { vpid_cap });
        vpid_cap = 0;
    }
    Ok((ept_cap, vpid_cap))
}

// Step 6: tertiary controls, only when activated.
fn tertiary_controls(
    caps: &VmxCaps,
    policy: &VmcsPolicy,
    primary: PrimaryControls,
    diags: &mut Vec<Diagnostic>,
) -> Result<TertiaryControls, SetupError> {
    if !primary.contains(PrimaryControls::ACTIVATE_TERTIARY_CONTROLS) {
        unavailable(ControlField::Tertiary, policy.tertiary.required.bits())?;
        return Ok(TertiaryControls::empty());
    }
    let allowed1 = match caps.tertiary() {
        Some(t) => t.may_be_one(),
        None => {
            diags.push(Diagnostic::TertiaryCapsMissing);
            0
        }
    };
    Ok(TertiaryControls::from_bits_retain(adjust64(
        ControlField::Tertiary,
        allowed1,
        policy.tertiary.required.bits(),
        policy.tertiary.optional.bits(),
    )?))
}

// Step 8: pin-based controls and their fix-ups.
fn pin_based_controls(
    caps: &VmxCaps,
    policy: &VmcsPolicy,
    secondary: SecondaryControls,
    diags: &mut Vec<Diagnostic>,
) -> Result<PinBasedControls, SetupError> {
    let mut pin = PinBasedControls::from_bits_retain(adjust32(
        ControlField::PinBased,
        caps.pin_based_legacy(),
        policy.pin.required.bits(),
        policy.pin.optional.bits(),
    )?);
    if let Some(signature) = policy.cpuid.signature {
        if has_broken_preemption_timer(signature)
            && pin.contains(PinBasedControls::VMX_PREEMPTION_TIMER)
        {
            pin.remove(PinBasedControls::VMX_PREEMPTION_TIMER);
            diags.push(Diagnostic::BrokenPreemptionTimer { signature });
        }
    }
    if !secondary.contains(SecondaryControls::VIRTUAL_INTR_DELIVERY)
        && pin.contains(PinBasedControls::POSTED_INTR)
    {
        pin.remove(PinBasedControls::POSTED_INTR);
        diags.push(Diagnostic::PostedIntrWithoutVid);
    }
    Ok(pin)
}

// Step 10: secondary VM-exit controls (FRED), only when activated.
fn secondary_exit_controls(
    caps: &VmxCaps,
    policy: &VmcsPolicy,
    exit: ExitControls,
    diags: &mut Vec<Diagnostic>,
) -> Result<SecondaryExitControls, SetupError> {
    if !exit.contains(ExitControls::ACTIVATE_SECONDARY_CONTROLS) {
        unavailable(
            ControlField::SecondaryExit,
            policy.secondary_exit.required.bits(),
        )?;
        return Ok(SecondaryExitControls::empty());
    }
    let allowed1 = match caps.secondary_exit() {
        Some(x) => x.may_be_one(),
        None => {
            diags.push(Diagnostic::SecondaryExitCapsMissing);
            0
        }
    };
    Ok(SecondaryExitControls::from_bits_retain(adjust64(
        ControlField::SecondaryExit,
        allowed1,
        policy.secondary_exit.required.bits(),
        policy.secondary_exit.optional.bits(),
    )?))
}

// Steps 11 and 12: entry/exit pairs, then the Nehalem/Westmere PERF_GLOBAL_CTRL
// erratum (after the pair check, as in KVM).
fn pairs_and_errata(
    caps: &VmxCaps,
    policy: &VmcsPolicy,
    entry: &mut EntryControls,
    exit: &mut ExitControls,
    secondary_exit: &mut SecondaryExitControls,
    diags: &mut Vec<Diagnostic>,
) -> Result<(), SetupError> {
    match sanitize_pairs(
        policy.pairs,
        *entry,
        *exit,
        *secondary_exit,
        policy.on_inconsistent,
    ) {
        Ok(s) => {
            forced_cleared_by_sanitize(caps, policy, *entry, *exit, &s.inconsistent)?;
            *entry = s.entry;
            *exit = s.exit;
            *secondary_exit = s.secondary_exit;
            diags.extend(s.inconsistent.into_iter().map(Diagnostic::InconsistentPair));
        }
        Err(e) => return Err(SetupError::InconsistentPairs(e.pairs)),
    }
    if let Some(erratum) = policy.cpuid.signature.and_then(perf_global_ctrl_erratum) {
        if entry.contains(EntryControls::LOAD_IA32_PERF_GLOBAL_CTRL)
            || exit.contains(ExitControls::LOAD_IA32_PERF_GLOBAL_CTRL)
        {
            entry.remove(EntryControls::LOAD_IA32_PERF_GLOBAL_CTRL);
            exit.remove(ExitControls::LOAD_IA32_PERF_GLOBAL_CTRL);
            diags.push(Diagnostic::PerfGlobalCtrlErratum { erratum });
        }
    }
    Ok(())
}

// Step 13: BASIC checks.
fn basic_checks(caps: &VmxCaps, policy: &VmcsPolicy) -> Result<(), SetupError> {
    let basic = caps.basic();
    if basic.vmcs_size() > MAX_VMCS_SIZE {
        return Err(SetupError::VmcsSizeTooLarge {
            size: basic.vmcs_size(),
        });
    }
    if policy.host == HostMode::X86_64 && basic.phys_addr_32bit() {
        return Err(SetupError::PhysAddr32Bit);
    }
    if basic.memory_type() != VMCS_MEMORY_TYPE_WB {
        return Err(SetupError::VmcsMemoryTypeNotWb {
            memory_type: basic.memory_type(),
        });
    }
    Ok(())
}

/// Compute the VMCS configuration for `caps` under `policy`, step by step like KVM's
/// `setup_vmcs_config` (see the module docs).
///
/// ```
/// use vmx_caps::VmxCaps;
/// use vmx_controls::{
///     setup_vmcs_config, PinBasedControls, SecondaryControls, VmcsPolicy,
/// };
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
/// let caps = VmxCaps::from_raw(coffee_lake)?;
/// // What kvm_intel programs on this CPU, with Linux's required and optional controls.
/// let setup = setup_vmcs_config(&caps, &VmcsPolicy::linux())?;
/// let c = &setup.config;
/// assert!(c.pin.contains(PinBasedControls::EXT_INTR_MASK | PinBasedControls::NMI_EXITING));
/// assert!(!c.pin.contains(PinBasedControls::POSTED_INTR)); // not on this client part
/// assert!(c.secondary.contains(SecondaryControls::ENABLE_EPT | SecondaryControls::UNRESTRICTED_GUEST));
/// assert!(setup.diagnostics.is_empty());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn setup_vmcs_config(caps: &VmxCaps, policy: &VmcsPolicy) -> Result<VmcsSetup, SetupError> {
    let mut diags = Vec::new();
    let strict = policy.on_inconsistent == OnInconsistent::Error;

    // Step 1: primary processor-based controls.
    let mut primary = PrimaryControls::from_bits_retain(adjust32(
        ControlField::Primary,
        caps.primary_legacy(),
        policy.primary.required.bits(),
        policy.primary.optional.bits(),
    )?);
    let mut secondary = secondary_controls(caps, policy, primary, &mut diags)?;
    apicv_fixups(policy, &mut primary, &mut secondary, &mut diags);
    let (ept_cap, vpid_cap) = ept_vpid_caps(caps, strict, &mut secondary, &mut diags)?;

    // Step 5: ENCLS exiting only with SGX (only when the caller knows).
    if policy.cpuid.sgx == Some(false) && secondary.contains(SecondaryControls::ENCLS_EXITING) {
        secondary.remove(SecondaryControls::ENCLS_EXITING);
        diags.push(Diagnostic::EnclsExitingWithoutSgx);
    }
    let tertiary = tertiary_controls(caps, policy, primary, &mut diags)?;

    // Step 7: VM-exit controls.
    let mut exit = ExitControls::from_bits_retain(adjust32(
        ControlField::Exit,
        caps.exit_legacy(),
        policy.exit.required.bits(),
        policy.exit.optional.bits(),
    )?);
    let pin = pin_based_controls(caps, policy, secondary, &mut diags)?;

    // Step 9: VM-entry controls.
    let mut entry = EntryControls::from_bits_retain(adjust32(
        ControlField::Entry,
        caps.entry_legacy(),
        policy.entry.required.bits(),
        policy.entry.optional.bits(),
    )?);
    let mut secondary_exit = secondary_exit_controls(caps, policy, exit, &mut diags)?;
    pairs_and_errata(
        caps,
        policy,
        &mut entry,
        &mut exit,
        &mut secondary_exit,
        &mut diags,
    )?;
    basic_checks(caps, policy)?;

    Ok(VmcsSetup {
        config: VmcsConfig {
            pin,
            primary,
            secondary,
            tertiary,
            exit,
            secondary_exit,
            entry,
            basic: caps.basic().raw(),
            misc: caps.misc().raw(),
            ept_cap,
            vpid_cap,
        },
        diagnostics: diags,
    })
}
