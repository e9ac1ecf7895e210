// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Names of control bits: the vmxcap label, the Linux name, and whether QEMU's vmxcap
//! prints the bit.
//!
//! The table itself lives in [`x86_kvm_base::control_bits`] (moved there, together with
//! the typed flags it names); this module maps a [`ControlWord`] to its table.

use crate::control::ControlWord;

pub use x86_kvm_base::control_bits::{
    BitName, Vmxcap, ENTRY, EXIT, PIN_BASED, PRIMARY, SECONDARY, SECONDARY_EXIT, TERTIARY,
};

/// The named bits of a control word, ascending.
pub const fn control_bits(word: ControlWord) -> &'static [BitName] {
    word.names()
}

/// Mask of the named bits of a control word.
pub fn known_mask(word: ControlWord) -> u64 {
    x86_kvm_base::control_bits::known_mask(control_bits(word))
}

/// The name of bit `bit` of `word`, if known.
pub fn lookup(word: ControlWord, bit: u32) -> Option<&'static BitName> {
    x86_kvm_base::control_bits::lookup(control_bits(word), bit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_sorted_unique_and_in_range() {
        for w in ControlWord::ALL {
            let t = control_bits(w);
            for pair in t.windows(2) {
                assert!(pair[0].bit < pair[1].bit, "{w:?}");
            }
            let width = if w.is_allowed1_only() { 64 } else { 32 };
            assert!(t.iter().all(|n| u32::from(n.bit) < width));
            // No named bit is a default1 (reserved-1) bit, except the named default1
            // controls the reference lists (primary 15/16, exit 2, entry 2).
            let named_default1 = known_mask(w) & u64::from(w.default1());
            let allowed = match w {
                ControlWord::Primary => (1 << 15) | (1 << 16),
                ControlWord::Exit | ControlWord::Entry => 1 << 2,
                _ => 0,
            };
            assert_eq!(named_default1, allowed, "{w:?}");
        }
    }

    /// The named bits are exactly those of reference vmx.md §2.1-2.7 (the bits whose
    /// meaning is UNVERIFIED there - secondary 29, tertiary 5 - stay unnamed, so the
    /// text report flags them `[unknown]`).
    #[test]
    fn names_cover_reference_section_2() {
        let bits = |list: &[u32]| list.iter().fold(0u64, |m, b| m | 1 << b);
        let range = |lo: u32, hi: u32| (lo..=hi).fold(0u64, |m, b| m | 1 << b);
        let expect = [
            (ControlWord::PinBased, bits(&[0, 3, 5, 6, 7])),
            (
                ControlWord::Primary,
                bits(&[
                    2, 3, 7, 9, 10, 11, 12, 15, 16, 17, 19, 20, 21, 22, 23, 24, 25,
                ]) | range(27, 31),
            ),
            (ControlWord::Secondary, range(0, 31) & !(1 << 29)),
            (ControlWord::Tertiary, range(0, 8) & !(1 << 5)),
            (ControlWord::Exit, bits(&[2, 9, 12, 15]) | range(18, 31)),
            (ControlWord::SecondaryExit, range(0, 3)),
            (ControlWord::Entry, bits(&[2, 9, 10, 11]) | range(13, 24)),
        ];
        for (w, mask) in expect {
            assert_eq!(known_mask(w), mask, "{w:?}");
            for n in control_bits(w) {
                assert!(
                    !n.label.is_empty() && !n.linux.is_empty(),
                    "{w:?} {}",
                    n.bit
                );
            }
        }
        // What QEMU's vmxcap prints (reference §4.2): the original script and the 2024
        // FRED additions.
        let printed = |w: ControlWord, v: Vmxcap| {
            control_bits(w)
                .iter()
                .filter(|n| n.vmxcap == v)
                .fold(0u64, |m, n| m | 1 << n.bit)
        };
        assert_eq!(
            printed(ControlWord::Secondary, Vmxcap::Original),
            range(0, 28) & !(1 << 21) & !(1 << 27)
        );
        assert_eq!(printed(ControlWord::Tertiary, Vmxcap::Original), 1 << 4);
        assert_eq!(
            printed(ControlWord::Exit, Vmxcap::Original),
            bits(&[2, 9, 12, 15]) | range(18, 25)
        );
        assert_eq!(printed(ControlWord::Exit, Vmxcap::Fred2024), 1 << 31);
        assert_eq!(printed(ControlWord::SecondaryExit, Vmxcap::Fred2024), 0b11);
        assert_eq!(
            printed(ControlWord::Entry, Vmxcap::Original),
            bits(&[2, 9, 10, 11]) | range(13, 18)
        );
        assert_eq!(printed(ControlWord::Entry, Vmxcap::Fred2024), 1 << 23);
    }

    #[test]
    fn lookups() {
        assert_eq!(
            lookup(ControlWord::Secondary, 31).unwrap().label,
            "Notify VM exiting"
        );
        assert_eq!(lookup(ControlWord::Secondary, 29), None);
        assert_eq!(
            lookup(ControlWord::Tertiary, 4).unwrap().linux,
            "TERTIARY_EXEC_IPI_VIRT"
        );
        assert_eq!(known_mask(ControlWord::PinBased), 0xE9);
    }
}
