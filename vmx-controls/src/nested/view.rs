// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! [`nested_view`]: the VMX capability MSRs KVM reports to L1, helper by helper as
//! `nested_vmx_setup_ctls_msrs` (arch/x86/kvm/vmx/nested.c) computes them.

use vmx_caps::{Dump, RawMsrs, VmxCaps};

use super::assumptions::{EffectiveParams, NestedAssumptions, Param, X86_CR4_UMIP};
use super::ept::*;
use super::provenance::{gate, BitProvenance, WordBuilder};
use super::{LINUX_VERSION, VMCS12_REVISION, VMCS12_SIZE, VMX_MISC_EMULATED_PREEMPTION_TIMER_RATE};
use crate::controls::{
    ControlField, EntryControls as N, ExitControls as X, PinBasedControls as P,
    PrimaryControls as C, SecondaryControls as S,
};
use crate::policy::VmcsPolicy;
use crate::setup::{setup_vmcs_config, SetupError, VmcsSetup};

/// Why there is no nested view.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NestedError {
    /// L0's `setup_vmcs_config` fails: kvm_intel does not load, so there is no L1.
    /// The [`SetupError`] is the source.
    #[error("kvm_intel refuses to load on this CPU (setup_vmcs_config fails)")]
    L0Refuses(#[from] SetupError),
    /// `nested=0`: `vmx_get_feature_msr` returns "unsupported" for every VMX MSR.
    #[error("nested=0: KVM exposes no VMX capability MSR to its guests (vmx_get_feature_msr)")]
    NestedDisabled,
    /// The model built an MSR set vmx-caps rejects (a bug in this crate; reported,
    /// never a panic).
    #[error("nested model produced an unusable capability set: {detail}")]
    Model {
        /// What vmx-caps reported.
        detail: String,
    },
}

impl NestedError {
    /// Stable snake_case identifier.
    pub const fn kind(&self) -> &'static str {
        match self {
            NestedError::L0Refuses(e) => e.kind(),
            NestedError::NestedDisabled => "nested_disabled",
            NestedError::Model { .. } => "nested_model",
        }
    }
}

/// A note about a whole MSR of the nested view (BASIC, MISC, fixed bits, ...).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct MsrNote {
    /// The MSR.
    pub msr: u32,
    /// The Linux function the value comes from.
    pub rule: &'static str,
    /// What KVM does with it.
    pub message: String,
}

/// What KVM reports to L1 on a CPU, with where every bit comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NestedView {
    /// The MSRs KVM exposes through its feature MSRs (0x480..=0x491).
    pub caps: VmxCaps,
    /// L0's own VMCS configuration (what kvm_intel runs its guests with).
    pub l0: VmcsSetup,
    /// The assumptions used.
    pub assumptions: NestedAssumptions,
    /// [`NestedAssumptions::summary`] against L0's capabilities.
    pub summary: String,
    /// The module parameters after `vmx_hardware_setup`.
    pub params: EffectiveParams,
    /// Per-bit provenance of the five control words (pin, primary, secondary, exit,
    /// entry; TRUE MSRs), the EPT/VPID capabilities and VMFUNC.
    pub bits: Vec<BitProvenance>,
    /// Per-MSR notes, including the MSRs KVM does not expose.
    pub notes: Vec<MsrNote>,
}

impl NestedView {
    /// The nested view as a dump in the fixtures' format (feeds every vmxcap command).
    pub fn to_dump(&self, cpu: &str) -> Dump {
        Dump::from_caps(
            &self.caps,
            format!("{cpu} - L1 view under KVM (predicted)"),
            format!(
                "vmx-controls nested model of {LINUX_VERSION} nested_vmx_setup_ctls_msrs; {}",
                self.summary
            ),
        )
    }

    /// The provenance records of one control field.
    pub fn field_bits(&self, field: ControlField) -> impl Iterator<Item = &BitProvenance> {
        self.bits.iter().filter(move |b| b.field == Some(field))
    }
}

