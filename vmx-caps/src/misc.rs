// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! IA32_VMX_MISC (0x485): SDM A.6, Linux `VMX_MISC_*` in `asm/vmx.h`.

/// Bits 4:0: the preemption timer ticks when TSC bit X changes
/// (Linux `VMX_MISC_PREEMPTION_TIMER_RATE_MASK`).
pub const VMX_MISC_PREEMPTION_TIMER_RATE_MASK: u64 = 0x1F;
/// Bit 5: VM exits store EFER.LMA into the "IA-32e mode guest" entry control.
pub const VMX_MISC_SAVE_EFER_LMA: u64 = 1 << 5;
/// Bit 6: HLT activity state supported.
pub const VMX_MISC_ACTIVITY_HLT: u64 = 1 << 6;
/// Bit 7: shutdown activity state supported.
pub const VMX_MISC_ACTIVITY_SHUTDOWN: u64 = 1 << 7;
/// Bit 8: wait-for-SIPI activity state supported.
pub const VMX_MISC_ACTIVITY_WAIT_SIPI: u64 = 1 << 8;
/// Bit 14: Intel PT usable in VMX operation.
pub const VMX_MISC_INTEL_PT: u64 = 1 << 14;
/// Bit 15: RDMSR in SMM can read IA32_SMBASE.
pub const VMX_MISC_RDMSR_IN_SMM: u64 = 1 << 15;
/// Bits 24:16: number of CR3-target values.
pub const VMX_MISC_CR3_COUNT_MASK: u64 = 0x1FF << 16;
/// Bits 27:25: N, recommended maximum MSR-list entries = 512 × (N + 1).
pub const VMX_MISC_MAX_MSR_MASK: u64 = 0x7 << 25;
/// Bit 28: IA32_SMM_MONITOR_CTL bit 2 can be set (VMXOFF leaves SMIs blocked).
pub const VMX_MISC_VMXOFF_BLOCK_SMI: u64 = 1 << 28;
/// Bit 29: VMWRITE may write any supported field, including VM-exit information fields.
pub const VMX_MISC_VMWRITE_SHADOW_RO_FIELDS: u64 = 1 << 29;
/// Bit 30: VM entry may inject software events with instruction length 0.
pub const VMX_MISC_ZERO_LEN_INS: u64 = 1 << 30;
/// Bits 63:32: MSEG revision identifier.
pub const VMX_MISC_MSEG_REVID_MASK: u64 = 0xFFFF_FFFF << 32;
/// Reserved bits (13:9 and 31; Linux `VMX_MISC_RESERVED_BITS`).
pub const VMX_MISC_RESERVED_BITS: u64 = (0x1F << 9) | (1 << 31);
/// Multiplier of the MSR-list recommendation (Linux `VMX_MISC_MSR_LIST_MULTIPLIER`).
pub const VMX_MISC_MSR_LIST_MULTIPLIER: u32 = 512;

/// Feature bits that KVM's nested restore treats as a bitwise subset
/// (`vmx_restore_vmx_misc`: bits 5, 8:6, 14, 15, 28, 29, 30).
pub const FEATURE_BITS: u64 = VMX_MISC_SAVE_EFER_LMA
    | VMX_MISC_ACTIVITY_HLT
    | VMX_MISC_ACTIVITY_SHUTDOWN
    | VMX_MISC_ACTIVITY_WAIT_SIPI
    | VMX_MISC_INTEL_PT
    | VMX_MISC_RDMSR_IN_SMM
    | VMX_MISC_VMXOFF_BLOCK_SMI
    | VMX_MISC_VMWRITE_SHADOW_RO_FIELDS
    | VMX_MISC_ZERO_LEN_INS;

/// IA32_VMX_MISC (0x485), raw value kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VmxMisc(pub u64);

