// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The interrupts an in-kernel local APIC holds, read from a `KVM_GET_LAPIC` page.
//!
//! With KVM's in-kernel irqchip, the events a VMM must not lose across a snapshot
//! are partly in the LAPIC rather than in `kvm_vcpu_events`: a vector raised and not
//! yet delivered is set in the IRR, and a vector being handled (its EOI still to
//! come) in the ISR. [`LapicVectors`] reads both from the register page
//! (`kvm_lapic_state`, the layout of SDM Vol. 3A Table 11-1: each 256-bit register
//! as 8 32-bit words 16 bytes apart, vectors 0-31 first) and
//! [`LapicVectors::check_restored`] says whether a LAPIC read back after a restore
//! kept them: the ISR exactly (the vCPU has not run), every IRR bit (interrupts
//! sent since may add others).
//!
//! ```
//! use vcpu_events::kvm_bindings::kvm_lapic_state;
//! use vcpu_events::lapic::{LapicLoss, LapicVectors, APIC_IRR};
//!
//! let mut saved = kvm_lapic_state::default();
//! saved.regs[APIC_IRR + 0x10 + 2] = 0x01; // vector 0x30 (word 1, bit 16) pending
//! let saved = LapicVectors::from_lapic(&saved);
//! assert!(saved.pending(0x30));
//!
//! // A fresh LAPIC that never got the saved page has lost it.
//! let fresh = LapicVectors::from_lapic(&kvm_lapic_state::default());
//! assert!(matches!(saved.check_restored(&fresh), Err(LapicLoss::Irr { .. })));
//! assert_eq!(saved.check_restored(&saved), Ok(()));
//! ```

#![forbid(unsafe_code)]

use kvm_bindings::kvm_lapic_state;

/// Offset of the In-Service Register in the local APIC's register page (SDM Vol. 3A
/// Table 11-1, "In-Service Register (ISR)", FEE0 0100H).
pub const APIC_ISR: usize = 0x100;
/// Offset of the Interrupt Request Register (SDM Vol. 3A Table 11-1, FEE0 0200H).
pub const APIC_IRR: usize = 0x200;

/// The IRR and ISR of a local APIC: 256 bits each, as 8 words, vectors 0-31 first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LapicVectors {
    /// Interrupt Request Register: raised, not yet delivered.
    pub irr: [u32; 8],
    /// In-Service Register: delivered, EOI not yet written.
    pub isr: [u32; 8],
}

/// A restored LAPIC that does not hold what was saved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LapicLoss {
    /// A vector raised and not yet delivered is no longer pending.
    #[error(
        "the restored LAPIC lost pending vectors (IRR saved {saved:08x?}, read back {read:08x?})"
    )]
    Irr {
        /// As saved.
        saved: [u32; 8],
        /// As read back.
        read: [u32; 8],
    },
    /// The vectors in service differ (a lost EOI obligation, or one made up).
    #[error("the restored LAPIC's ISR differs (saved {saved:08x?}, read back {read:08x?})")]
    Isr {
        /// As saved.
        saved: [u32; 8],
        /// As read back.
        read: [u32; 8],
    },
}

fn register(lapic: &kvm_lapic_state, at: usize) -> [u32; 8] {
    let byte = |i: usize| lapic.regs.get(i).map_or(0, |&b| b as u8);
    std::array::from_fn(|w| {
        let o = at + 0x10 * w;
        u32::from_le_bytes([byte(o), byte(o + 1), byte(o + 2), byte(o + 3)])
    })
}

fn has(bits: &[u32; 8], vector: u8) -> bool {
    bits[usize::from(vector / 32)] & (1 << (vector % 32)) != 0
}

impl LapicVectors {
    /// The IRR and ISR of a `KVM_GET_LAPIC` page.
    pub fn from_lapic(lapic: &kvm_lapic_state) -> Self {
        LapicVectors {
            irr: register(lapic, APIC_IRR),
            isr: register(lapic, APIC_ISR),
        }
    }

    /// `vector` is raised and not yet delivered (IRR).
    pub fn pending(&self, vector: u8) -> bool {
        has(&self.irr, vector)
    }

    /// `vector` is being handled, its EOI to come (ISR).
    pub fn in_service(&self, vector: u8) -> bool {
        has(&self.isr, vector)
    }

    /// Whether `read_back` (the LAPIC after a restore of `self`, before the vCPU runs)
    /// kept everything: the same ISR, and every pending vector still pending.
    pub fn check_restored(&self, read_back: &LapicVectors) -> Result<(), LapicLoss> {
        if read_back.isr != self.isr {
            return Err(LapicLoss::Isr {
                saved: self.isr,
                read: read_back.isr,
            });
        }
        if self
            .irr
            .iter()
            .zip(&read_back.irr)
            .any(|(s, r)| s & !r != 0)
        {
            return Err(LapicLoss::Irr {
                saved: self.irr,
                read: read_back.irr,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bits(set: &[(usize, u32)]) -> [u32; 8] {
        let mut w = [0u32; 8];
        for &(i, b) in set {
            w[i] |= b;
        }
        w
    }

    /// The words sit 16 bytes apart, little-endian: a vector's bit is found where
    /// the LAPIC keeps it, and nothing else reads as set.
    #[test]
    fn vectors_are_read_where_the_lapic_keeps_them() {
        let mut lapic = kvm_lapic_state::default();
        // Vector 0x31 (word 1, bit 17) in the IRR; vector 0xff (word 7, bit 31) in
        // the ISR.
        lapic.regs[APIC_IRR + 0x10 + 2] = 0x02;
        lapic.regs[APIC_ISR + 0x70 + 3] = 0x80u8 as _;
        let v = LapicVectors::from_lapic(&lapic);
        assert_eq!(v.irr, bits(&[(1, 1 << 17)]));
        assert_eq!(v.isr, bits(&[(7, 1 << 31)]));
        assert!(v.pending(0x31) && !v.pending(0x30) && !v.pending(0x32));
        assert!(v.in_service(0xff));
        assert_eq!((0..=255u8).filter(|&x| v.pending(x)).count(), 1);
        assert_eq!((0..=255u8).filter(|&x| v.in_service(x)).count(), 1);
    }

    /// The ISR must come back exactly; the IRR may gain vectors but never lose one.
    #[test]
    fn a_restore_keeps_every_saved_vector() {
        let saved = LapicVectors {
            irr: bits(&[(1, 1 << 16)]),
            isr: bits(&[(1, 1 << 17)]),
        };
        assert_eq!(saved.check_restored(&saved), Ok(()));
        let more = LapicVectors {
            irr: bits(&[(1, 1 << 16), (2, 1)]),
            ..saved
        };
        assert_eq!(saved.check_restored(&more), Ok(()));
        let lost = LapicVectors {
            irr: bits(&[(2, 1)]),
            ..saved
        };
        let e = saved.check_restored(&lost).unwrap_err();
        assert!(matches!(e, LapicLoss::Irr { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            "the restored LAPIC lost pending vectors (IRR saved [00000000, 00010000, 00000000, \
             00000000, 00000000, 00000000, 00000000, 00000000], read back [00000000, 00000000, \
             00000001, 00000000, 00000000, 00000000, 00000000, 00000000])"
        );
        for isr in [bits(&[]), bits(&[(1, 1 << 17), (0, 1)])] {
            let other = LapicVectors { isr, ..saved };
            let e = saved.check_restored(&other).unwrap_err();
            assert!(matches!(e, LapicLoss::Isr { .. }), "{e:?}");
        }
    }
}
