//! CR0 / CR4 bits and the CR4 pinnable masks.
//!
//! Bit positions are those of Linux `arch/x86/include/uapi/asm/processor-flags.h`
//! (`X86_CR0_*`, `X86_CR4_*`) and of the Intel SDM Vol. 3A §2.5 "Control Registers".
//! The flag types are views: raw values are kept with
//! [`from_bits_retain`](bitflags::Flags::from_bits_retain), so bits this crate does not
//! name are carried, never lost.

#![deny(unsafe_code)]

use bitflags::bitflags;

bitflags! {
    /// CR0 bits (Linux `X86_CR0_*`). Unknown bits are retained.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct Cr0: u64 {
        /// Protection Enable (bit 0).
        const PE = 1 << 0;
        /// Monitor Coprocessor (bit 1).
        const MP = 1 << 1;
        /// Emulation (bit 2).
        const EM = 1 << 2;
        /// Task Switched (bit 3).
        const TS = 1 << 3;
        /// Extension Type (bit 4).
        const ET = 1 << 4;
        /// Numeric Error (bit 5).
        const NE = 1 << 5;
        /// Write Protect (bit 16): supervisor writes honour read-only pages.
        /// The one bit Heki requires in every CR0 pin.
        const WP = 1 << 16;
        /// Alignment Mask (bit 18).
        const AM = 1 << 18;
        /// Not Write-through (bit 29).
        const NW = 1 << 29;
        /// Cache Disable (bit 30).
        const CD = 1 << 30;
        /// Paging (bit 31).
        const PG = 1 << 31;
        // Retain every other bit.
        const _ = !0;
    }
}

bitflags! {
    /// CR4 bits (Linux `X86_CR4_*`). Unknown bits are retained.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct Cr4: u64 {
        /// Virtual-8086 Mode Extensions (bit 0).
        const VME = 1 << 0;
        /// Protected-mode Virtual Interrupts (bit 1).
        const PVI = 1 << 1;
        /// Time Stamp Disable (bit 2).
        const TSD = 1 << 2;
        /// Debugging Extensions (bit 3).
        const DE = 1 << 3;
        /// Page Size Extensions (bit 4).
        const PSE = 1 << 4;
        /// Physical Address Extension (bit 5).
        const PAE = 1 << 5;
        /// Machine-Check Enable (bit 6).
        const MCE = 1 << 6;
        /// Page Global Enable (bit 7).
        const PGE = 1 << 7;
        /// Performance-Monitoring Counter Enable (bit 8).
        const PCE = 1 << 8;
        /// OS support for FXSAVE/FXRSTOR (bit 9).
        const OSFXSR = 1 << 9;
        /// OS support for unmasked SIMD FP exceptions (bit 10).
        const OSXMMEXCPT = 1 << 10;
        /// User-Mode Instruction Prevention (bit 11).
        const UMIP = 1 << 11;
        /// 57-bit linear addresses (bit 12).
        const LA57 = 1 << 12;
        /// VMX Enable (bit 13).
        const VMXE = 1 << 13;
        /// SMX Enable (bit 14).
        const SMXE = 1 << 14;
        /// RDFSBASE/WRFSBASE etc. enable (bit 16).
        const FSGSBASE = 1 << 16;
        /// PCID Enable (bit 17).
        const PCIDE = 1 << 17;
        /// XSAVE and processor extended states enable (bit 18).
        const OSXSAVE = 1 << 18;
        /// Key Locker enable (bit 19).
        const KL = 1 << 19;
        /// Supervisor-Mode Execution Prevention (bit 20).
        const SMEP = 1 << 20;
        /// Supervisor-Mode Access Prevention (bit 21).
        const SMAP = 1 << 21;
        /// Protection Keys for user pages (bit 22).
        const PKE = 1 << 22;
        /// Control-flow Enforcement Technology (bit 23).
        const CET = 1 << 23;
        /// Protection Keys for supervisor pages (bit 24).
        const PKS = 1 << 24;
        /// Flexible Return and Event Delivery (bit 32).
        const FRED = 1 << 32;
        // Retain every other bit.
        const _ = !0;
    }
}

/// Linux `cr4_pinned_mask` as in the base of Heki RFC v2 (Nov 2023):
/// SMEP | SMAP | UMIP | FSGSBASE | CET. A CR4 pin must be a subset of it.
pub const CR4_PINNABLE_RFC_V2: Cr4 = Cr4::SMEP
    .union(Cr4::SMAP)
    .union(Cr4::UMIP)
    .union(Cr4::FSGSBASE)
    .union(Cr4::CET);

/// Linux `cr4_pinned_mask` as in the base of Heki RFC v3 (May 2024): the v2 mask
/// plus FRED (also the mask of Linux 6.16).
pub const CR4_PINNABLE_RFC_V3: Cr4 = CR4_PINNABLE_RFC_V2.union(Cr4::FRED);

/// The CR0 bits an RFC guest can sensibly pin: the bits a Linux host runs with
/// (PE, MP, ET, NE, WP, AM, PG). The RFC accepts *any* CR0 pin that contains WP and is
/// set in the host's CR0; this constant is only used to enumerate test matrices and
/// documentation, never to validate.
pub const CR0_HOST_TYPICAL: Cr0 = Cr0::PE
    .union(Cr0::MP)
    .union(Cr0::ET)
    .union(Cr0::NE)
    .union(Cr0::WP)
    .union(Cr0::AM)
    .union(Cr0::PG);

/// Iterate over the single-bit values set in `mask`, lowest first.
pub fn bits(mask: u64) -> impl Iterator<Item = u64> {
    (0..64u32)
        .map(|i| 1u64 << i)
        .filter(move |bit| mask & bit != 0)
}
