// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The nested view (Linux v6.18 `nested_vmx_setup_ctls_msrs`, arch/x86/kvm/vmx/nested.c)
//! of every shared fixture, with hand-checked values for Tiger Lake (CET), Skylake-X
//! (UMIP emulated, MPX) and Penryn (no EPT, no VMFUNC, no TRUE MSRs), plus properties.

mod common;

use common::*;
use vmx_caps::{check, ControlWord, Dump, VmxCaps};
use vmx_controls::nested::{
    check_processor_compat, l1_config, nested_view, render_text, CompatError, CpuCompat,
    NestedAssumptions, NestedError, Provenance, NESTED_VMCS_ENUM, VMCS12_REVISION,
};
use vmx_controls::{ControlField, SetupError};

fn view(name: &str) -> vmx_controls::NestedView {
    nested_view(&caps(name), &NestedAssumptions::default()).expect("nested view")
}

fn msrs(v: &vmx_controls::NestedView) -> Vec<(u32, u64)> {
    v.caps.raw().iter().collect()
}

fn prov(v: &vmx_controls::NestedView, field: ControlField, bit: u32) -> Provenance {
    v.field_bits(field)
        .find(|b| b.bit == bit)
        .map(|b| b.provenance.clone())
        .expect("bit recorded")
}

/// Tiger Lake: every MSR checked by hand against the helpers of nested.c.
#[test]
fn tiger_lake_hand_checked() {
    let v = view(TGL);
    let expected: Vec<(u32, u64)> = vec![
        // nested_vmx_setup_basic: VMCS12_REVISION 0x11e57ed0, size 0x1000, WB (6 << 50),
        // TRUE (55), INS/OUTS (54) and NO_HW_ERROR_CODE_CC (56) from TGL's BASIC.
        (0x480, 0x01d8_1000_11e5_7ed0),
        // pin: EXT|NMI|VNMI|POSTED (APICv on TGL) + preemption timer + default1.
        (0x481, 0x0000_00ff_0000_0016),
        // primary: TGL's 0xfffbfffe without ACTIVATE_TERTIARY (17); legacy low = default1.
        (0x482, 0xfff9_fffe_0401_e172),
        // exit: default1 | HOST_ADDR | PERF | ACK | PAT pair | EFER pair | timer | CET (28).
        (0x483, 0x107f_ffff_0003_6dff),
        // entry: default1 | IA32E | PERF | PAT | EFER | CET (20); no MPX on TGL.
        (0x484, 0x0010_f3ff_0000_11ff),
        // misc: LMA (from 0x7004c1e7) | VMWRITE-RO (29) | rate 5 | HLT | wait-for-SIPI.
        (0x485, 0x2000_0165),
        (0x486, 0x8000_0021),
        (0x487, 0xffff_ffff),
        (0x488, 0x2000),
        // TGL has UMIP (FIXED1 bit 11): passed unchanged.
        (0x489, 0x00ff_2fff),
        (0x48A, 0x32),
        // secondary: pass-through of TGL's 0x031b3fff through KVM's mask, plus EPT, VPID,
        // UG, APIC accesses (parameters), shadow VMCS and PML (emulated); no ENCLS.
        (0x48B, 0x0213_7bff_0000_0000),
        // EPT: XO|PWL4|WB|INVEPT from the CPU, 2M|1G|ctx|global|A/D emulated; VPID all.
        (0x48C, 0x0000_0f01_0633_4041),
        (0x48D, 0x0000_00ff_0000_0016),
        (0x48E, 0xfff9_fffe_0400_6172),
        (0x48F, 0x107f_ffff_0003_6dfb),
        (0x490, 0x0010_f3ff_0000_11fb),
        (0x491, 1),
    ];
    assert_eq!(msrs(&v), expected);
    assert_eq!(v.caps.basic().revision_id(), VMCS12_REVISION);
    // CET pair passed through from L0's configuration (host SHSTK/IBT assumed).
    assert!(matches!(
        prov(&v, ControlField::Exit, 28),
        Provenance::PassedThrough { .. }
    ));
    assert!(matches!(
        prov(&v, ControlField::Entry, 20),
        Provenance::PassedThrough { .. }
    ));
    // Emulated whatever the hardware: preemption timer, MSR bitmaps, EFER, PML.
    assert!(matches!(
        prov(&v, ControlField::PinBased, 6),
        Provenance::Emulated { .. }
    ));
    assert!(matches!(
        prov(&v, ControlField::Primary, 28),
        Provenance::Emulated { .. }
    ));
    assert!(matches!(
        prov(&v, ControlField::Secondary, 17),
        Provenance::Emulated { .. }
    ));
    // Masked: tertiary controls, PLE, notify (not exposed); ENCLS (SGX off: no ENCLS).
    for (f, bit) in [
        (ControlField::Primary, 17),
        (ControlField::Secondary, 10),
        (ControlField::Secondary, 31),
    ] {
        match prov(&v, f, bit) {
            Provenance::Masked { why, .. } => assert!(why.contains("does not expose"), "{why}"),
            p => panic!("{f} bit {bit}: {p:?}"),
        }
    }
    match prov(&v, ControlField::Secondary, 15) {
        Provenance::Masked { why, .. } => assert!(why.contains("SGX off"), "{why}"),
        p => panic!("ENCLS: {p:?}"),
    }
    // CR3-load/store exiting may be 0 in the TRUE MSR ("free control").
    assert_eq!(
        v.caps
            .control_setting(ControlWord::Primary, 15)
            .vmxcap_word(),
        "default"
    );
}

