// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! What to ask of the CPU: required and optional controls per field, the pair table,
//! the inconsistency policy, and the CPUID facts some fix-ups need.
//!
//! [`VmcsPolicy::linux`] is current Linux KVM (`KVM_REQUIRED_VMX_*` /
//! `KVM_OPTIONAL_VMX_*` in `arch/x86/kvm/vmx/vmx.h`, including the CET pair, without
//! FRED). FRED ([`VmcsPolicy::with_fred`]) and EPT-violation #VE
//! ([`VmcsPolicy::with_prove_ve`]) are opt-in; any set can be replaced by assigning the
//! public fields.

use crate::controls::{
    EntryControls, ExitControls, PinBasedControls, PrimaryControls, SecondaryControls,
    SecondaryExitControls, TertiaryControls,
};
use crate::pairs::{EntryExitPair, OnInconsistent, ALL_ENTRY_EXIT_PAIRS, VMCS_ENTRY_EXIT_PAIRS};

/// Required (`min`) and optional (`opt`) controls of one field, as KVM's
/// `adjust_vmx_controls(min, opt, msr)` takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ControlSet<T> {
    /// Controls that must be allowed-1, or the configuration fails.
    pub required: T,
    /// Controls taken when allowed-1, silently dropped otherwise.
    pub optional: T,
}

/// Which kernel flavour the policy models; a few steps differ for 32-bit hosts.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum HostMode {
    /// x86_64 kernel: CR8 exiting, host address-space size and IA-32e mode guest are
    /// required, and BASIC\[48\] (32-bit address limit) is fatal.
    #[default]
    X86_64,
    /// 32-bit kernel: no VIRTUALIZE_APIC_ACCESSES clears TPR_SHADOW (step 4), BASIC\[48\]
    /// is accepted.
    I386,
}

/// CPUID facts for the fix-ups that depend on them. Each fix-up runs only when its
/// fact is supplied (`Some`); with `CpuidInfo::default()` none runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct CpuidInfo {
    /// CPUID.1:EAX (stepping, model, family, type, extended model/family). Drives the
    /// VMX-preemption-timer errata list and the Nehalem/Westmere PERF_GLOBAL_CTRL
    /// erratum. Only meaningful on Intel CPUs.
    pub signature: Option<u32>,
    /// Whether SGX is present: CPUID.0:EAX >= 0x12 and CPUID.(EAX=0x12,ECX=0):EAX\[0\]
    /// (Linux `cpu_has_sgx()`). `Some(false)` clears ENCLS_EXITING.
    pub sgx: Option<bool>,
}

impl CpuidInfo {
    /// Both facts known.
    pub const fn new(signature: u32, sgx: bool) -> Self {
        Self {
            signature: Some(signature),
            sgx: Some(sgx),
        }
    }

    /// Display family of a CPUID.1:EAX signature (base family, plus the extended family
    /// when the base is 0xF).
    pub const fn family(signature: u32) -> u32 {
        let base = (signature >> 8) & 0xf;
        if base == 0xf {
            base + ((signature >> 20) & 0xff)
        } else {
            base
        }
    }

    /// Display model of a CPUID.1:EAX signature (extended model prepended for families
    /// 6 and 0xF).
    pub const fn model(signature: u32) -> u32 {
        let base = (signature >> 4) & 0xf;
        let family = (signature >> 8) & 0xf;
        if family == 0x6 || family == 0xf {
            base | (((signature >> 16) & 0xf) << 4)
        } else {
            base
        }
    }
}

/// CPUID.1:EAX values (reserved bits 15:14 and 31:28 cleared) of parts whose
/// VMX-preemption timer is broken; Linux `vmx_preemption_cpu_tfms[]` (list taken from
/// VirtualBox HMR0.cpp; errata BA86, AAX65, AAT59, AAU65, AAO95, AAN92, AAP86, AAM126,
/// AAJ124, AAK139 and the Xeon E3-1220 V2).
pub const BROKEN_PREEMPTION_TIMER_SIGNATURES: [u32; 9] = [
    0x000206E6, 0x00020652, 0x00020655, 0x000106E5, 0x000106A0, 0x000106A1, 0x000106A4, 0x000106A5,
    0x000306A8,
];

/// Linux `cpu_has_broken_vmx_preemption_timer()` for a given CPUID.1:EAX.
pub const fn has_broken_preemption_timer(signature: u32) -> bool {
    let eax = signature & !((0x3 << 14) | (0xf << 28));
    let mut i = 0;
    while i < BROKEN_PREEMPTION_TIMER_SIGNATURES.len() {
        if BROKEN_PREEMPTION_TIMER_SIGNATURES[i] == eax {
            return true;
        }
        i += 1;
    }
    false
}