const PIN_RULE: &str = "nested_vmx_setup_pinbased_ctls";
const EXIT_RULE: &str = "nested_vmx_setup_exit_ctls";
const ENTRY_RULE: &str = "nested_vmx_setup_entry_ctls";
const CPU_RULE: &str = "nested_vmx_setup_cpubased_ctls";
const SEC_RULE: &str = "nested_vmx_setup_secondary_ctls";

fn param_gate(p: Param) -> Result<(), String> {
    gate(p.on, || p.why_off.unwrap_or("off").to_owned())
}

fn control_name(field: ControlField) -> impl Fn(u32) -> Option<&'static str> {
    move |bit| match field {
        ControlField::PinBased => P::bit_name(bit),
        ControlField::Primary => C::bit_name(bit),
        ControlField::Secondary => S::bit_name(bit),
        ControlField::Exit => X::bit_name(bit),
        ControlField::Entry => N::bit_name(bit),
        _ => None,
    }
}

fn u(bits: u32) -> u64 {
    u64::from(bits)
}

/// `nested_vmx_setup_pinbased_ctls`.
fn pinbased(setup: &VmcsSetup, p: &EffectiveParams) -> WordBuilder {
    let mut w = WordBuilder::new(
        0x48D,
        Some(ControlField::PinBased),
        PIN_RULE,
        32,
        setup.config.field(ControlField::PinBased),
    );
    w.low = u(P::DEFAULT1.bits());
    w.pass(u(
        (P::EXT_INTR_MASK | P::NMI_EXITING | P::VIRTUAL_NMIS).bits()
    ));
    w.pass_if(
        u(P::POSTED_INTR.bits()),
        param_gate(p.apicv).map_err(|e| format!("enable_apicv off: {e}")),
    );
    w.default1(u(P::DEFAULT1.bits()));
    w.emulate(
        u(P::VMX_PREEMPTION_TIMER.bits()),
        "KVM emulates the VMX-preemption timer with an hrtimer",
    );
    w
}

/// `nested_vmx_setup_exit_ctls` (with the CET gating of the Linux 6.18 CET series).
fn exit(setup: &VmcsSetup, p: &EffectiveParams) -> WordBuilder {
    let mut w = WordBuilder::new(
        0x48F,
        Some(ControlField::Exit),
        EXIT_RULE,
        32,
        setup.config.field(ControlField::Exit),
    );
    w.low = u(X::DEFAULT1.bits());
    w.pass(u((X::HOST_ADDR_SPACE_SIZE
        | X::LOAD_IA32_PAT
        | X::SAVE_IA32_PAT
        | X::CLEAR_BNDCFGS
        | X::LOAD_CET_STATE)
        .bits()));
    w.default1(u(X::DEFAULT1.bits()));
    w.emulate(
        u((X::LOAD_IA32_EFER | X::SAVE_IA32_EFER).bits()),
        "KVM switches EFER for L1/L2 itself",
    );
    w.emulate(
        u(X::SAVE_VMX_PREEMPTION_TIMER.bits()),
        "the preemption timer is emulated",
    );
    w.emulate(
        u(X::ACK_INTR_ON_EXIT.bits()),
        "KVM acknowledges the interrupt for L1 in software",
    );
    w.emulate(
        u(X::LOAD_IA32_PERF_GLOBAL_CTRL.bits()),
        "KVM loads PERF_GLOBAL_CTRL through its vPMU",
    );
    if !p.cet {
        w.mask(
            u(X::LOAD_CET_STATE.bits()),
            "host has neither SHSTK nor IBT",
        );
    }
    // "We support free control of debug control saving."
    w.low &= !u(X::SAVE_DEBUG_CONTROLS.bits());
    w
}

