// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! One passing and one failing case for every SDM control-check rule.
//!
//! Baseline: the Arrow Lake fixture (the richest one: PML, VMCS shadowing, VM functions,
//! TSC scaling, BASIC[56]) with the KVM configuration as a vCPU in xAPIC mode uses it,
//! and VMCS fields a VMM would write. Each case modifies the baseline; a passing case
//! makes the rule's condition apply and satisfies it, a failing case must be reported
//! as exactly that rule (nothing else).

mod common;

use common::*;
use vmx_caps::{RawMsrs, VmxCaps};
use vmx_controls::sdm_checks::{EntryContext, RuleGroup};
use vmx_controls::*;
use x86_kvm_base::exception::GuestCet;

#[derive(Clone)]
struct S {
    c: ControlValues,
    f: VmcsFields,
    raw: RawMsrs,
    ctx: EntryContext,
}

impl S {
    fn baseline() -> Self {
        let caps = caps(ARL);
        let setup = setup_vmcs_config(&caps, &VmcsPolicy::linux()).unwrap();
        let mut c = ControlValues::from(&setup.config);
        c.secondary
            .remove(SecondaryControls::VIRTUALIZE_X2APIC_MODE);
        S {
            c,
            f: VmcsFields {
                eptp: 6 | (3 << 3),
                vpid: 1,
                posted_intr_nv: 0xf2,
                tsc_multiplier: 1 << 48,
                guest_cr0: 0x8000_0031, // PG | NE | ET | PE: protected mode
                ..VmcsFields::default()
            },
            raw: raw(ARL),
            ctx: EntryContext::default(),
        }
    }

    fn rules(&self) -> Vec<SdmRule> {
        let caps = VmxCaps::from_raw(self.raw.clone()).unwrap();
        check_vmx_controls(&self.c, &self.f, &caps, &self.ctx)
            .into_iter()
            .map(|v| v.rule)
            .collect()
    }

    fn allow_secondary(&mut self, bits: SecondaryControls) {
        let v = self.raw.get(0x48B).unwrap();
        self.raw.insert(0x48B, v | (u64::from(bits.bits()) << 32));
    }

    fn set_msr(&mut self, index: u32, value: u64) {
        self.raw.insert(index, value);
    }

    fn clear_ept_users(&mut self) {
        self.c.secondary.remove(
            SecondaryControls::ENABLE_EPT
                | SecondaryControls::UNRESTRICTED_GUEST
                | SecondaryControls::ENABLE_PML,
        );
    }
}

type Edit = fn(&mut S);

use PinBasedControls as P;
use PrimaryControls as C;
use SecondaryControls as Sec;

