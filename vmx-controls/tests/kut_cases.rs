// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Held-out cases: the exact values kvm-unit-tests tries (reference §6.2–6.4) and the
//! verdicts it expects, replayed against the validator on the Skylake-X fixture
//! (MAXPHYADDR 46).

mod common;

use common::*;
use vmx_caps::VmxCaps;
use vmx_controls::sdm_checks::EntryContext;
use vmx_controls::*;

const MAXPHYADDR: u8 = 46;

struct Kut {
    caps: VmxCaps,
    c: ControlValues,
    f: VmcsFields,
    ctx: EntryContext,
}

impl Kut {
    fn new() -> Self {
        let caps = caps(SKX);
        let setup = setup_vmcs_config(&caps, &VmcsPolicy::linux()).unwrap();
        let mut c = ControlValues::from(&setup.config);
        c.secondary
            .remove(SecondaryControls::VIRTUALIZE_X2APIC_MODE);
        Kut {
            caps,
            c,
            f: VmcsFields {
                eptp: 0x1e,
                vpid: 1,
                posted_intr_nv: 0xf2,
                tsc_multiplier: 1 << 48,
                guest_cr0: 0x8000_0031,
                ..VmcsFields::default()
            },
            ctx: EntryContext {
                maxphyaddr: MAXPHYADDR,
                in_smm: false,
            },
        }
    }

    fn valid(&self) -> bool {
        check_vmx_controls(&self.c, &self.f, &self.caps, &self.ctx).is_empty()
    }
}

#[test]
fn e3_cr3_target_counts() {
    let mut k = Kut::new();
    for count in 0..=4 {
        k.f.cr3_target_count = count;
        assert!(k.valid(), "{count}");
    }
    for count in [5, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff] {
        k.f.cr3_target_count = count;
        assert!(!k.valid(), "{count:#x}");
    }
}

#[test]
fn e4_io_and_msr_bitmap_addresses() {
    let mut k = Kut::new();
    for bit in 0..64 {
        let addr = 1u64 << bit;
        let expect = bit >= 12 && bit < u32::from(MAXPHYADDR);
        k.f.io_bitmap_a = addr;
        assert_eq!(k.valid(), expect, "I/O bitmap A bit {bit}");
        k.f.io_bitmap_a = 0;
        k.f.msr_bitmap = addr;
        assert_eq!(k.valid(), expect, "MSR bitmap bit {bit}");
        k.f.msr_bitmap = 0;
    }
    for (addr, expect) in [
        (0xfff, false),
        (0x1000, true),
        ((1u64 << MAXPHYADDR) - 4096, true),
        (u64::MAX, false),
    ] {
        k.f.io_bitmap_b = addr;
        assert_eq!(k.valid(), expect, "{addr:#x}");
    }
    // With the control off the field is ignored.
    k.c.primary.remove(PrimaryControls::USE_IO_BITMAPS);
    assert!(k.valid());
}

#[test]
fn e7_apic_virtualization_combinations() {
    let trio = [
        SecondaryControls::VIRTUALIZE_X2APIC_MODE,
        SecondaryControls::APIC_REGISTER_VIRT,
        SecondaryControls::VIRTUAL_INTR_DELIVERY,
    ];
    for mask in 1..8u32 {
        let mut k = Kut::new();
        k.c.pin.remove(PinBasedControls::POSTED_INTR);
        k.c.secondary.remove(
            SecondaryControls::VIRTUALIZE_APIC_ACCESSES
                | SecondaryControls::APIC_REGISTER_VIRT
                | SecondaryControls::VIRTUAL_INTR_DELIVERY,
        );
        for (i, bit) in trio.iter().enumerate() {
            if mask & (1 << i) != 0 {
                k.c.secondary.insert(*bit);
            }
        }
        assert!(k.valid(), "with TPR shadow, combination {mask}");
        k.c.primary.remove(PrimaryControls::TPR_SHADOW);
        assert!(!k.valid(), "without TPR shadow, combination {mask}");
    }
}

#[test]
fn e10_vpid_values() {
    let mut k = Kut::new();
    k.f.vpid = 0;
    assert!(!k.valid());
    for bit in 0..16 {
        k.f.vpid = 1 << bit;
        assert!(k.valid(), "VPID bit {bit}");
    }
    k.f.vpid = 0;
    k.c.secondary.remove(SecondaryControls::ENABLE_VPID);
    assert!(k.valid(), "VPID ignored when disabled");
}

#[test]
fn e12_nmi_controls() {
    let mut k = Kut::new();
    k.c.pin
        .remove(PinBasedControls::NMI_EXITING | PinBasedControls::VIRTUAL_NMIS);
    k.c.primary.remove(PrimaryControls::NMI_WINDOW_EXITING);
    assert!(k.valid());
    k.c.pin.insert(PinBasedControls::VIRTUAL_NMIS);
    assert!(!k.valid());
    k.c.pin.remove(PinBasedControls::VIRTUAL_NMIS);
    k.c.primary.insert(PrimaryControls::NMI_WINDOW_EXITING);
    assert!(!k.valid());
}

#[test]
fn x2_msr_store_area_end() {
    let mut k = Kut::new();
    k.f.exit_msr_store_count = 2;
    for (back, expect) in [(16, false), (32, true), (48, true)] {
        k.f.exit_msr_store_addr = (1u64 << MAXPHYADDR) - back;
        assert_eq!(k.valid(), expect, "2^MAXPHYADDR - {back}");
    }
    for bit in 0..4 {
        k.f.exit_msr_store_addr = 0x1000 | (1 << bit);
        assert!(!k.valid(), "address bit {bit}");
    }
}

#[test]
fn v1_to_v9_event_injection() {
    let mut k = Kut::new();
    let mut inject = |info: u32, code: u32, len: u32| {
        k.f.entry_intr_info = info;
        k.f.entry_exception_error_code = code;
        k.f.entry_instruction_len = len;
        k.valid()
    };
    assert!(inject(0x8000_0000, 0, 0), "V1: external, vector 0");
    assert!(!inject(0x8000_0100, 0, 0), "V1: type 1");
    assert!(!inject(0x8000_0701, 0, 0), "V2: other event, vector 1");
    assert!(!inject(0x8000_0203, 0, 0), "V3: NMI vector 3");
    assert!(inject(0x8000_0202, 0, 0), "V3: NMI vector 2");
    assert!(!inject(0x8000_0320, 0, 0), "V4: #32 as HW exception");
    assert!(
        !inject(0x8000_0b06, 0, 0),
        "V5: #UD with code (no BASIC[56])"
    );
    assert!(!inject(0x8000_0a02, 0, 0), "V6: NMI with error code");
    for bit in 16..32 {
        assert!(!inject(0x8000_0b0d, 1 << bit, 0), "V7: code bit {bit}");
    }
    assert!(inject(0x8000_0b0d, 0x8000, 0), "V7: bit 15 is allowed");
    for bit in 12..31 {
        assert!(!inject(0x8000_0000 | (1 << bit), 0, 0), "V8: bit {bit}");
    }
    for ty in [4u32, 5, 6] {
        let info = 0x8000_0000 | (ty << 8) | 3;
        assert!(!inject(info, 0, 16), "V9: type {ty} len 16");
        assert!(!inject(info, 0, 0xffff_ffff), "V9: type {ty} len -1");
        assert!(inject(info, 0, 1), "V9: type {ty} len 1");
        // Skylake-X has MISC[30]: length 0 is allowed.
        assert!(inject(info, 0, 0), "V9: type {ty} len 0");
    }
}
