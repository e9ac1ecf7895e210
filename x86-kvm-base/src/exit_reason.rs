// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Upstream names of `kvm_run.exit_reason` values (`KVM_EXIT_*`).
//!
//! Names as in Linux `include/uapi/linux/kvm.h`; the numbers come from kvm-bindings
//! wherever it has them (0..=39 in kvm-bindings 0.14). Newer than kvm-bindings 0.14:
//! 40 `KVM_EXIT_TDX` (Linux 6.16) and 41 `KVM_EXIT_ARM_SEA` (added after `KVM_EXIT_TDX`,
//! as the uapi header and QEMU's `linux-headers/linux/kvm.h` update show). Out-of-tree
//! series (Heki RFC v2/v3) reuse 39..=41 for their own exits: a name from this table is
//! what an *upstream* kernel means by the number.
//!
//! ```
//! use x86_kvm_base::exit_reason::upstream_exit_name;
//! assert_eq!(upstream_exit_name(kvm_bindings::KVM_EXIT_NOTIFY), Some("KVM_EXIT_NOTIFY"));
//! assert_eq!(upstream_exit_name(41), Some("KVM_EXIT_ARM_SEA"));
//! assert_eq!(upstream_exit_name(1000), None);
//! ```

use kvm_bindings as kb;

/// `KVM_EXIT_TDX`: upstream exit 40 (Linux 6.16), not in kvm-bindings 0.14.
const EXIT_TDX: u32 = 40;
/// `KVM_EXIT_ARM_SEA`: upstream exit 41, not in kvm-bindings 0.14.
const EXIT_ARM_SEA: u32 = 41;

/// Every upstream exit reason with its name, in number order.
const NAMES: [(u32, &str); 42] = [
    (kb::KVM_EXIT_UNKNOWN, "KVM_EXIT_UNKNOWN"),
    (kb::KVM_EXIT_EXCEPTION, "KVM_EXIT_EXCEPTION"),
    (kb::KVM_EXIT_IO, "KVM_EXIT_IO"),
    (kb::KVM_EXIT_HYPERCALL, "KVM_EXIT_HYPERCALL"),
    (kb::KVM_EXIT_DEBUG, "KVM_EXIT_DEBUG"),
    (kb::KVM_EXIT_HLT, "KVM_EXIT_HLT"),
    (kb::KVM_EXIT_MMIO, "KVM_EXIT_MMIO"),
    (kb::KVM_EXIT_IRQ_WINDOW_OPEN, "KVM_EXIT_IRQ_WINDOW_OPEN"),
    (kb::KVM_EXIT_SHUTDOWN, "KVM_EXIT_SHUTDOWN"),
    (kb::KVM_EXIT_FAIL_ENTRY, "KVM_EXIT_FAIL_ENTRY"),
    (kb::KVM_EXIT_INTR, "KVM_EXIT_INTR"),
    (kb::KVM_EXIT_SET_TPR, "KVM_EXIT_SET_TPR"),
    (kb::KVM_EXIT_TPR_ACCESS, "KVM_EXIT_TPR_ACCESS"),
    (kb::KVM_EXIT_S390_SIEIC, "KVM_EXIT_S390_SIEIC"),
    (kb::KVM_EXIT_S390_RESET, "KVM_EXIT_S390_RESET"),
    (kb::KVM_EXIT_DCR, "KVM_EXIT_DCR"),
    (kb::KVM_EXIT_NMI, "KVM_EXIT_NMI"),
    (kb::KVM_EXIT_INTERNAL_ERROR, "KVM_EXIT_INTERNAL_ERROR"),
    (kb::KVM_EXIT_OSI, "KVM_EXIT_OSI"),
    (kb::KVM_EXIT_PAPR_HCALL, "KVM_EXIT_PAPR_HCALL"),
    (kb::KVM_EXIT_S390_UCONTROL, "KVM_EXIT_S390_UCONTROL"),
    (kb::KVM_EXIT_WATCHDOG, "KVM_EXIT_WATCHDOG"),
    (kb::KVM_EXIT_S390_TSCH, "KVM_EXIT_S390_TSCH"),
    (kb::KVM_EXIT_EPR, "KVM_EXIT_EPR"),
    (kb::KVM_EXIT_SYSTEM_EVENT, "KVM_EXIT_SYSTEM_EVENT"),
    (kb::KVM_EXIT_S390_STSI, "KVM_EXIT_S390_STSI"),
    (kb::KVM_EXIT_IOAPIC_EOI, "KVM_EXIT_IOAPIC_EOI"),
    (kb::KVM_EXIT_HYPERV, "KVM_EXIT_HYPERV"),
    (kb::KVM_EXIT_ARM_NISV, "KVM_EXIT_ARM_NISV"),
    (kb::KVM_EXIT_X86_RDMSR, "KVM_EXIT_X86_RDMSR"),
    (kb::KVM_EXIT_X86_WRMSR, "KVM_EXIT_X86_WRMSR"),
    (kb::KVM_EXIT_DIRTY_RING_FULL, "KVM_EXIT_DIRTY_RING_FULL"),
    (kb::KVM_EXIT_AP_RESET_HOLD, "KVM_EXIT_AP_RESET_HOLD"),
    (kb::KVM_EXIT_X86_BUS_LOCK, "KVM_EXIT_X86_BUS_LOCK"),
    (kb::KVM_EXIT_XEN, "KVM_EXIT_XEN"),
    (kb::KVM_EXIT_RISCV_SBI, "KVM_EXIT_RISCV_SBI"),
    (kb::KVM_EXIT_RISCV_CSR, "KVM_EXIT_RISCV_CSR"),
    (kb::KVM_EXIT_NOTIFY, "KVM_EXIT_NOTIFY"),
    (kb::KVM_EXIT_LOONGARCH_IOCSR, "KVM_EXIT_LOONGARCH_IOCSR"),
    (kb::KVM_EXIT_MEMORY_FAULT, "KVM_EXIT_MEMORY_FAULT"),
    (EXIT_TDX, "KVM_EXIT_TDX"),
    (EXIT_ARM_SEA, "KVM_EXIT_ARM_SEA"),
];