fn cases() -> Vec<(SdmRule, Edit, Edit)> {
    use SdmRule as R;
    vec![
        (
            R::PinBasedAllowed,
            |_| {},
            |s| s.c.pin.remove(P::from_bits_retain(0x2)),
        ),
        (
            R::PrimaryAllowed,
            |_| {},
            |s| s.c.primary.insert(C::from_bits_retain(0x1)),
        ),
        (
            R::SecondaryAllowed,
            |_| {},
            |s| s.c.secondary.insert(Sec::from_bits_retain(1 << 29)),
        ),
        (
            R::TertiaryAllowed,
            |s| {
                s.set_msr(0x492, 0x10);
                s.c.tertiary = TertiaryControls::IPI_VIRT;
            },
            |s| s.c.tertiary = TertiaryControls::IPI_VIRT,
        ),
        (
            R::Cr3TargetCount,
            |s| s.f.cr3_target_count = 4,
            |s| s.f.cr3_target_count = 5,
        ),
        (
            R::IoBitmapAddress,
            |s| {
                s.f.io_bitmap_a = 0x1000;
                s.f.io_bitmap_b = (1 << 46) - 0x1000;
            },
            |s| s.f.io_bitmap_b = 1 << 46,
        ),
        (
            R::MsrBitmapAddress,
            |s| s.f.msr_bitmap = 0x3000,
            |s| s.f.msr_bitmap = 0x3008,
        ),
        (
            R::VirtualApicAddress,
            |s| s.f.virtual_apic_page = 0x4000,
            |s| s.f.virtual_apic_page = 0x4000 | (1 << 50),
        ),
        (
            R::TprThresholdReserved,
            |s| {
                s.c.secondary.remove(Sec::VIRTUAL_INTR_DELIVERY);
                s.c.pin.remove(P::POSTED_INTR);
                s.f.tpr_threshold = 0xf;
            },
            |s| {
                s.c.secondary.remove(Sec::VIRTUAL_INTR_DELIVERY);
                s.c.pin.remove(P::POSTED_INTR);
                s.f.tpr_threshold = 0x10;
            },
        ),
        (
            R::TprThresholdAboveVtpr,
            |s| {
                s.c.secondary
                    .remove(Sec::VIRTUAL_INTR_DELIVERY | Sec::VIRTUALIZE_APIC_ACCESSES);
                s.c.pin.remove(P::POSTED_INTR);
                s.f.tpr_threshold = 3;
                s.f.vtpr = 0x30;
            },
            |s| {
                s.c.secondary
                    .remove(Sec::VIRTUAL_INTR_DELIVERY | Sec::VIRTUALIZE_APIC_ACCESSES);
                s.c.pin.remove(P::POSTED_INTR);
                s.f.tpr_threshold = 4;
                s.f.vtpr = 0x3f;
            },
        ),
        (
            R::VirtualNmisWithoutNmiExiting,
            |_| {},
            |s| s.c.pin.remove(P::NMI_EXITING),
        ),
        (
            R::NmiWindowWithoutVirtualNmis,
            |s| {
                s.c.pin.remove(P::VIRTUAL_NMIS);
                s.c.primary.remove(C::NMI_WINDOW_EXITING);
            },
            |s| s.c.pin.remove(P::VIRTUAL_NMIS),
        ),
        (
            R::ApicAccessAddress,
            |s| s.f.apic_access_addr = 0xfee0_0000,
            |s| s.f.apic_access_addr = 0xfee0_0800,
        ),
        (
            R::ApicVirtWithoutTprShadow,
            |s| {
                s.c.primary.remove(C::TPR_SHADOW);
                s.c.secondary
                    .remove(Sec::APIC_REGISTER_VIRT | Sec::VIRTUAL_INTR_DELIVERY);
                s.c.pin.remove(P::POSTED_INTR);
            },
            |s| s.c.primary.remove(C::TPR_SHADOW),
        ),
        (
            R::X2apicModeWithApicAccesses,
            |s| {
                s.c.secondary.insert(Sec::VIRTUALIZE_X2APIC_MODE);
                s.c.secondary.remove(Sec::VIRTUALIZE_APIC_ACCESSES);
            },
            |s| s.c.secondary.insert(Sec::VIRTUALIZE_X2APIC_MODE),
        ),
        (
            R::VidWithoutExtIntrExiting,
            |_| {},
            |s| s.c.pin.remove(P::EXT_INTR_MASK),
        ),
        (
            R::PostedIntrWithoutVid,
            |_| {},
            |s| s.c.secondary.remove(Sec::VIRTUAL_INTR_DELIVERY),
        ),
        (
            R::PostedIntrWithoutAckIntr,
            |_| {},
            |s| s.c.exit.remove(ExitControls::ACK_INTR_ON_EXIT),
        ),
        (
            R::PostedIntrVector,
            |s| s.f.posted_intr_nv = 0xff,
            |s| s.f.posted_intr_nv = 0x1f2,
        ),
        (
            R::PostedIntrDescAddress,
            |s| s.f.posted_intr_desc_addr = 0x1_0040,
            |s| s.f.posted_intr_desc_addr = 0x1_0020,
        ),
        (R::VpidZero, |s| s.f.vpid = 0xffff, |s| s.f.vpid = 0),
        (
            R::EptpMemoryType,
            |s| s.f.eptp = 3 << 3,       // UC, allowed by caps bit 8
            |s| s.f.eptp = 1 | (3 << 3), // WC
        ),
        (
            R::EptpPageWalkLength,
            |s| {
                // A part with 5-level EPT.
                let v = s.raw.get(0x48C).unwrap();
                s.set_msr(0x48C, v | (1 << 7));
                s.f.eptp = 6 | (4 << 3);
            },
            |s| s.f.eptp = 6 | (4 << 3),
        ),
        (
            R::EptpAccessDirty,
            |s| s.f.eptp |= 1 << 6,
            |s| {
                let v = s.raw.get(0x48C).unwrap();
                s.set_msr(0x48C, v & !(1 << 21));
                s.f.eptp |= 1 << 6;
            },
        ),
        (
            R::EptpReservedBits,
            // Bit 7 (supervisor shadow stack) is allowed: caps bit 23 on Arrow Lake.
            |s| s.f.eptp |= (1 << 7) | 0x1234_5000,
            |s| s.f.eptp |= 1 << 8,
        ),
        (
            R::PmlWithoutEpt,
            |_| {},
            |s| {
                s.clear_ept_users();
                s.c.secondary.insert(Sec::ENABLE_PML);
            },
        ),
        (
            R::PmlAddress,
            |s| s.f.pml_address = 0x6000,
            |s| s.f.pml_address = 0x6001,
        ),
        (
            R::UnrestrictedGuestWithoutEpt,
            |_| {},
            |s| {
                s.clear_ept_users();
                s.c.secondary.insert(Sec::UNRESTRICTED_GUEST);
            },
        ),
        (
            R::ModeBasedEptWithoutEpt,
            |s| s.c.secondary.insert(Sec::MODE_BASED_EPT_EXEC),
            |s| {
                s.clear_ept_users();
                s.c.secondary.insert(Sec::MODE_BASED_EPT_EXEC);
            },
        ),
        (
            R::SppWithoutEpt,
            |s| {
                s.allow_secondary(Sec::ENABLE_SPP);
                s.c.secondary.insert(Sec::ENABLE_SPP);
            },
            |s| {
                s.allow_secondary(Sec::ENABLE_SPP);
                s.clear_ept_users();
                s.c.secondary.insert(Sec::ENABLE_SPP);
            },
        ),
        (
            R::SppTablePointer,
            |s| {
                s.allow_secondary(Sec::ENABLE_SPP);
                s.c.secondary.insert(Sec::ENABLE_SPP);
                s.f.spp_table_pointer = 0x7000;
            },
            |s| {
                s.allow_secondary(Sec::ENABLE_SPP);
                s.c.secondary.insert(Sec::ENABLE_SPP);
                s.f.spp_table_pointer = 0x7004;
            },
        ),
        (
            R::VmFunctionControls,
            |s| {
                s.set_msr(0x491, 1);
                s.f.vm_function_controls = 1;
            },
            |s| s.f.vm_function_controls = 1, // 0x491 absent: nothing allowed
        ),
        (
            R::EptpSwitchingWithoutEpt,
            |s| {
                s.set_msr(0x491, 1);
                s.f.vm_function_controls = 1;
            },
            |s| {
                s.set_msr(0x491, 1);
                s.f.vm_function_controls = 1;
                s.clear_ept_users();
            },
        ),
        (
            R::EptpListAddress,
            |s| {
                s.set_msr(0x491, 1);
                s.f.vm_function_controls = 1;
                s.f.eptp_list_address = 0x8000;
            },
            |s| {
                s.set_msr(0x491, 1);
                s.f.vm_function_controls = 1;
                s.f.eptp_list_address = 0x8001;
            },
        ),
        (
            R::VmcsShadowingBitmaps,
            |s| {
                s.f.vmread_bitmap = 0x9000;
                s.f.vmwrite_bitmap = 0xa000;
            },
            |s| s.f.vmwrite_bitmap = 0xa010,
        ),
        (
            R::VeInfoAddress,
            |s| {
                s.c.secondary.insert(Sec::EPT_VIOLATION_VE);
                s.f.ve_info_address = 0xb000;
            },
            |s| {
                s.c.secondary.insert(Sec::EPT_VIOLATION_VE);
                s.f.ve_info_address = 0xb010;
            },
        ),
        (
            R::TscMultiplierZero,
            |s| s.f.tsc_multiplier = 1,
            |s| s.f.tsc_multiplier = 0,
        ),
        (
            R::ExitAllowed,
            |_| {},
            |s| s.c.exit.insert(ExitControls::CLEAR_BNDCFGS),
        ),
        (
            R::SecondaryExitAllowed,
            |s| {
                s.set_msr(0x493, 0x3);
                s.c.exit.insert(ExitControls::ACTIVATE_SECONDARY_CONTROLS);
                s.c.secondary_exit = SecondaryExitControls::LOAD_IA32_FRED;
            },
            |s| {
                s.c.exit.insert(ExitControls::ACTIVATE_SECONDARY_CONTROLS);
                s.c.secondary_exit = SecondaryExitControls::LOAD_IA32_FRED;
            },
        ),
        (
            R::SavePreemptionTimerWithoutTimer,
            |_| {},
            |s| s.c.pin.remove(P::VMX_PREEMPTION_TIMER),
        ),
        (
            R::ExitMsrStoreAddress,
            |s| {
                s.f.exit_msr_store_count = 2;
                s.f.exit_msr_store_addr = (1 << 46) - 32;
            },
            |s| {
                s.f.exit_msr_store_count = 2;
                s.f.exit_msr_store_addr = (1 << 46) - 16;
            },
        ),
        (
            R::ExitMsrLoadAddress,
            |s| {
                s.f.exit_msr_load_count = 1;
                s.f.exit_msr_load_addr = 0x1_0010;
            },
            |s| {
                s.f.exit_msr_load_count = 1;
                s.f.exit_msr_load_addr = 0x1_0018;
            },
        ),
        (
            R::EntryAllowed,
            |_| {},
            |s| s.c.entry.insert(EntryControls::LOAD_BNDCFGS),
        ),
        (
            R::SmmControlsOutsideSmm,
            |s| {
                s.ctx.in_smm = true;
                s.c.entry.insert(EntryControls::DEACT_DUAL_MONITOR);
            },
            |s| s.c.entry.insert(EntryControls::DEACT_DUAL_MONITOR),
        ),
        (
            R::EntryToSmmAndDeactDualMonitor,
            |s| {
                s.ctx.in_smm = true;
                s.c.entry.insert(EntryControls::SMM);
            },
            |s| {
                s.ctx.in_smm = true;
                s.c.entry
                    .insert(EntryControls::SMM | EntryControls::DEACT_DUAL_MONITOR);
            },
        ),
        (
            R::EventType,
            |s| s.f.entry_intr_info = 0x8000_0020, // external interrupt 0x20
            |s| s.f.entry_intr_info = 0x8000_0120, // type 1: reserved
        ),
        (
            R::EventVector,
            |s| s.f.entry_intr_info = 0x8000_0202, // NMI, vector 2
            |s| s.f.entry_intr_info = 0x8000_0203, // NMI, vector 3
        ),
        (
            R::EventErrorCodeDelivery,
            |s| s.f.entry_intr_info = 0x8000_0b0e, // #PF with error code
            |s| s.f.entry_intr_info = 0x8000_0820, // external interrupt with error code
        ),
        (
            R::EventReservedBits,
            |s| s.f.entry_intr_info = 0x8000_0306, // #UD
            |s| s.f.entry_intr_info = 0x8000_1306, // #UD, bit 12 set
        ),
        (
            R::EventErrorCodeReserved,
            |s| {
                s.f.entry_intr_info = 0x8000_0b0d; // #GP with error code
                s.f.entry_exception_error_code = 0xffff;
            },
            |s| {
                s.f.entry_intr_info = 0x8000_0b0d;
                s.f.entry_exception_error_code = 0x1_0000;
            },
        ),
        (
            R::EventInstructionLength,
            |s| {
                s.f.entry_intr_info = 0x8000_0480; // INT 0x80
                s.f.entry_instruction_len = 15;
            },
            |s| {
                s.f.entry_intr_info = 0x8000_0480;
                s.f.entry_instruction_len = 16;
            },
        ),
        (
            R::EntryMsrLoadAddress,
            |s| {
                s.f.entry_msr_load_count = u32::MAX;
                s.f.entry_msr_load_addr = 0x1000;
            },
            |s| {
                // Last byte overflows the 46-bit width.
                s.f.entry_msr_load_count = u32::MAX;
                s.f.entry_msr_load_addr = (1 << 46) - (16 << 20);
            },
        ),
    ]
}