/// `nested_vmx_setup_entry_ctls`.
fn entry(setup: &VmcsSetup, p: &EffectiveParams) -> WordBuilder {
    let mut w = WordBuilder::new(
        0x490,
        Some(ControlField::Entry),
        ENTRY_RULE,
        32,
        setup.config.field(ControlField::Entry),
    );
    w.low = u(N::DEFAULT1.bits());
    w.pass(u((N::IA32E_MODE
        | N::LOAD_IA32_PAT
        | N::LOAD_BNDCFGS
        | N::LOAD_CET_STATE)
        .bits()));
    w.default1(u(N::DEFAULT1.bits()));
    w.emulate(
        u(N::LOAD_IA32_EFER.bits()),
        "KVM switches EFER for L1/L2 itself",
    );
    w.emulate(
        u(N::LOAD_IA32_PERF_GLOBAL_CTRL.bits()),
        "KVM loads PERF_GLOBAL_CTRL through its vPMU",
    );
    if !p.cet {
        w.mask(
            u(N::LOAD_CET_STATE.bits()),
            "host has neither SHSTK nor IBT",
        );
    }
    // "We support free control of debug control loading."
    w.low &= !u(N::LOAD_DEBUG_CONTROLS.bits());
    w
}

/// `nested_vmx_setup_cpubased_ctls`.
fn cpubased(setup: &VmcsSetup) -> WordBuilder {
    let mut w = WordBuilder::new(
        0x48E,
        Some(ControlField::Primary),
        CPU_RULE,
        32,
        setup.config.field(ControlField::Primary),
    );
    w.low = u(C::DEFAULT1.bits());
    w.pass(u((C::INTR_WINDOW_EXITING
        | C::NMI_WINDOW_EXITING
        | C::USE_TSC_OFFSETTING
        | C::HLT_EXITING
        | C::INVLPG_EXITING
        | C::MWAIT_EXITING
        | C::CR3_LOAD_EXITING
        | C::CR3_STORE_EXITING
        | C::CR8_LOAD_EXITING
        | C::CR8_STORE_EXITING
        | C::MOV_DR_EXITING
        | C::UNCOND_IO_EXITING
        | C::USE_IO_BITMAPS
        | C::MONITOR_TRAP_FLAG
        | C::MONITOR_EXITING
        | C::RDPMC_EXITING
        | C::RDTSC_EXITING
        | C::PAUSE_EXITING
        | C::TPR_SHADOW
        | C::ACTIVATE_SECONDARY_CONTROLS)
        .bits()));
    w.default1(u(C::DEFAULT1.bits()));
    w.emulate(
        u(C::USE_MSR_BITMAPS.bits()),
        "L1's MSR bitmap is honoured in software even when L0 runs L2 without one",
    );
    // "We support free control of CR3 access interception."
    w.low &= !u((C::CR3_LOAD_EXITING | C::CR3_STORE_EXITING).bits());
    w
}

/// `nested_vmx_setup_secondary_ctls`: the secondary controls, EPT/VPID caps, VMFUNC.
struct SecondaryParts {
    controls: WordBuilder,
    ept: WordBuilder,
    vpid: WordBuilder,
    vmfunc: WordBuilder,
}