impl VmxMisc {
    /// The raw MSR value.
    pub const fn raw(self) -> u64 {
        self.0
    }
    /// Bits 4:0: preemption-timer rate (log2 of TSC ticks per timer tick).
    pub const fn preemption_timer_rate(self) -> u8 {
        (self.0 & VMX_MISC_PREEMPTION_TIMER_RATE_MASK) as u8
    }
    /// Bit 5: exits save EFER.LMA into the "IA-32e mode guest" entry control.
    pub const fn save_efer_lma(self) -> bool {
        self.0 & VMX_MISC_SAVE_EFER_LMA != 0
    }
    /// Bit 6: HLT activity state.
    pub const fn activity_hlt(self) -> bool {
        self.0 & VMX_MISC_ACTIVITY_HLT != 0
    }
    /// Bit 7: shutdown activity state.
    pub const fn activity_shutdown(self) -> bool {
        self.0 & VMX_MISC_ACTIVITY_SHUTDOWN != 0
    }
    /// Bit 8: wait-for-SIPI activity state.
    pub const fn activity_wait_sipi(self) -> bool {
        self.0 & VMX_MISC_ACTIVITY_WAIT_SIPI != 0
    }
    /// Bit 14: Intel PT in VMX operation.
    pub const fn intel_pt(self) -> bool {
        self.0 & VMX_MISC_INTEL_PT != 0
    }
    /// Bit 15: RDMSR in SMM can read IA32_SMBASE.
    pub const fn rdmsr_in_smm(self) -> bool {
        self.0 & VMX_MISC_RDMSR_IN_SMM != 0
    }
    /// Bits 24:16: number of CR3-target values (Linux `vmx_misc_cr3_count()`).
    pub const fn cr3_count(self) -> u16 {
        ((self.0 & VMX_MISC_CR3_COUNT_MASK) >> 16) as u16
    }
    /// Bits 27:25: the raw N of the MSR-list recommendation.
    pub const fn max_msr_field(self) -> u8 {
        ((self.0 & VMX_MISC_MAX_MSR_MASK) >> 25) as u8
    }
    /// Recommended maximum MSR-list entries, 512 × (N + 1) (Linux `vmx_misc_max_msr()`).
    pub const fn max_msr(self) -> u32 {
        VMX_MISC_MSR_LIST_MULTIPLIER * (self.max_msr_field() as u32 + 1)
    }
    /// Bit 28: IA32_SMM_MONITOR_CTL bit 2 can be set to 1.
    pub const fn vmxoff_block_smi(self) -> bool {
        self.0 & VMX_MISC_VMXOFF_BLOCK_SMI != 0
    }
    /// Bit 29: VMWRITE to VM-exit information (read-only) fields.
    pub const fn vmwrite_shadow_ro_fields(self) -> bool {
        self.0 & VMX_MISC_VMWRITE_SHADOW_RO_FIELDS != 0
    }
    /// Bit 30: injection of software events with instruction length 0.
    pub const fn zero_len_ins(self) -> bool {
        self.0 & VMX_MISC_ZERO_LEN_INS != 0
    }
    /// Bits 63:32: MSEG revision identifier (Linux `vmx_misc_mseg_revid()`).
    pub const fn mseg_revid(self) -> u32 {
        (self.0 >> 32) as u32
    }
    /// Set reserved bits (13:9, 31). Penryn sets bit 9: reported, never rejected.
    pub const fn unknown_bits(self) -> u64 {
        self.0 & VMX_MISC_RESERVED_BITS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_skylake_and_later() {
        let m = VmxMisc(0x7004_C1E7);
        assert_eq!(m.raw(), 0x7004_C1E7);
        assert_eq!(m.preemption_timer_rate(), 7);
        assert!(m.save_efer_lma());
        assert!(m.activity_hlt());
        assert!(m.activity_shutdown());
        assert!(m.activity_wait_sipi());
        assert!(m.intel_pt());
        assert!(m.rdmsr_in_smm());
        assert_eq!(m.cr3_count(), 4);
        assert_eq!(m.max_msr_field(), 0);
        assert_eq!(m.max_msr(), 512);
        assert!(m.vmxoff_block_smi());
        assert!(m.vmwrite_shadow_ro_fields());
        assert!(m.zero_len_ins());
        assert_eq!(m.mseg_revid(), 0);
        assert_eq!(m.unknown_bits(), 0);
    }

    #[test]
    fn decode_penryn_reserved_bit9() {
        let m = VmxMisc(0x0004_03C0);
        assert_eq!(m.preemption_timer_rate(), 0);
        assert!(!m.save_efer_lma());
        assert!(m.activity_hlt() && m.activity_shutdown() && m.activity_wait_sipi());
        assert_eq!(m.cr3_count(), 4);
        assert_eq!(m.unknown_bits(), 1 << 9);
    }

    #[test]
    fn each_field_in_isolation() {
        assert_eq!(VmxMisc(0x1F).preemption_timer_rate(), 31);
        assert_eq!(VmxMisc(0x1FF << 16).cr3_count(), 511);
        assert_eq!(VmxMisc(7 << 25).max_msr_field(), 7);
        assert_eq!(VmxMisc(7 << 25).max_msr(), 4096);
        assert_eq!(VmxMisc(0xDEAD_BEEF << 32).mseg_revid(), 0xDEAD_BEEF);
        assert_eq!(VmxMisc(1 << 31).unknown_bits(), 1 << 31);
        assert_eq!(VmxMisc(!0).unknown_bits(), VMX_MISC_RESERVED_BITS);
        assert!(!VmxMisc(1 << 4).save_efer_lma());
    }
}