/// The upstream `KVM_EXIT_*` name of `exit_reason`, or `None` if upstream defines no
/// exit with that number.
///
/// ```
/// use x86_kvm_base::exit_reason::upstream_exit_name;
///
/// // kvm-ioctls hands exit 37 over as `VcpuExit::Unsupported(37)`: name it in the log.
/// assert_eq!(upstream_exit_name(37), Some("KVM_EXIT_NOTIFY"));
/// assert_eq!(upstream_exit_name(kvm_bindings::KVM_EXIT_HLT), Some("KVM_EXIT_HLT"));
/// assert_eq!(upstream_exit_name(0xffff), None);
/// ```
pub fn upstream_exit_name(exit_reason: u32) -> Option<&'static str> {
    usize::try_from(exit_reason)
        .ok()
        .and_then(|i| NAMES.get(i))
        .map(|&(_, name)| name)
}

/// The highest exit reason upstream defines (as far as this table knows).
pub const LAST_UPSTREAM_EXIT: u32 = EXIT_ARM_SEA;

#[cfg(test)]
mod tests {
    use super::*;

    /// The table is indexed by number: entry `i` must carry number `i`.
    #[test]
    fn table_is_dense_and_in_number_order() {
        for (i, &(nr, name)) in NAMES.iter().enumerate() {
            assert_eq!(nr as usize, i, "{name}");
            assert_eq!(upstream_exit_name(nr), Some(name));
        }
        assert_eq!(NAMES.len() as u32, LAST_UPSTREAM_EXIT + 1);
    }

    /// Exit 41 is `KVM_EXIT_ARM_SEA` upstream (one of the two old copies said `None`).
    #[test]
    fn names_past_kvm_bindings() {
        assert_eq!(upstream_exit_name(39), Some("KVM_EXIT_MEMORY_FAULT"));
        assert_eq!(upstream_exit_name(40), Some("KVM_EXIT_TDX"));
        assert_eq!(upstream_exit_name(41), Some("KVM_EXIT_ARM_SEA"));
        assert_eq!(upstream_exit_name(42), None);
        assert_eq!(upstream_exit_name(u32::MAX), None);
    }

    #[test]
    fn names_of_the_exits_a_vmm_sees() {
        assert_eq!(upstream_exit_name(kb::KVM_EXIT_IO), Some("KVM_EXIT_IO"));
        assert_eq!(
            upstream_exit_name(kb::KVM_EXIT_SHUTDOWN),
            Some("KVM_EXIT_SHUTDOWN")
        );
        assert_eq!(
            upstream_exit_name(kb::KVM_EXIT_X86_WRMSR),
            Some("KVM_EXIT_X86_WRMSR")
        );
    }
}
