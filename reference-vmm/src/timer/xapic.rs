// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The decide step for the timer guest's xAPIC MMIO on the userspace-irqchip
//! path: the VMM answers the guest's xAPIC accesses itself (no in-kernel
//! LAPIC). Only what the guest uses is modelled: the spurious-interrupt
//! vector register (software enable, SDM Vol. 3A 11.4.7.2 / 11.9) and EOI
//! (SDM Vol. 3A 11.8.5). Pure: no KVM.

#![forbid(unsafe_code)]

use crate::guests::{APIC_BASE, APIC_EOI, APIC_SVR};

/// Size of the xAPIC MMIO page.
pub const APIC_PAGE: u64 = 0x1000;
/// SVR bit 8: APIC software enable (SDM Vol. 3A 11.4.7.2).
pub const SVR_APIC_ENABLED: u32 = 1 << 8;

/// An xAPIC access the userspace VMM does not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum XApicError {
    /// The address is not in the xAPIC page.
    #[error("MMIO at {addr:#x} is not the xAPIC page")]
    NotApic {
        /// Guest physical address.
        addr: u64,
    },
    /// A register this model does not implement.
    #[error("xAPIC register {offset:#x} is not modelled (only EOI and SVR)")]
    Register {
        /// Offset in the page.
        offset: u64,
    },
    /// An access that is not one aligned 32-bit access (SDM Vol. 3A 11.4.1:
    /// registers are accessed with 32-bit loads and stores).
    #[error("xAPIC access of {len} bytes at offset {offset:#x} (must be 4)")]
    Size {
        /// Offset in the page.
        offset: u64,
        /// Access size.
        len: usize,
    },
    /// An EOI while no interrupt was in service.
    #[error("EOI with nothing in service")]
    SpuriousEoi,
}

/// What an xAPIC write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ApicWrite {
    /// EOI: the in-service interrupt is done.
    Eoi,
    /// SVR written; `enabled` is bit 8.
    Svr {
        /// The APIC is software-enabled.
        enabled: bool,
    },
}

/// The userspace model of one vCPU's xAPIC, as far as the timer guest uses it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XApic {
    /// The spurious-interrupt vector register (reset value 0xff, SDM Vol. 3A 11.9).
    pub svr: u32,
    /// Interrupts delivered and not yet EOIed.
    pub in_service: u64,
    /// EOI writes taken.
    pub eois: u64,
}

impl XApic {
    /// A reset xAPIC: software-disabled, SVR = 0xff.
    pub fn new() -> Self {
        XApic {
            svr: 0xff,
            in_service: 0,
            eois: 0,
        }
    }

    fn offset(addr: u64, len: usize) -> Result<u64, XApicError> {
        let offset = addr
            .checked_sub(APIC_BASE)
            .filter(|o| *o < APIC_PAGE)
            .ok_or(XApicError::NotApic { addr })?;
        if len != 4 || offset % 16 != 0 {
            return Err(XApicError::Size { offset, len });
        }
        Ok(offset)
    }

    /// The guest took an interrupt (its handler acknowledged it).
    pub fn delivered(&mut self) {
        self.in_service += 1;
    }

    /// Decides a guest MMIO write of `data` at `addr`.
    ///
    /// ```
    /// use reference_vmm::timer::xapic::{ApicWrite, XApic, XApicError};
    /// let mut apic = XApic::new();
    /// assert_eq!(apic.write(0xfee0_00f0, &0x1ffu32.to_le_bytes()), Ok(ApicWrite::Svr { enabled: true }));
    /// apic.delivered();
    /// assert_eq!(apic.write(0xfee0_00b0, &[0; 4]), Ok(ApicWrite::Eoi));
    /// assert_eq!(apic.write(0xfee0_00b0, &[0; 4]), Err(XApicError::SpuriousEoi));
    /// ```
    pub fn write(&mut self, addr: u64, data: &[u8]) -> Result<ApicWrite, XApicError> {
        let offset = Self::offset(addr, data.len())?;
        let mut b = [0u8; 4];
        b.copy_from_slice(data);
        let value = u32::from_le_bytes(b);
        match offset {
            APIC_EOI => {
                self.in_service = self
                    .in_service
                    .checked_sub(1)
                    .ok_or(XApicError::SpuriousEoi)?;
                self.eois += 1;
                Ok(ApicWrite::Eoi)
            }
            APIC_SVR => {
                self.svr = value;
                Ok(ApicWrite::Svr {
                    enabled: value & SVR_APIC_ENABLED != 0,
                })
            }
            _ => Err(XApicError::Register { offset }),
        }
    }

    /// Decides a guest MMIO read at `addr`: the value to answer.
    pub fn read(&self, addr: u64, len: usize) -> Result<u32, XApicError> {
        match Self::offset(addr, len)? {
            APIC_SVR => Ok(self.svr),
            // EOI is write-only; reads return 0.
            APIC_EOI => Ok(0),
            offset => Err(XApicError::Register { offset }),
        }
    }

    /// True once the guest software-enabled the APIC.
    pub fn enabled(&self) -> bool {
        self.svr & SVR_APIC_ENABLED != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eoi_and_svr_follow_sdm_11_8_5_and_11_9() {
        let mut a = XApic::new();
        assert!(!a.enabled(), "reset: software-disabled, SVR = 0xff");
        assert_eq!(a.read(APIC_BASE + APIC_SVR, 4), Ok(0xff));
        a.write(APIC_BASE + APIC_SVR, &0x1ffu32.to_le_bytes())
            .unwrap();
        assert!(a.enabled());
        a.delivered();
        a.delivered();
        assert_eq!(a.write(APIC_BASE + APIC_EOI, &[0; 4]), Ok(ApicWrite::Eoi));
        assert_eq!(a.write(APIC_BASE + APIC_EOI, &[0; 4]), Ok(ApicWrite::Eoi));
        assert_eq!(
            a.write(APIC_BASE + APIC_EOI, &[0; 4]),
            Err(XApicError::SpuriousEoi)
        );
        assert_eq!(a.eois, 2);
    }

    #[test]
    fn other_addresses_registers_and_sizes_are_typed_errors() {
        let mut a = XApic::new();
        assert_eq!(
            a.write(0xfed0_0000, &[0; 4]),
            Err(XApicError::NotApic { addr: 0xfed0_0000 })
        );
        assert_eq!(
            a.write(APIC_BASE + 0x300, &[0; 4]),
            Err(XApicError::Register { offset: 0x300 })
        );
        assert_eq!(
            a.write(APIC_BASE + APIC_EOI, &[0; 8]),
            Err(XApicError::Size {
                offset: APIC_EOI,
                len: 8
            })
        );
        assert_eq!(
            a.read(APIC_BASE + APIC_PAGE, 4),
            Err(XApicError::NotApic {
                addr: APIC_BASE + APIC_PAGE
            })
        );
    }
}