#[test]
fn baseline_passes() {
    assert_eq!(S::baseline().rules(), vec![]);
}

#[test]
fn every_rule_has_a_passing_and_a_failing_case() {
    let cases = cases();
    for rule in SdmRule::ALL {
        assert!(
            cases.iter().any(|(r, _, _)| r == rule),
            "no case for {rule:?}"
        );
    }
    for (rule, pass, fail) in cases {
        let mut s = S::baseline();
        pass(&mut s);
        assert_eq!(s.rules(), vec![], "passing case of {rule:?}");
        let mut s = S::baseline();
        fail(&mut s);
        assert_eq!(s.rules(), vec![rule], "failing case of {rule:?}");
    }
}

#[test]
fn all_violations_are_reported_at_once() {
    let mut s = S::baseline();
    s.f.vpid = 0;
    s.f.tsc_multiplier = 0;
    s.f.cr3_target_count = 99;
    s.f.entry_intr_info = 0x8000_0203;
    s.c.pin.remove(P::VMX_PREEMPTION_TIMER);
    let rules = s.rules();
    assert_eq!(
        rules,
        vec![
            SdmRule::Cr3TargetCount,
            SdmRule::VpidZero,
            SdmRule::TscMultiplierZero,
            SdmRule::SavePreemptionTimerWithoutTimer,
            SdmRule::EventVector,
        ]
    );
}

