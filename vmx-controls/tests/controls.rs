// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Control-bit types: names and positions from the reference, unknown bits kept and
//! listed, field metadata.

use vmx_controls::*;

#[test]
fn bit_positions_match_linux() {
    assert_eq!(PinBasedControls::POSTED_INTR.bits(), 0x80);
    assert_eq!(PrimaryControls::ACTIVATE_TERTIARY_CONTROLS.bits(), 1 << 17);
    assert_eq!(
        PrimaryControls::ACTIVATE_SECONDARY_CONTROLS.bits(),
        0x8000_0000
    );
    assert_eq!(SecondaryControls::ENABLE_EPT.bits(), 0x2);
    assert_eq!(SecondaryControls::NOTIFY_VM_EXITING.bits(), 0x8000_0000);
    assert_eq!(SecondaryControls::BUS_LOCK_DETECTION.bits(), 0x4000_0000);
    assert_eq!(TertiaryControls::IPI_VIRT.bits(), 0x10);
    assert_eq!(ExitControls::LOAD_CET_STATE.bits(), 0x1000_0000);
    assert_eq!(
        ExitControls::ACTIVATE_SECONDARY_CONTROLS.bits(),
        0x8000_0000
    );
    assert_eq!(SecondaryExitControls::LOAD_IA32_FRED.bits(), 0x2);
    assert_eq!(EntryControls::LOAD_CET_STATE.bits(), 0x0010_0000);
    assert_eq!(EntryControls::LOAD_IA32_FRED.bits(), 0x0080_0000);
    // Named bits per field, as counted in the reference tables.
    assert_eq!(PinBasedControls::all().iter().count(), 5);
    assert_eq!(PrimaryControls::all().iter().count(), 22);
    assert_eq!(SecondaryControls::all().iter().count(), 31);
    assert_eq!(TertiaryControls::all().iter().count(), 8);
    assert_eq!(ExitControls::all().iter().count(), 18);
    assert_eq!(SecondaryExitControls::all().iter().count(), 4);
    assert_eq!(EntryControls::all().iter().count(), 16);
}

#[test]
fn default1_masks_match_vmx_caps() {
    use vmx_caps::control::*;
    assert_eq!(
        PinBasedControls::DEFAULT1.bits(),
        PIN_BASED_ALWAYSON_WITHOUT_TRUE_MSR
    );
    assert_eq!(
        PrimaryControls::DEFAULT1.bits(),
        CPU_BASED_ALWAYSON_WITHOUT_TRUE_MSR
    );
    assert_eq!(
        ExitControls::DEFAULT1.bits(),
        VM_EXIT_ALWAYSON_WITHOUT_TRUE_MSR
    );
    assert_eq!(
        EntryControls::DEFAULT1.bits(),
        VM_ENTRY_ALWAYSON_WITHOUT_TRUE_MSR
    );
    // Default1 bits that are also named controls.
    assert!(PrimaryControls::DEFAULT1.contains(PrimaryControls::CR3_LOAD_EXITING));
    assert!(ExitControls::DEFAULT1.contains(ExitControls::SAVE_DEBUG_CONTROLS));
    assert!(EntryControls::DEFAULT1.contains(EntryControls::LOAD_DEBUG_CONTROLS));
}

#[test]
fn unknown_bits_are_kept_and_listed() {
    // Ice Lake-U allows secondary bit 29 (meaning unknown).
    let s = SecondaryControls::from_bits_retain(0x335F_BFFF);
    assert_eq!(s.raw(), 0x335F_BFFF);
    assert_eq!(s.unknown().bits(), 1 << 29);
    assert_eq!(s.unknown_bit_numbers(), vec![29]);
    assert!(s.to_string().ends_with("| 0x20000000"), "{s}");

    // Default1 bits are reserved, not unknown; reserved-0 bits are unknown.
    let p = PrimaryControls::from_bits_retain(0xfff9_fffe | 1 | (1 << 18));
    assert_eq!(p.unknown_bit_numbers(), vec![0, 18]);
    let pin = PinBasedControls::from_bits_retain(0x16 | (1 << 20));
    assert_eq!(pin.unknown_bit_numbers(), vec![20]);
    let t = TertiaryControls::from_bits_retain((1 << 63) | (1 << 5) | 0x10);
    assert_eq!(t.unknown_bit_numbers(), vec![5, 63]);
    assert_eq!(ControlBits::unknown_u64(t), (1 << 63) | (1 << 5));
}

#[test]
fn names_and_description() {
    let x = ExitControls::from_bits_retain(0x137f_ffff);
    let names = ControlBits::names(x);
    assert_eq!(names.first(), Some(&"SAVE_DEBUG_CONTROLS"));
    assert_eq!(names.last(), Some(&"LOAD_CET_STATE"));
    assert!(!names.contains(&"CLEAR_BNDCFGS"));
    assert_eq!(PinBasedControls::empty().to_string(), "0");
    assert_eq!(
        PinBasedControls::from_bits_retain(0x9).to_string(),
        "EXT_INTR_MASK | NMI_EXITING"
    );
    assert_eq!(EntryControls::bit_name(20), Some("LOAD_CET_STATE"));
    assert_eq!(EntryControls::bit_name(0), None);
    assert_eq!(EntryControls::bit_name(40), None);
    assert_eq!(TertiaryControls::bit_name(4), Some("IPI_VIRT"));
    assert_eq!(
        ControlField::Secondary.describe_bits(0x3),
        "VIRTUALIZE_APIC_ACCESSES | ENABLE_EPT"
    );
    // 32-bit fields drop bits 63:32 of a wide raw value.
    assert_eq!(
        <PinBasedControls as ControlBits>::from_raw_u64(0x1_0000_0001).raw(),
        1
    );
}

#[test]
fn field_metadata() {
    let keys: Vec<_> = ControlField::ALL.iter().map(|f| f.json_key()).collect();
    assert_eq!(
        keys,
        [
            "pin_based",
            "primary",
            "secondary",
            "tertiary",
            "exit",
            "secondary_exit",
            "entry"
        ]
    );
    assert_eq!(ControlField::Exit.capability_msr(), 0x483);
    assert_eq!(ControlField::Exit.true_capability_msr(), Some(0x48F));
    assert_eq!(ControlField::Secondary.true_capability_msr(), None);
    assert_eq!(ControlField::Tertiary.vmcs_encoding(), 0x2034);
    assert_eq!(ControlField::SecondaryExit.vmcs_encoding(), 0x2044);
    assert_eq!(ControlField::Entry.hex(0x11ff), "0x000011ff");
    assert_eq!(ControlField::Tertiary.hex(0x10), "0x0000000000000010");
    assert_eq!(ControlField::PinBased.to_string(), "pin-based controls");
}

#[test]
fn raw_round_trip_property() {
    arbtest::arbtest(|u| {
        let v: u32 = u.arbitrary()?;
        let s = SecondaryControls::from_bits_retain(v);
        assert_eq!(s.raw(), v);
        // Named | unknown | default1 partition the value.
        let named = s & SecondaryControls::all();
        assert_eq!(named.bits() | s.unknown().bits(), v);
        let e = EntryControls::from_bits_retain(v);
        assert_eq!(
            (e & EntryControls::all()).bits()
                | e.unknown().bits()
                | (v & EntryControls::DEFAULT1.bits()),
            v
        );
        let w: u64 = u.arbitrary()?;
        assert_eq!(TertiaryControls::from_bits_retain(w).raw(), w);
        Ok(())
    });
}