fn secondary(setup: &VmcsSetup, p: &EffectiveParams) -> SecondaryParts {
    let cfg = &setup.config;
    let mut w = WordBuilder::new(
        0x48B,
        Some(ControlField::Secondary),
        SEC_RULE,
        32,
        cfg.field(ControlField::Secondary),
    );
    w.pass(u((S::DESC
        | S::ENABLE_RDTSCP
        | S::VIRTUALIZE_X2APIC_MODE
        | S::WBINVD_EXITING
        | S::APIC_REGISTER_VIRT
        | S::VIRTUAL_INTR_DELIVERY
        | S::RDRAND_EXITING
        | S::ENABLE_INVPCID
        | S::ENABLE_VMFUNC
        | S::RDSEED_EXITING
        | S::ENABLE_XSAVES
        | S::TSC_SCALING
        | S::ENABLE_USR_WAIT_PAUSE)
        .bits()));
    w.emulate(
        u(S::SHADOW_VMCS.bits()),
        "\"We can emulate VMCS shadowing, even if the hardware doesn't support it\"",
    );
    // EPT capabilities start from the hardware's (vmx_capability.ept).
    let hw_ept = u64::from(cfg.ept_cap);
    let mut e = WordBuilder::new(0x48C, None, SEC_RULE, 64, hw_ept).from(
        "the CPU's IA32_VMX_EPT_VPID_CAP",
        "the CPU's IA32_VMX_EPT_VPID_CAP lacks it",
    );
    let mut f = WordBuilder::new(0x491, None, SEC_RULE, 64, 0);
    let ept = param_gate(p.ept).map_err(|e| format!("EPT off: {e}"));
    w.pass_if(u(S::ENABLE_EPT.bits()), ept.clone());
    e.pass_if(
        EPT_PAGE_WALK_4 | EPT_PAGE_WALK_5 | EPTP_WB | EPT_INVEPT | EPT_EXECUTE_ONLY,
        ept.clone(),
    );
    e.emulate_if(
        EPT_EXTENT_GLOBAL | EPT_EXTENT_CONTEXT | EPT_2MB_PAGE | EPT_1GB_PAGE,
        "KVM's shadow EPT supports them whatever the hardware",
        ept.clone(),
    );
    let ad = param_gate(p.eptad).map_err(|e| format!("EPT A/D off: {e}"));
    w.emulate_if(
        u(S::ENABLE_PML.bits()),
        "PML is emulated with EPT A/D bits",
        ad.clone(),
    );
    e.emulate_if(EPT_AD, "KVM's shadow EPT sets A/D bits for L1", ad);
    // "Advertise EPTP switching irrespective of hardware support, KVM emulates it in
    // software so long as VMFUNC is supported."
    f.emulate_if(
        vmx_caps::fixed::VMX_VMFUNC_EPTP_SWITCHING,
        "EPTP switching is emulated",
        ept.and_then(|()| {
            gate(p.vmfunc, || {
                "no ENABLE_VMFUNC in L0's VMCS configuration".into()
            })
        }),
    );
    let hw_vpid = u64::from(cfg.vpid_cap) << 32;
    let mut v = WordBuilder::new(0x48C, None, SEC_RULE, 64, hw_vpid);
    let vpid = param_gate(p.vpid).map_err(|e| format!("VPID off: {e}"));
    w.pass_if(u(S::ENABLE_VPID.bits()), vpid.clone());
    v.emulate_if(
        VPID_INVVPID | VPID_EXTENT_SUPPORTED_MASK,
        "all INVVPID types are offered (treated as all-context; Hyper-V requires them)",
        vpid,
    );
    let ug = param_gate(p.unrestricted_guest).map_err(|e| format!("unrestricted guest off: {e}"));
    w.pass_if(u(S::UNRESTRICTED_GUEST.bits()), ug);
    let fp = param_gate(p.flexpriority).map_err(|e| format!("flexpriority off: {e}"));
    w.pass_if(u(S::VIRTUALIZE_APIC_ACCESSES.bits()), fp);
    let sgx = param_gate(p.sgx).map_err(|e| format!("SGX off: {e}"));
    w.pass_if(u(S::ENCLS_EXITING.bits()), sgx);
    SecondaryParts {
        controls: w,
        ept: e,
        vpid: v,
        vmfunc: f,
    }
}

/// IA32_VMX_BASIC bit 54 (`VMX_BASIC_INOUT`).
const BASIC_INOUT: u64 = 1 << 54;
/// IA32_VMX_BASIC bit 55 (`VMX_BASIC_TRUE_CTLS`).
const BASIC_TRUE_CTLS: u64 = 1 << 55;
/// IA32_VMX_BASIC bit 56 (`VMX_BASIC_NO_HW_ERROR_CODE_CC`).
const BASIC_NO_HW_ERROR_CODE_CC: u64 = 1 << 56;
/// Memory type write-back in BASIC[53:50].
const BASIC_MEMTYPE_WB: u64 = 6 << 50;