#[test]
fn violations_name_their_sdm_section() {
    let mut s = S::baseline();
    s.f.vpid = 0;
    s.c.pin.remove(P::VMX_PREEMPTION_TIMER);
    s.c.entry.insert(EntryControls::SMM);
    let caps = VmxCaps::from_raw(s.raw.clone()).unwrap();
    let v = check_vmx_controls(&s.c, &s.f, &caps, &s.ctx);
    let sections: Vec<_> = v.iter().map(|x| x.rule.sdm_section()).collect();
    assert_eq!(sections, vec!["26.2.1.1", "26.2.1.2", "26.2.1.3"]);
    assert!(
        v[0].to_string()
            .starts_with("SDM 26.2.1.1: with enable VPID"),
        "{}",
        v[0]
    );
    assert_eq!(RuleGroup::ExitControls.sdm_section_current(), "27.2.1.2");
    assert!(v[2].detail.contains("SMM"), "{}", v[2].detail);
}

#[test]
fn inactive_secondary_controls_are_ignored() {
    // KUT E2: ACTIVATE_SECONDARY = 0 and a garbage secondary field is valid.
    let mut s = S::baseline();
    s.c.primary.remove(C::ACTIVATE_SECONDARY_CONTROLS);
    s.c.pin.remove(P::POSTED_INTR); // needs virtual-interrupt delivery
    s.c.secondary = Sec::from_bits_retain(0xffff_ffff);
    assert_eq!(s.rules(), vec![]);
    // Likewise tertiary and secondary VM-exit controls.
    s.c.primary.remove(C::ACTIVATE_TERTIARY_CONTROLS);
    s.c.tertiary = TertiaryControls::from_bits_retain(u64::MAX);
    s.c.secondary_exit = SecondaryExitControls::from_bits_retain(u64::MAX);
    assert_eq!(s.rules(), vec![]);
}