/// Skylake-X: no UMIP (FIXED1 bit 11 clear) but descriptor-table exiting, so KVM
/// emulates UMIP (`vmx_umip_emulated`); MPX pair passed; no CET on the CPU.
#[test]
fn skylake_x_hand_checked() {
    let v = view(SKX);
    let c = &v.caps;
    assert_eq!(
        c.get(0x480),
        Some(0x00d8_1000_11e5_7ed0),
        "no bit 56 on SKX"
    );
    assert_eq!(c.get(0x489), Some(0x0037_27ff | (1 << 11)));
    assert!(v.params.umip_emulated);
    assert_eq!(
        c.get(0x483),
        Some(0x00ff_ffff_0003_6dff),
        "CLEAR_BNDCFGS, no CET"
    );
    assert_eq!(
        c.get(0x484),
        Some(0x0001_f3ff_0000_11ff),
        "LOAD_BNDCFGS, no CET"
    );
    match prov(&v, ControlField::Exit, 28) {
        Provenance::Masked { why, .. } => {
            assert!(why.contains("L0's VMCS configuration lacks"), "{why}")
        }
        p => panic!("{p:?}"),
    }
    // VMCS shadowing and PML are not in SKX's hardware (0x025d3fff) yet offered.
    assert_eq!(c.secondary().map(|s| s.may_be_one()), Some(0x0213_7bff));
    assert_eq!(
        caps(SKX).secondary().map(|s| s.may_be_one_bit(14)),
        Some(false)
    );
    assert!(matches!(
        prov(&v, ControlField::Secondary, 14),
        Provenance::Emulated { .. }
    ));
}