/// `nested_vmx_setup_basic`: KVM's own VMCS12 revision and size, write-back, TRUE
/// controls; INS/OUTS information and the relaxed error-code check only when the CPU
/// has them.
fn basic(setup: &VmcsSetup, notes: &mut Vec<MsrNote>) -> u64 {
    let hw = setup.config.basic;
    let mut v = u64::from(VMCS12_REVISION)
        | (u64::from(VMCS12_SIZE) << 32)
        | BASIC_MEMTYPE_WB
        | BASIC_TRUE_CTLS;
    v |= hw & (BASIC_INOUT | BASIC_NO_HW_ERROR_CODE_CC);
    notes.push(MsrNote {
        msr: 0x480,
        rule: "nested_vmx_setup_basic",
        message: format!(
            "KVM's VMCS12: revision {VMCS12_REVISION:#x}, {VMCS12_SIZE} bytes, write-back, TRUE controls; \
             INS/OUTS info {} and no-HW-error-code check {} (passed from the CPU); \
             no dual-monitor treatment",
            if v & BASIC_INOUT != 0 { "yes" } else { "no" },
            if v & BASIC_NO_HW_ERROR_CODE_CC != 0 { "yes" } else { "no" },
        ),
    });
    v
}

/// `nested_vmx_setup_misc_data`: only "store EFER.LMA" comes from the CPU.
fn misc(setup: &VmcsSetup, notes: &mut Vec<MsrNote>) -> u64 {
    use vmx_caps::misc::*;
    let v = (setup.config.misc & VMX_MISC_SAVE_EFER_LMA)
        | VMX_MISC_VMWRITE_SHADOW_RO_FIELDS
        | VMX_MISC_EMULATED_PREEMPTION_TIMER_RATE
        | VMX_MISC_ACTIVITY_HLT
        | VMX_MISC_ACTIVITY_WAIT_SIPI;
    notes.push(MsrNote {
        msr: 0x485,
        rule: "nested_vmx_setup_misc_data",
        message: format!(
            "store-EFER.LMA from the CPU; VMWRITE to exit-information fields, HLT and wait-for-SIPI \
             activity states and preemption-timer rate {VMX_MISC_EMULATED_PREEMPTION_TIMER_RATE} emulated; \
             no CR3-target values, no shutdown state, no PT, MSEG revision 0 (CPU MISC was {:#x})",
            setup.config.misc
        ),
    });
    v
}

/// CR0/CR4 FIXED0 picked by KVM ("the standard core2 setting"), FIXED1 from the CPU.
const VMXON_CR0_ALWAYSON: u64 = 0x8000_0021;
const VMXON_CR4_ALWAYSON: u64 = 0x2000;

/// `nested_vmx_setup_cr_fixed`.
fn cr_fixed(caps: &VmxCaps, p: &EffectiveParams, notes: &mut Vec<MsrNote>) -> [u64; 4] {
    let cr4_fixed1 = caps.cr4_fixed().fixed1 | if p.umip_emulated { X86_CR4_UMIP } else { 0 };
    notes.push(MsrNote {
        msr: 0x489,
        rule: "nested_vmx_setup_cr_fixed",
        message: format!(
            "FIXED0 are KVM's (CR0 PE|PG|NE, CR4 VMXE); FIXED1 read from the CPU{}; per-vCPU CPUID later narrows CR4_FIXED1",
            if p.umip_emulated {
                ", plus CR4.UMIP (vmx_umip_emulated: no host UMIP, descriptor-table exiting)"
            } else {
                ""
            }
        ),
    });
    [
        VMXON_CR0_ALWAYSON,
        caps.cr0_fixed().fixed1,
        VMXON_CR4_ALWAYSON,
        cr4_fixed1,
    ]
}

/// `nested_vmx_calc_vmcs_enum_msr`: the highest field index of any vmcs12 field,
/// TSC_MULTIPLIER (encoding 0x2032, index 25), shifted into bits 9:1.
pub const NESTED_VMCS_ENUM: u64 = 25 << 1;

fn legacy(low: u64, high: u64, default1: u32) -> u64 {
    (low | u64::from(default1)) | (high << 32)
}

fn true_msr(low: u64, high: u64) -> u64 {
    low | (high << 32)
}

/// The nested VMX MSRs KVM reports to L1 on a CPU with capabilities `caps`
/// (`nested_vmx_setup_ctls_msrs` read through `vmx_get_vmx_msr`, the `/dev/kvm` feature
/// MSRs before any per-vCPU CPUID adjustment).
///
/// Fails when L0 itself does not load ([`NestedError::L0Refuses`]) or with `nested=0`.
pub fn nested_view(caps: &VmxCaps, a: &NestedAssumptions) -> Result<NestedView, NestedError> {
    nested_view_with(caps, a, &a.l0_policy())
}