#[test]
fn allowed_settings_use_true_msrs() {
    // CR3-load exiting is default1 in the legacy MSR but may be 0 per TRUE (BASIC[55]).
    let mut s = S::baseline();
    s.c.primary
        .remove(C::CR3_LOAD_EXITING | C::CR3_STORE_EXITING);
    assert_eq!(s.rules(), vec![]);
    // Penryn has no TRUE MSRs: the same clearing violates the primary settings.
    let caps = caps(PENRYN);
    let setup = setup_vmcs_config(&caps, &VmcsPolicy::linux()).unwrap();
    let mut c = ControlValues::from(&setup.config);
    assert!(
        check_vmx_controls(&c, &VmcsFields::default(), &caps, &EntryContext::default()).is_empty()
    );
    c.primary.remove(C::CR3_LOAD_EXITING);
    let v = check_vmx_controls(&c, &VmcsFields::default(), &caps, &EntryContext::default());
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].rule, SdmRule::PrimaryAllowed);
}

#[test]
fn other_event_needs_monitor_trap_flag_support() {
    // Penryn does not allow the monitor trap flag: type 7 is invalid there.
    let caps = caps(PENRYN);
    let setup = setup_vmcs_config(&caps, &VmcsPolicy::linux()).unwrap();
    let c = ControlValues::from(&setup.config);
    let f = VmcsFields {
        entry_intr_info: 0x8000_0700,
        ..VmcsFields::default()
    };
    let v = check_vmx_controls(&c, &f, &caps, &EntryContext::default());
    assert_eq!(
        v.iter().map(|x| x.rule).collect::<Vec<_>>(),
        vec![SdmRule::EventType]
    );
    // Arrow Lake allows it.
    let mut s = S::baseline();
    s.f.entry_intr_info = 0x8000_0700;
    assert_eq!(s.rules(), vec![]);
    s.f.entry_intr_info = 0x8000_0701;
    assert_eq!(s.rules(), vec![SdmRule::EventVector]);
}