/// Penryn: no EPT (so no EPT caps, PML, unrestricted guest or VMFUNC), no TRUE MSRs on
/// the host but TRUE controls for L1, no store-EFER.LMA, VMCS_ENUM 0x32 regardless.
#[test]
fn penryn_hand_checked() {
    let v = view(PENRYN);
    assert!(!v.params.ept.on);
    assert_eq!(
        v.params.ept.why_off,
        Some("no ENABLE_EPT in L0's VMCS configuration")
    );
    assert!(!v.params.vpid.on && !v.params.eptad.on && !v.params.unrestricted_guest.on);
    let expected: Vec<(u32, u64)> = vec![
        (0x480, 0x00d8_1000_11e5_7ed0),
        (0x481, 0x0000_007f_0000_0016),
        (0x482, 0xf7f9_fffe_0401_e172),
        (0x483, 0x0073_ffff_0003_6dff),
        (0x484, 0x0000_b3ff_0000_11ff),
        (0x485, 0x2000_0145),
        (0x486, 0x8000_0021),
        (0x487, 0xffff_ffff),
        (0x488, 0x2000),
        (0x489, 0x0004_67ff),
        (0x48A, NESTED_VMCS_ENUM),
        // APIC accesses (flexpriority), WBINVD exiting, shadow VMCS (emulated).
        (0x48B, 0x0000_4041_0000_0000),
        (0x48C, 0),
        (0x48D, 0x0000_007f_0000_0016),
        (0x48E, 0xf7f9_fffe_0400_6172),
        (0x48F, 0x0073_ffff_0003_6dfb),
        (0x490, 0x0000_b3ff_0000_11fb),
        (0x491, 0),
    ];
    assert_eq!(msrs(&v), expected);
    match prov(&v, ControlField::Secondary, 1) {
        Provenance::Masked { why, .. } => assert!(why.starts_with("EPT off"), "{why}"),
        p => panic!("{p:?}"),
    }
    let vmfunc = v
        .bits
        .iter()
        .find(|b| b.msr == 0x491 && b.bit == 0)
        .expect("vmfunc");
    assert!(!vmfunc.provenance.offered());
}

#[test]
fn every_fixture_has_a_consistent_nested_view() {
    for name in ALL {
        let v = view(name);
        // Exposed: 0x480..=0x491, never the tertiary or secondary-exit MSRs.
        let idx: Vec<u32> = v.caps.raw().iter().map(|(i, _)| i).collect();
        assert_eq!(idx, (0x480..=0x491).collect::<Vec<_>>(), "{name}");
        // The dump round-trips and passes vmx-caps' invariant check.
        let dump = v.to_dump("x");
        let back = Dump::from_json(&dump.to_json()).expect("round trip");
        assert_eq!(back.caps().expect("caps"), v.caps, "{name}");
        let r = check::check(&v.caps);
        assert!(!r.is_violated(), "{name}: {:?}", r.findings);
        // L1's KVM loads on it, and what L2 gets equals what L1 got.
        let l1 = l1_config(&v);
        assert!(l1.loads(), "{name}: {:?}", l1.setup);
        let l2 = l1.l2.expect("L1 loads").expect("L2 view");
        assert_eq!(
            l2.caps, v.caps,
            "{name}: nested view of the nested view is stable"
        );
        // Text marks every named bit.
        let t = render_text(&v, name);
        assert!(
            t.contains("LOAD_CET_STATE") && t.contains("Linux v6.18"),
            "{name}"
        );
    }
}

/// Nothing L0's configuration cannot run is offered, except what KVM emulates (or the
/// reserved-as-1 bits).
fn offers_only_runnable(v: &vmx_controls::NestedView) {
    for b in v
        .bits
        .iter()
        .filter(|b| b.field.is_some() && b.provenance.offered())
    {
        let field = b.field.unwrap_or(ControlField::PinBased);
        let in_l0 = v.l0.config.field(field) & (1u64 << b.bit) != 0;
        assert!(
            in_l0
                || matches!(
                    b.provenance,
                    Provenance::Emulated { .. } | Provenance::Default1
                ),
            "{field} bit {}: {:?}",
            b.bit,
            b.provenance
        );
    }
}

#[test]
fn only_emulated_bits_exceed_l0() {
    for name in ALL {
        offers_only_runnable(&view(name));
    }
}