/// Family-6 models whose VM exit may clear IA32_PERF_GLOBAL_CTRL\[34:32\], with the
/// erratum names: Nehalem-EP (AAK155), Nehalem (AAP115), Westmere (AAT100), Westmere-EP
/// (BC86, AAY89, BD102), Nehalem-EX (BA97).
pub const PERF_GLOBAL_CTRL_ERRATA: [(u32, &str); 5] = [
    (26, "AAK155"),
    (30, "AAP115"),
    (37, "AAT100"),
    (44, "BC86,AAY89,BD102"),
    (46, "BA97"),
];

/// The erratum name if this CPUID.1:EAX is one of the Nehalem/Westmere parts whose
/// LOAD_IA32_PERF_GLOBAL_CTRL controls KVM must not use.
pub fn perf_global_ctrl_erratum(signature: u32) -> Option<&'static str> {
    if CpuidInfo::family(signature) != 6 {
        return None;
    }
    let model = CpuidInfo::model(signature);
    PERF_GLOBAL_CTRL_ERRATA
        .iter()
        .find(|(m, _)| *m == model)
        .map(|(_, name)| *name)
}

/// Everything [`setup_vmcs_config`](crate::setup::setup_vmcs_config) needs besides the
/// capabilities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmcsPolicy {
    /// Pin-based controls.
    pub pin: ControlSet<PinBasedControls>,
    /// Primary processor-based controls.
    pub primary: ControlSet<PrimaryControls>,
    /// Secondary processor-based controls (KVM requires none).
    pub secondary: ControlSet<SecondaryControls>,
    /// Tertiary processor-based controls (KVM requires none).
    pub tertiary: ControlSet<TertiaryControls>,
    /// Primary VM-exit controls.
    pub exit: ControlSet<ExitControls>,
    /// Secondary VM-exit controls (KVM requires none).
    pub secondary_exit: ControlSet<SecondaryExitControls>,
    /// VM-entry controls.
    pub entry: ControlSet<EntryControls>,
    /// The entry/exit pairs to check (Linux: [`VMCS_ENTRY_EXIT_PAIRS`]; with FRED also
    /// the secondary-exit pair).
    pub pairs: &'static [EntryExitPair],
    /// KVM's `error_on_inconsistent_vmcs_config`.
    pub on_inconsistent: OnInconsistent,
    /// 64-bit or 32-bit kernel.
    pub host: HostMode,
    /// CPUID facts for the CPUID-dependent fix-ups; none by default.
    pub cpuid: CpuidInfo,
}

impl Default for VmcsPolicy {
    fn default() -> Self {
        Self::linux()
    }
}