#[test]
fn error_code_rule_and_basic_56() {
    // Skylake-X lacks BASIC[56]: #PF must carry its error code, #UD must not.
    let run_cet = |info: u32, cr0: u64, caps: &VmxCaps, guest_cet: GuestCet| {
        let setup = setup_vmcs_config(caps, &VmcsPolicy::linux()).unwrap();
        let mut c = ControlValues::from(&setup.config);
        c.secondary.remove(Sec::VIRTUALIZE_X2APIC_MODE);
        let f = VmcsFields {
            eptp: 0x1e,
            vpid: 1,
            posted_intr_nv: 0xf2,
            tsc_multiplier: 1 << 48,
            entry_intr_info: info,
            guest_cr0: cr0,
            ..VmcsFields::default()
        };
        check_vmx_controls_for_guest(&c, &f, caps, &EntryContext::default(), guest_cet)
            .into_iter()
            .map(|v| v.rule)
            .collect::<Vec<_>>()
    };
    let run = |info: u32, cr0: u64, caps: &VmxCaps| run_cet(info, cr0, caps, GuestCet::Absent);
    let caps = caps(SKX);
    let ecd = vec![SdmRule::EventErrorCodeDelivery];
    assert_eq!(run(0x8000_030e, 1, &caps), ecd, "#PF without code");
    assert_eq!(run(0x8000_0b0e, 1, &caps), vec![], "#PF with code");
    assert_eq!(run(0x8000_0b06, 1, &caps), ecd, "#UD with code");
    // #CP (21) follows the guest's CET state, as Linux `x86_exception_has_error_code`:
    // with the Skylake-X fixture, #CP without an error code passes for a guest without
    // CET and fails for one with CET (it used to always expect one).
    assert_eq!(
        run(0x8000_0315, 1, &caps),
        vec![],
        "#CP without CET: no code"
    );
    assert_eq!(
        run(0x8000_0b15, 1, &caps),
        ecd,
        "#CP without CET, with code"
    );
    assert_eq!(
        run_cet(0x8000_0b15, 1, &caps, GuestCet::Present),
        vec![],
        "#CP with CET has an error code"
    );
    assert_eq!(
        run_cet(0x8000_0315, 1, &caps, GuestCet::Present),
        ecd,
        "#CP with CET needs its code"
    );
    // Unrestricted real-mode guest: no error codes at all.
    assert_eq!(run(0x8000_0b0d, 0, &caps), ecd, "#GP with code, real mode");
    assert_eq!(
        run(0x8000_030d, 0, &caps),
        vec![],
        "#GP without code, real mode"
    );

    // Arrow Lake has BASIC[56]: hardware exceptions in protected mode are not checked.
    let arl = common::caps(ARL);
    assert!(arl.basic().no_hw_error_code_cc());
    assert_eq!(run(0x8000_030e, 1, &arl), vec![]);
    assert_eq!(run(0x8000_0b06, 1, &arl), vec![]);
    // ... but the rule still holds outside protected mode and for other types.
    assert_eq!(run(0x8000_0b0d, 0, &arl), ecd);
    assert_eq!(run(0x8000_0820, 1, &arl), ecd);
}