/// [`nested_view`] with L0's `setup_vmcs_config` run under `policy` (e.g.
/// `error_on_inconsistent_vmcs_config=0`) instead of [`NestedAssumptions::l0_policy`].
pub fn nested_view_with(
    caps: &VmxCaps,
    a: &NestedAssumptions,
    policy: &VmcsPolicy,
) -> Result<NestedView, NestedError> {
    let setup = setup_vmcs_config(caps, policy)?;
    if !a.nested {
        return Err(NestedError::NestedDisabled);
    }
    let params = EffectiveParams::new(a, caps, &setup.config);
    let pin = pinbased(&setup, &params);
    let exit = exit(&setup, &params);
    let entry = entry(&setup, &params);
    let cpu = cpubased(&setup);
    let sec = secondary(&setup, &params);
    let mut notes = Vec::new();
    let basic = basic(&setup, &mut notes);
    let misc = misc(&setup, &mut notes);
    let [cr0_0, cr0_1, cr4_0, cr4_1] = cr_fixed(caps, &params, &mut notes);
    notes.push(MsrNote {
        msr: 0x48A,
        rule: "nested_vmx_calc_vmcs_enum_msr",
        message: "highest vmcs12 field index 25 (TSC_MULTIPLIER), whatever the CPU reports".into(),
    });
    for (msr, why) in [
        (
            0x492,
            "no nested tertiary controls: vmx_get_vmx_msr has no case for IA32_VMX_PROCBASED_CTLS3",
        ),
        (
            0x493,
            "no nested FRED: vmx_get_vmx_msr has no case for IA32_VMX_EXIT_CTLS2",
        ),
    ] {
        notes.push(MsrNote {
            msr,
            rule: "vmx_get_vmx_msr",
            message: format!("not exposed ({why})"),
        });
    }
    let ept_vpid = sec.ept.high | sec.vpid.high;
    let raw: RawMsrs = [
        (0x480, basic),
        (0x481, legacy(pin.low, pin.high, P::DEFAULT1.bits())),
        (0x482, legacy(cpu.low, cpu.high, C::DEFAULT1.bits())),
        (0x483, legacy(exit.low, exit.high, X::DEFAULT1.bits())),
        (0x484, legacy(entry.low, entry.high, N::DEFAULT1.bits())),
        (0x485, misc),
        (0x486, cr0_0),
        (0x487, cr0_1),
        (0x488, cr4_0),
        (0x489, cr4_1),
        (0x48A, NESTED_VMCS_ENUM),
        (0x48B, true_msr(0, sec.controls.high)),
        (0x48C, ept_vpid),
        (0x48D, true_msr(pin.low, pin.high)),
        (0x48E, true_msr(cpu.low, cpu.high)),
        (0x48F, true_msr(exit.low, exit.high)),
        (0x490, true_msr(entry.low, entry.high)),
        (0x491, sec.vmfunc.high),
    ]
    .into_iter()
    .collect();
    let mut bits = Vec::with_capacity(5 * 32 + 64 + 64);
    for w in [&pin, &cpu, &sec.controls, &exit, &entry] {
        let field = w.field();
        bits.extend(w.finish(control_name(field)));
    }
    bits.extend(sec.ept.finish(cap_name).into_iter().filter(|b| b.bit < 32));
    bits.extend(
        sec.vpid
            .finish(cap_name)
            .into_iter()
            .filter(|b| b.bit >= 32),
    );
    bits.extend(
        sec.vmfunc
            .finish(|b| (b == 0).then_some("EPTP Switching"))
            .into_iter()
            .take(1),
    );
    // Every index is a VMX capability MSR and every required one is present.
    let nested = VmxCaps::from_raw(raw).map_err(|e| NestedError::Model {
        detail: e.to_string(),
    })?;
    Ok(NestedView {
        caps: nested,
        l0: setup,
        assumptions: *a,
        summary: a.summary(caps),
        params,
        bits,
        notes,
    })
}