impl VmcsPolicy {
    /// Current Linux KVM on x86_64: the required/optional table of `vmx.h` including
    /// LOAD_CET_STATE on both sides, without FRED and without EPT_VIOLATION_VE; strict
    /// inconsistency handling; no CPUID facts.
    pub fn linux() -> Self {
        use EntryControls as N;
        use ExitControls as X;
        use PinBasedControls as P;
        use PrimaryControls as C;
        use SecondaryControls as S;

        let primary_required = C::HLT_EXITING
            | C::CR3_LOAD_EXITING
            | C::CR3_STORE_EXITING
            | C::UNCOND_IO_EXITING
            | C::MOV_DR_EXITING
            | C::USE_TSC_OFFSETTING
            | C::MWAIT_EXITING
            | C::MONITOR_EXITING
            | C::INVLPG_EXITING
            | C::RDPMC_EXITING
            | C::INTR_WINDOW_EXITING
            | C::CR8_LOAD_EXITING
            | C::CR8_STORE_EXITING;
        let primary_optional = C::RDTSC_EXITING
            | C::TPR_SHADOW
            | C::USE_IO_BITMAPS
            | C::MONITOR_TRAP_FLAG
            | C::USE_MSR_BITMAPS
            | C::NMI_WINDOW_EXITING
            | C::PAUSE_EXITING
            | C::ACTIVATE_SECONDARY_CONTROLS
            | C::ACTIVATE_TERTIARY_CONTROLS;
        let secondary_optional = S::VIRTUALIZE_APIC_ACCESSES
            | S::VIRTUALIZE_X2APIC_MODE
            | S::WBINVD_EXITING
            | S::ENABLE_VPID
            | S::ENABLE_EPT
            | S::UNRESTRICTED_GUEST
            | S::PAUSE_LOOP_EXITING
            | S::DESC
            | S::ENABLE_RDTSCP
            | S::ENABLE_INVPCID
            | S::APIC_REGISTER_VIRT
            | S::VIRTUAL_INTR_DELIVERY
            | S::SHADOW_VMCS
            | S::ENABLE_XSAVES
            | S::RDSEED_EXITING
            | S::RDRAND_EXITING
            | S::ENABLE_PML
            | S::TSC_SCALING
            | S::ENABLE_USR_WAIT_PAUSE
            | S::PT_USE_GPA
            | S::PT_CONCEAL_VMX
            | S::ENABLE_VMFUNC
            | S::BUS_LOCK_DETECTION
            | S::NOTIFY_VM_EXITING
            | S::ENCLS_EXITING;
        // Linux 6.18 `KVM_OPTIONAL_VMX_VM_EXIT_CONTROLS` (arch/x86/kvm/vmx/vmx.h, read by
        // `setup_vmcs_config` in vmx.c). SAVE_IA32_PERF_GLOBAL_CTRL (bit 30) is not in it:
        // the mediated-PMU series that adds it (posted as v6 in December 2025, after 6.18,
        // <20251206001720.468579-1-seanjc@google.com>) is not part of 6.18.
        let exit_optional = X::LOAD_IA32_PERF_GLOBAL_CTRL
            | X::SAVE_IA32_PAT
            | X::LOAD_IA32_PAT
            | X::SAVE_IA32_EFER
            | X::SAVE_VMX_PREEMPTION_TIMER
            | X::LOAD_IA32_EFER
            | X::CLEAR_BNDCFGS
            | X::PT_CONCEAL_PIP
            | X::CLEAR_IA32_RTIT_CTL
            | X::LOAD_CET_STATE;
        let entry_optional = N::LOAD_IA32_PERF_GLOBAL_CTRL
            | N::LOAD_IA32_PAT
            | N::LOAD_IA32_EFER
            | N::LOAD_BNDCFGS
            | N::PT_CONCEAL_PIP
            | N::LOAD_IA32_RTIT_CTL
            | N::LOAD_CET_STATE;

        Self {
            pin: ControlSet {
                required: P::EXT_INTR_MASK | P::NMI_EXITING,
                optional: P::VIRTUAL_NMIS | P::POSTED_INTR | P::VMX_PREEMPTION_TIMER,
            },
            primary: ControlSet {
                required: primary_required,
                optional: primary_optional,
            },
            secondary: ControlSet {
                required: S::empty(),
                optional: secondary_optional,
            },
            tertiary: ControlSet {
                required: TertiaryControls::empty(),
                optional: TertiaryControls::IPI_VIRT,
            },
            exit: ControlSet {
                required: X::SAVE_DEBUG_CONTROLS | X::ACK_INTR_ON_EXIT | X::HOST_ADDR_SPACE_SIZE,
                optional: exit_optional,
            },
            secondary_exit: ControlSet::default(),
            entry: ControlSet {
                required: N::LOAD_DEBUG_CONTROLS | N::IA32E_MODE,
                optional: entry_optional,
            },
            pairs: &VMCS_ENTRY_EXIT_PAIRS,
            on_inconsistent: OnInconsistent::Error,
            host: HostMode::X86_64,
            cpuid: CpuidInfo {
                signature: None,
                sgx: None,
            },
        }
    }

    /// Linux KVM built for a 32-bit kernel: like [`linux`](Self::linux) without the
    /// x86_64-only required controls (CR8 load/store exiting, host address-space size,
    /// IA-32e mode guest).
    pub fn linux_i386() -> Self {
        let mut p = Self::linux();
        p.primary.required -=
            PrimaryControls::CR8_LOAD_EXITING | PrimaryControls::CR8_STORE_EXITING;
        p.exit.required -= ExitControls::HOST_ADDR_SPACE_SIZE;
        p.entry.required -= EntryControls::IA32E_MODE;
        p.host = HostMode::I386;
        p
    }

    /// Opt in to the KVM FRED series: exit ACTIVATE_SECONDARY_CONTROLS, secondary exit
    /// SAVE/LOAD_IA32_FRED, entry LOAD_IA32_FRED, and the FRED pair check.
    pub fn with_fred(mut self) -> Self {
        self.exit.optional |= ExitControls::ACTIVATE_SECONDARY_CONTROLS;
        self.secondary_exit.optional |=
            SecondaryExitControls::SAVE_IA32_FRED | SecondaryExitControls::LOAD_IA32_FRED;
        self.entry.optional |= EntryControls::LOAD_IA32_FRED;
        self.pairs = &ALL_ENTRY_EXIT_PAIRS;
        self
    }

    /// Opt in to EPT_VIOLATION_VE, as a kernel built with `CONFIG_KVM_INTEL_PROVE_VE`.
    pub fn with_prove_ve(mut self) -> Self {
        self.secondary.optional |= SecondaryControls::EPT_VIOLATION_VE;
        self
    }

    /// Set KVM's `error_on_inconsistent_vmcs_config` equivalent.
    pub fn with_on_inconsistent(mut self, on_inconsistent: OnInconsistent) -> Self {
        self.on_inconsistent = on_inconsistent;
        self
    }

    /// Supply CPUID facts, enabling the SGX and errata fix-ups they drive.
    pub fn with_cpuid(mut self, cpuid: CpuidInfo) -> Self {
        self.cpuid = cpuid;
        self
    }
}