#[test]
fn nested_exception_bit_needs_basic_58() {
    let mut s = S::baseline();
    s.f.entry_intr_info = 0x8000_2306; // #UD with bit 13
    assert_eq!(s.rules(), vec![SdmRule::EventReservedBits]);
    let v = s.raw.get(0x480).unwrap();
    s.set_msr(0x480, v | (1 << 58));
    assert_eq!(s.rules(), vec![]);
    // Only for hardware exceptions.
    s.f.entry_intr_info = 0x8000_2020;
    assert_eq!(s.rules(), vec![SdmRule::EventReservedBits]);
}

#[test]
fn zero_instruction_length_needs_misc_30() {
    let mut s = S::baseline();
    s.f.entry_intr_info = 0x8000_0480;
    s.f.entry_instruction_len = 0;
    assert_eq!(s.rules(), vec![], "Arrow Lake MISC[30] = 1");
    let v = s.raw.get(0x485).unwrap();
    s.set_msr(0x485, v & !(1 << 30));
    assert_eq!(s.rules(), vec![SdmRule::EventInstructionLength]);
}

#[test]
fn basic_48_limits_addresses_to_32_bits() {
    let mut s = S::baseline();
    s.f.msr_bitmap = 1 << 32;
    assert_eq!(s.rules(), vec![]);
    let v = s.raw.get(0x480).unwrap();
    s.set_msr(0x480, v | (1 << 48));
    assert_eq!(s.rules(), vec![SdmRule::MsrBitmapAddress]);
}

#[test]
fn arbitrary_inputs_never_panic() {
    let caps = caps(ARL);
    arbtest::arbtest(|u| {
        let c = ControlValues {
            pin: P::from_bits_retain(u.arbitrary()?),
            primary: C::from_bits_retain(u.arbitrary()?),
            secondary: Sec::from_bits_retain(u.arbitrary()?),
            tertiary: TertiaryControls::from_bits_retain(u.arbitrary()?),
            exit: ExitControls::from_bits_retain(u.arbitrary()?),
            secondary_exit: SecondaryExitControls::from_bits_retain(u.arbitrary()?),
            entry: EntryControls::from_bits_retain(u.arbitrary()?),
        };
        let f = VmcsFields {
            cr3_target_count: u.arbitrary()?,
            io_bitmap_a: u.arbitrary()?,
            msr_bitmap: u.arbitrary()?,
            eptp: u.arbitrary()?,
            tpr_threshold: u.arbitrary()?,
            vtpr: u.arbitrary()?,
            exit_msr_store_count: u.arbitrary()?,
            exit_msr_store_addr: u.arbitrary()?,
            entry_msr_load_count: u.arbitrary()?,
            entry_msr_load_addr: u.arbitrary()?,
            entry_intr_info: u.arbitrary()?,
            entry_exception_error_code: u.arbitrary()?,
            entry_instruction_len: u.arbitrary()?,
            ..VmcsFields::default()
        };
        let ctx = EntryContext {
            maxphyaddr: u.arbitrary()?,
            in_smm: u.arbitrary()?,
        };
        let v = check_vmx_controls(&c, &f, &caps, &ctx);
        // Each rule is reported at most twice (the two I/O bitmaps / VMCS-shadowing
        // bitmaps are the only double checks).
        for rule in SdmRule::ALL {
            assert!(v.iter().filter(|x| x.rule == *rule).count() <= 2);
        }
        Ok(())
    });
}

#[test]
fn event_vector_rule_for_each_type() {
    // (interruption info, valid?) beyond the NMI case of the per-rule table.
    let cases = [
        (0x8000_031f_u32, true), // hardware exception 31
        (0x8000_0320, false),    // hardware exception 32
        (0x8000_03ff, false),    // hardware exception 255
        (0x8000_0700, true),     // other event, vector 0 (MTF allowed on Arrow Lake)
        (0x8000_0702, false),    // other event, vector 2 (no FRED rules)
        (0x8000_00ff, true),     // external interrupt: any vector
        (0x8000_04ff, true),     // software interrupt: any vector (length 1 below)
        (0x0000_0320, true),     // not valid: nothing checked
    ];
    for (info, valid) in cases {
        let mut s = S::baseline();
        s.f.entry_intr_info = info;
        s.f.entry_instruction_len = 1;
        let expected = if valid {
            vec![]
        } else {
            vec![SdmRule::EventVector]
        };
        assert_eq!(s.rules(), expected, "{info:#x}");
    }
}
