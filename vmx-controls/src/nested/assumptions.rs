// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! What the nested model assumes about the L0 kernel and host: KVM module parameters
//! (upstream defaults) and the host CPUID features the nested MSRs depend on.

use vmx_caps::VmxCaps;

use crate::controls::{PinBasedControls, PrimaryControls, SecondaryControls};
use crate::policy::{CpuidInfo, VmcsPolicy};
use crate::setup::VmcsConfig;

/// CR4.UMIP (bit 11), as reported allowed in IA32_VMX_CR4_FIXED1 when the host has UMIP.
pub const X86_CR4_UMIP: u64 = 1 << 11;

/// Assumptions about L0: `kvm_intel` module parameters and host CPUID features.
///
/// [`Default`] is upstream: every parameter at its default (`nested=1`, `ept=1`,
/// `vpid=1`, `unrestricted_guest=1`, `flexpriority=1`, `eptad=1`, `enable_apicv=1`,
/// `sgx=1`), an x86_64 kernel, no Hyper-V enlightened VMCS; host UMIP inferred from
/// IA32_VMX_CR4_FIXED1 bit 11; SHSTK, IBT and SGX assumed present (a capability dump
/// cannot tell). Each field can be overridden.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct NestedAssumptions {
    /// `kvm_intel.nested`: without it KVM exposes no VMX MSR at all.
    pub nested: bool,
    /// `kvm_intel.ept`.
    pub ept: bool,
    /// `kvm_intel.vpid`.
    pub vpid: bool,
    /// `kvm_intel.unrestricted_guest`.
    pub unrestricted_guest: bool,
    /// `kvm_intel.flexpriority`.
    pub flexpriority: bool,
    /// `kvm_intel.eptad`.
    pub eptad: bool,
    /// `kvm_intel.enable_apicv`.
    pub enable_apicv: bool,
    /// `kvm_intel.sgx` (with `CONFIG_X86_SGX_KVM`).
    pub sgx: bool,
    /// Host CPUID UMIP (`boot_cpu_has(X86_FEATURE_UMIP)`); `None`: inferred from
    /// IA32_VMX_CR4_FIXED1 bit 11 (CR4.UMIP may be 1 exactly when the CPU has UMIP).
    pub host_umip: Option<bool>,
    /// Host (and KVM) supports CET shadow stacks (`kvm_cpu_cap_has(X86_FEATURE_SHSTK)`).
    pub host_shstk: bool,
    /// Host (and KVM) supports CET indirect-branch tracking
    /// (`kvm_cpu_cap_has(X86_FEATURE_IBT)`).
    pub host_ibt: bool,
    /// Host SGX (`cpu_has_sgx()`, CPUID leaf 0x12); without it `setup_vmcs_config`
    /// clears ENCLS exiting.
    pub host_sgx: bool,
}

impl Default for NestedAssumptions {
    fn default() -> Self {
        Self {
            nested: true,
            ept: true,
            vpid: true,
            unrestricted_guest: true,
            flexpriority: true,
            eptad: true,
            enable_apicv: true,
            sgx: true,
            host_umip: None,
            host_shstk: true,
            host_ibt: true,
            host_sgx: true,
        }
    }
}

impl NestedAssumptions {
    /// The policy L0's `setup_vmcs_config` runs with: [`VmcsPolicy::linux`] with the
    /// host-SGX fact supplied (so ENCLS exiting is cleared without SGX).
    pub fn l0_policy(&self) -> VmcsPolicy {
        VmcsPolicy::linux().with_cpuid(CpuidInfo {
            signature: None,
            sgx: Some(self.host_sgx),
        })
    }

    /// Host UMIP: the override, else IA32_VMX_CR4_FIXED1 bit 11.
    pub fn umip(&self, caps: &VmxCaps) -> bool {
        self.host_umip
            .unwrap_or(caps.cr4_fixed().fixed1 & X86_CR4_UMIP != 0)
    }

    /// A one-line summary (`ept=1 vpid=1 ... umip=inferred(yes) shstk=1 ...`) for dump
    /// provenance and reports.
    pub fn summary(&self, caps: &VmxCaps) -> String {
        let b = |v: bool| u8::from(v);
        let umip = match self.host_umip {
            Some(v) => format!("{}", b(v)),
            None => format!("inferred:{}", b(self.umip(caps))),
        };
        format!(
            "nested={} ept={} vpid={} unrestricted_guest={} flexpriority={} eptad={} enable_apicv={} sgx={} host: umip={} shstk={} ibt={} sgx={}",
            b(self.nested),
            b(self.ept),
            b(self.vpid),
            b(self.unrestricted_guest),
            b(self.flexpriority),
            b(self.eptad),
            b(self.enable_apicv),
            b(self.sgx),
            umip,
            b(self.host_shstk),
            b(self.host_ibt),
            b(self.host_sgx),
        )
    }
}

/// One module parameter after `vmx_hardware_setup` (arch/x86/kvm/vmx/vmx.c) cleared it
/// where the CPU lacks what it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Param {
    /// Effective value.
    pub on: bool,
    /// Why it is off (`None` when on).
    pub why_off: Option<&'static str>,
}