#[test]
fn stability_and_runnability_property() {
    arbtest::arbtest(|u| {
        let name = *u.choose(&ALL)?;
        let mut raw = common::raw(name);
        // Flip random allowed-1 bits of the control MSRs and the EPT/VPID caps.
        for index in [0x481u32, 0x482, 0x483, 0x484, 0x48B, 0x48C, 0x485, 0x489] {
            if let Some(v) = raw.get(index) {
                let mask: u64 = u.arbitrary()?;
                let flip = if u.arbitrary()? {
                    mask & 0xffff_ffff_0000_0000
                } else {
                    0
                };
                raw.insert(index, v ^ flip);
            }
        }
        let Ok(c) = VmxCaps::from_raw(raw) else {
            return Ok(());
        };
        let a = NestedAssumptions {
            ept: u.arbitrary()?,
            enable_apicv: u.arbitrary()?,
            host_shstk: u.arbitrary()?,
            host_ibt: u.arbitrary()?,
            ..NestedAssumptions::default()
        };
        if let Ok(v) = nested_view(&c, &a) {
            offers_only_runnable(&v);
            let l1 = l1_config(&v);
            if let Some(Ok(l2)) = l1.l2 {
                let again =
                    nested_view(&l2.caps, &l2.assumptions).expect("L2 view of a loadable L1");
                assert_eq!(again.caps, l2.caps, "fixed point");
            }
        }
        Ok(())
    });
}

#[test]
fn assumptions_change_the_view_with_reasons() {
    let no_cet = NestedAssumptions {
        host_shstk: false,
        host_ibt: false,
        ..NestedAssumptions::default()
    };
    let v = nested_view(&caps(ARL), &no_cet).expect("view");
    assert_eq!(v.caps.exit().may_be_one() & (1 << 28), 0);
    assert_eq!(v.caps.entry().may_be_one() & (1 << 20), 0);
    match prov(&v, ControlField::Entry, 20) {
        Provenance::Masked { why, .. } => assert_eq!(why, "host has neither SHSTK nor IBT"),
        p => panic!("{p:?}"),
    }
    // ept=0: no EPT, PML, A/D, VMFUNC or unrestricted guest; VPID stays.
    let no_ept = NestedAssumptions {
        ept: false,
        ..NestedAssumptions::default()
    };
    let v = nested_view(&caps(TGL), &no_ept).expect("view");
    let sec = v.caps.secondary().map_or(0, |s| s.may_be_one());
    assert_eq!(sec & ((1 << 1) | (1 << 7) | (1 << 17)), 0);
    assert_eq!(v.caps.get(0x48C), Some(0x0000_0f01_0000_0000));
    assert_eq!(v.caps.get(0x491), Some(0));
    assert_eq!(v.params.unrestricted_guest.why_off, Some("EPT disabled"));
    // enable_apicv=0: no posted interrupts for L1.
    let no_apicv = NestedAssumptions {
        enable_apicv: false,
        ..NestedAssumptions::default()
    };
    let v = nested_view(&caps(TGL), &no_apicv).expect("view");
    assert_eq!(v.caps.pin_based().may_be_one() & (1 << 7), 0);
    // host UMIP forced on for SKX: no UMIP emulation, FIXED1 unchanged.
    let umip = NestedAssumptions {
        host_umip: Some(true),
        ..NestedAssumptions::default()
    };
    let v = nested_view(&caps(SKX), &umip).expect("view");
    assert_eq!(v.caps.get(0x489), Some(0x0037_27ff));
    // host without SGX: Ice Lake's ENCLS exiting disappears.
    assert_ne!(
        view(ICL).caps.secondary().map_or(0, |s| s.may_be_one()) & (1 << 15),
        0
    );
    let no_sgx = NestedAssumptions {
        host_sgx: false,
        ..NestedAssumptions::default()
    };
    let v = nested_view(&caps(ICL), &no_sgx).expect("view");
    assert_eq!(
        v.caps.secondary().map_or(0, |s| s.may_be_one()) & (1 << 15),
        0
    );
}

