// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Nested VMX: what KVM gives an L1 hypervisor on a CPU, and what L1's own KVM then
//! gives its L2.
//!
//! [`nested_view`] computes, from a vmx-caps capability set and the VMCS configuration
//! KVM's `setup_vmcs_config` derives from it, every VMX capability MSR KVM reports to
//! L1 through its feature MSRs (the `/dev/kvm` view, before per-vCPU CPUID
//! adjustments), following **Linux v6.18** `arch/x86/kvm/vmx/nested.c`:
//! `nested_vmx_setup_ctls_msrs` and its helpers `nested_vmx_setup_pinbased_ctls`,
//! `_exit_ctls`, `_entry_ctls`, `_cpubased_ctls`, `_secondary_ctls`, `_misc_data`,
//! `_basic`, `_cr_fixed` and `nested_vmx_calc_vmcs_enum_msr`, read out through
//! `vmx_get_vmx_msr` (legacy MSRs = TRUE MSRs with the default1 bits ORed in), with
//! the module parameters as `vmx_hardware_setup` (arch/x86/kvm/vmx/vmx.c) leaves them.
//! The helper bodies were read from nested.c as of the 6.17/6.18 merge window and the
//! KVM CET series merged for 6.18 (LOAD_CET_STATE gated on the host's SHSTK/IBT); there
//! are no nested FRED, MBEC or tertiary controls in that version.
//!
//! Rules in one place (each also named in the [`Provenance`] of every bit):
//!
//! * **pin-based** (`nested_vmx_setup_pinbased_ctls`): EXT_INTR, NMI exiting, virtual
//!   NMIs pass through from L0's configuration, posted interrupts only with
//!   `enable_apicv`; the VMX-preemption timer is always offered (emulated).
//! * **exit** (`nested_vmx_setup_exit_ctls`): host address-space size, PAT save/load,
//!   clear BNDCFGS and load CET state pass through (CET only with host SHSTK or IBT);
//!   EFER save/load, save preemption timer, acknowledge interrupt on exit and load
//!   PERF_GLOBAL_CTRL are emulated; save-debug-controls may be 0.
//! * **entry** (`nested_vmx_setup_entry_ctls`): IA-32e mode, load PAT, load BNDCFGS,
//!   load CET state pass through; load EFER and load PERF_GLOBAL_CTRL are emulated;
//!   load-debug-controls may be 0.
//! * **primary** (`nested_vmx_setup_cpubased_ctls`): the exiting controls KVM can reflect
//!   pass through; MSR bitmaps are emulated; CR3-load/store exiting may be 0; no
//!   tertiary controls.
//! * **secondary** (`nested_vmx_setup_secondary_ctls`): descriptor-table exiting, RDTSCP,
//!   x2APIC virtualization, WBINVD exiting, APIC-register virtualization, virtual-
//!   interrupt delivery, RDRAND/RDSEED exiting, INVPCID, VM functions, XSAVES, TSC
//!   scaling and user wait/pause pass through; VMCS shadowing is always offered; EPT
//!   (`ept`), PML (`eptad`), VPID (`vpid`), unrestricted guest, APIC-access
//!   virtualization (`flexpriority`) and ENCLS exiting (`sgx`) follow the parameters.
//! * **EPT/VPID caps**: execute-only, page-walk 4/5, WB, INVEPT from the CPU;
//!   single/all-context INVEPT, 2M and 1G pages always; A/D with `eptad`; INVVPID with
//!   every extent type with `vpid`. **VMFUNC**: EPTP switching with EPT and VM functions.
//! * **BASIC**: KVM's VMCS12 revision 0x11e57ed0, 4096 bytes, write-back, TRUE
//!   controls, INS/OUTS information and the relaxed error-code check from the CPU.
//!   **MISC**: store-EFER.LMA from the CPU, preemption-timer rate 5, HLT and
//!   wait-for-SIPI, VMWRITE to exit-information fields. **CR0/CR4 FIXED0**: PE|PG|NE,
//!   VMXE; FIXED1 from the CPU, plus UMIP when KVM emulates it. **VMCS_ENUM**: 0x32.
//! * Not exposed: IA32_VMX_PROCBASED_CTLS3 (0x492) and IA32_VMX_EXIT_CTLS2 (0x493).
//!
//! Assumptions are explicit ([`NestedAssumptions`], upstream defaults). When L0's
//! `setup_vmcs_config` fails there is no nested view ([`NestedError::L0Refuses`]).
//! [`l1_config`] runs L1's own KVM on the nested view; [`check_processor_compat`]
//! compares several CPUs the way `vmx_check_processor_compat` does.

mod assumptions;
mod compat;
pub mod ept;
mod l1;
mod provenance;
mod render;
mod view;

pub use assumptions::{EffectiveParams, NestedAssumptions, Param, X86_CR4_UMIP};
pub use compat::{
    check_processor_compat, check_processor_compat_with, CompatError, CompatReport, CpuCompat,
};
pub use l1::{l1_config, L1Outcome};
pub use provenance::{BitProvenance, Provenance};
pub use render::render_text;
pub use view::{nested_view, nested_view_with, MsrNote, NestedError, NestedView, NESTED_VMCS_ENUM};

/// The Linux version this model follows.
pub const LINUX_VERSION: &str = "Linux v6.18";

/// KVM's VMCS12 revision identifier (`VMCS12_REVISION`, arch/x86/kvm/vmx/vmcs12.h).
pub const VMCS12_REVISION: u32 = 0x11e5_7ed0;

/// KVM's VMCS12 region size in bytes (`VMCS12_SIZE`, 0x1000).
pub const VMCS12_SIZE: u32 = 0x1000;

/// Preemption-timer rate KVM reports to L1 (`VMX_MISC_EMULATED_PREEMPTION_TIMER_RATE`).
pub const VMX_MISC_EMULATED_PREEMPTION_TIMER_RATE: u64 = 5;