impl Param {
    fn eval(requested: bool, name: &'static str, needs: &[(bool, &'static str)]) -> Self {
        if !requested {
            return Self {
                on: false,
                why_off: Some(name),
            };
        }
        match needs.iter().find(|(ok, _)| !ok) {
            Some((_, why)) => Self {
                on: false,
                why_off: Some(why),
            },
            None => Self {
                on: true,
                why_off: None,
            },
        }
    }
}

/// The module parameters as `vmx_hardware_setup` leaves them for this CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct EffectiveParams {
    /// `enable_ept`.
    pub ept: Param,
    /// `enable_ept_ad_bits`.
    pub eptad: Param,
    /// `enable_vpid`.
    pub vpid: Param,
    /// `enable_unrestricted_guest`.
    pub unrestricted_guest: Param,
    /// `flexpriority_enabled`.
    pub flexpriority: Param,
    /// `enable_apicv`.
    pub apicv: Param,
    /// `enable_sgx`.
    pub sgx: Param,
    /// `cpu_has_vmx_vmfunc()`: VM functions in L0's VMCS configuration.
    pub vmfunc: bool,
    /// `vmx_umip_emulated()`: no host UMIP but descriptor-table exiting (capabilities.h).
    pub umip_emulated: bool,
    /// `kvm_cpu_cap_has(X86_FEATURE_SHSTK) || kvm_cpu_cap_has(X86_FEATURE_IBT)`.
    pub cet: bool,
}

impl EffectiveParams {
    /// Applies `vmx_hardware_setup`'s checks to L0's VMCS configuration (`cfg`, with
    /// `vmx_capability.ept/vpid` in `cfg.ept_cap`/`cfg.vpid_cap`).
    pub fn new(a: &NestedAssumptions, caps: &VmxCaps, cfg: &VmcsConfig) -> Self {
        use crate::nested::ept::*;
        let sec = cfg.secondary;
        let ept_cap = u64::from(cfg.ept_cap);
        let vpid_cap = u64::from(cfg.vpid_cap) << 32;
        let has = |s: SecondaryControls| sec.contains(s);
        let ept = Param::eval(
            a.ept,
            "ept=0",
            &[
                (
                    has(SecondaryControls::ENABLE_EPT),
                    "no ENABLE_EPT in L0's VMCS configuration",
                ),
                (
                    ept_cap & EPT_PAGE_WALK_4 != 0,
                    "no 4-level EPT (IA32_VMX_EPT_VPID_CAP bit 6)",
                ),
                (
                    ept_cap & EPTP_WB != 0,
                    "no write-back EPT paging structures (bit 14)",
                ),
                (
                    ept_cap & EPT_EXTENT_GLOBAL != 0,
                    "no all-context INVEPT (bit 26)",
                ),
            ],
        );
        let eptad = Param::eval(
            a.eptad,
            "eptad=0",
            &[
                (ept.on, "EPT disabled"),
                (
                    ept_cap & EPT_AD != 0,
                    "no EPT accessed/dirty flags (bit 21)",
                ),
            ],
        );
        let vpid = Param::eval(
            a.vpid,
            "vpid=0",
            &[
                (
                    has(SecondaryControls::ENABLE_VPID),
                    "no ENABLE_VPID in L0's VMCS configuration",
                ),
                (vpid_cap & VPID_INVVPID != 0, "no INVVPID (bit 32)"),
                (
                    vpid_cap & (VPID_EXTENT_SINGLE | VPID_EXTENT_GLOBAL) != 0,
                    "no single- or all-context INVVPID (bits 41/42)",
                ),
            ],
        );
        let unrestricted_guest = Param::eval(
            a.unrestricted_guest,
            "unrestricted_guest=0",
            &[
                (
                    has(SecondaryControls::UNRESTRICTED_GUEST),
                    "no UNRESTRICTED_GUEST in L0's VMCS configuration",
                ),
                (ept.on, "EPT disabled"),
            ],
        );
        let flexpriority = Param::eval(
            a.flexpriority,
            "flexpriority=0",
            &[
                (
                    cfg.primary.contains(PrimaryControls::TPR_SHADOW),
                    "no TPR_SHADOW in L0's VMCS configuration",
                ),
                (
                    has(SecondaryControls::VIRTUALIZE_APIC_ACCESSES),
                    "no VIRTUALIZE_APIC_ACCESSES in L0's VMCS configuration",
                ),
            ],
        );
        let apicv = Param::eval(
            a.enable_apicv,
            "enable_apicv=0",
            &[
                (
                    has(SecondaryControls::APIC_REGISTER_VIRT)
                        && has(SecondaryControls::VIRTUAL_INTR_DELIVERY)
                        && cfg.pin.contains(PinBasedControls::POSTED_INTR),
                    "no APICv in L0's VMCS configuration (APIC-register virtualization, virtual-interrupt delivery and posted interrupts)",
                ),
            ],
        );
        let sgx = Param::eval(
            a.sgx,
            "sgx=0",
            &[
                (a.host_sgx, "host has no SGX"),
                (
                    has(SecondaryControls::ENCLS_EXITING),
                    "no ENCLS_EXITING in L0's VMCS configuration",
                ),
            ],
        );
        Self {
            ept,
            eptad,
            vpid,
            unrestricted_guest,
            flexpriority,
            apicv,
            sgx,
            vmfunc: has(SecondaryControls::ENABLE_VMFUNC),
            umip_emulated: !a.umip(caps) && has(SecondaryControls::DESC),
            cet: a.host_shstk || a.host_ibt,
        }
    }
}