#[test]
fn refusals_are_typed() {
    let off = NestedAssumptions {
        nested: false,
        ..NestedAssumptions::default()
    };
    assert_eq!(
        nested_view(&caps(TGL), &off),
        Err(NestedError::NestedDisabled)
    );
    // No HLT exiting allowed: setup_vmcs_config fails, so there is no L1 at all.
    let bad = caps_with(PENRYN, &[(0x482, Some(0xf7f9_ff7e_0401_e172))]);
    match nested_view(&bad, &NestedAssumptions::default()) {
        Err(NestedError::L0Refuses(SetupError::RequiredControlsMissing { .. })) => {}
        other => panic!("{other:?}"),
    }
    let uc = caps_with(TGL, &[(0x480, Some(0x01c2_0500_0000_0013))]);
    let e = nested_view(&uc, &NestedAssumptions::default()).unwrap_err();
    assert_eq!(e.kind(), "vmcs_memory_type_not_wb");
    assert!(
        e.to_string().starts_with("kvm_intel refuses to load"),
        "{e}"
    );
}

#[test]
fn processor_compat_like_vmx_check_processor_compat() {
    let a = NestedAssumptions::default();
    let r = check_processor_compat(&[caps(TGL), caps(TGL), caps(TGL)], &a).expect("boot");
    assert!(r.loads());
    // CPU 1 lacks the CET pair: its vmcs_config (and nested MSRs) differ.
    let no_cet = caps_with(
        TGL,
        &[
            (0x483, Some(0x037f_ffff_0003_6dff)),
            (0x484, Some(0x0006_ffff_0000_11ff)),
        ],
    );
    let r = check_processor_compat(&[caps(TGL), no_cet, caps(PENRYN)], &a).expect("boot");
    assert!(!r.loads());
    match &r.cpus[0] {
        CpuCompat::Inconsistent {
            cpu: 1,
            differences,
        } => {
            assert!(
                differences
                    .iter()
                    .any(|d| d.starts_with("exit: 0x137fffff -> 0x37fffff")),
                "{differences:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(r.cpus[0]
        .to_string()
        .starts_with("Inconsistent VMCS config on CPU 1"));
    let bad = caps_with(PENRYN, &[(0x482, Some(0xf7f9_ff7e_0401_e172))]);
    let r = check_processor_compat(&[caps(TGL), bad.clone()], &a).expect("boot");
    assert!(r.cpus[0]
        .to_string()
        .starts_with("Failed to setup VMCS config on CPU 1"));
    assert!(matches!(
        check_processor_compat(&[bad], &a),
        Err(CompatError::BootCpu(_))
    ));
    assert_eq!(check_processor_compat(&[], &a), Err(CompatError::NoCpu));
}

/// `error_on_inconsistent_vmcs_config`: strict L0 refuses a CPU whose PAT pair is
/// one-sided (no nested view); with sanitizing L0 loads and L1 gets neither PAT control.
#[test]
fn l0_policy_decides_refusal_of_inconsistent_pairs() {
    use vmx_controls::nested::nested_view_with;
    use vmx_controls::OnInconsistent;
    // Skylake-X without exit LOAD_IA32_PAT (bit 19) in the allowed-1 half.
    let one_sided = caps_with(SKX, &[(0x483, Some(0x01f7_ffff_0003_6dff))]);
    let a = NestedAssumptions::default();
    assert!(matches!(
        nested_view(&one_sided, &a),
        Err(NestedError::L0Refuses(SetupError::InconsistentPairs(_)))
    ));
    let sanitize = a.l0_policy().with_on_inconsistent(OnInconsistent::Sanitize);
    let v = nested_view_with(&one_sided, &a, &sanitize).expect("sanitized L0 loads");
    assert_eq!(
        v.caps.entry().may_be_one() & (1 << 14),
        0,
        "entry LOAD_IA32_PAT"
    );
    assert_eq!(
        v.caps.exit().may_be_one() & (1 << 19),
        0,
        "exit LOAD_IA32_PAT"
    );
}
