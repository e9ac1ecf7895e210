//! `sdm_controls`: vmx-controls' SDM control validator and the pair sanitizer.

use super::common::{assert_error_message, raw_msrs_from, BUILTIN_CAPS};
use super::input::Input;
use vmx_caps::{AllowedSettings, VmxCaps};
use vmx_controls::pairs::find_inconsistent_pairs;
use vmx_controls::sdm_checks::{check_vmx_controls, EntryContext};
use vmx_controls::{
    sanitize_pairs, ControlBits, ControlValues, EntryControls, ExitControls, OnInconsistent,
    PinBasedControls, PrimaryControls, SdmRule, SecondaryControls, SecondaryExitControls,
    TertiaryControls, VmcsFields, VmcsPolicy, ALL_ENTRY_EXIT_PAIRS,
};

/// `sdm_controls`: the validator of the VM-entry checks on VMX controls, the entry/exit
/// pair check and sanitizer, and the control-bit views.
///
/// Input: a selector byte (below 0xc0: one of three real CPUs; else raw MSRs as in
/// `vmx_caps_raw`), the seven control words (pin u32, primary u32, secondary u32,
/// tertiary u64, exit u32, secondary exit u64, entry u32) XORed into the configuration
/// KVM computes for that CPU, the VMCS fields XORed into a VMM's usual values, the
/// physical-address width and an SMM flag.
///
/// The validator is deterministic, names the SDM section of every rule, and reports
/// exactly the capability and control-dependency rules the SDM states (checked
/// independently here); a configuration computed for a real CPU fails at most the
/// x2APIC-mode rule (whose choice is per vCPU); sanitizing leaves no inconsistent
/// pair and only clears both sides of the pairs it reports.
pub fn sdm_controls(data: &[u8]) {
    let mut input = Input::new(data);
    let selector = input.u8();
    let caps = if selector < 0xc0 {
        let table = BUILTIN_CAPS[usize::from(selector) % BUILTIN_CAPS.len()];
        VmxCaps::from_raw(table.iter().copied().collect()).expect("built-in capabilities")
    } else {
        match VmxCaps::from_raw(raw_msrs_from(&mut input).0) {
            Ok(caps) => caps,
            Err(_) => return,
        }
    };
    let base = vmx_controls::setup_vmcs_config(&caps, &VmcsPolicy::linux())
        .map(|s| ControlValues::from(&s.config))
        .unwrap_or_default();
    let masks = [
        u64::from(input.u32()),
        u64::from(input.u32()),
        u64::from(input.u32()),
        input.u64(),
        u64::from(input.u32()),
        input.u64(),
        u64::from(input.u32()),
    ];
    let controls = ControlValues {
        pin: PinBasedControls::from_raw_u64(base.pin.raw_u64() ^ masks[0]),
        primary: PrimaryControls::from_raw_u64(base.primary.raw_u64() ^ masks[1]),
        secondary: SecondaryControls::from_raw_u64(base.secondary.raw_u64() ^ masks[2]),
        tertiary: TertiaryControls::from_raw_u64(base.tertiary.raw_u64() ^ masks[3]),
        exit: ExitControls::from_raw_u64(base.exit.raw_u64() ^ masks[4]),
        secondary_exit: SecondaryExitControls::from_raw_u64(
            base.secondary_exit.raw_u64() ^ masks[5],
        ),
        entry: EntryControls::from_raw_u64(base.entry.raw_u64() ^ masks[6]),
    };
    let fields = VmcsFields {
        cr3_target_count: input.u32(),
        io_bitmap_a: input.u64(),
        io_bitmap_b: input.u64(),
        msr_bitmap: input.u64(),
        virtual_apic_page: input.u64(),
        tpr_threshold: input.u32(),
        vtpr: input.u8(),
        apic_access_addr: input.u64(),
        posted_intr_nv: 0xf2 ^ input.u16(),
        posted_intr_desc_addr: input.u64(),
        vpid: 1 ^ input.u16(),
        eptp: (6 | (3 << 3)) ^ input.u64(),
        pml_address: input.u64(),
        spp_table_pointer: input.u64(),
        vm_function_controls: input.u64(),
        eptp_list_address: input.u64(),
        vmread_bitmap: input.u64(),
        vmwrite_bitmap: input.u64(),
        ve_info_address: input.u64(),
        tsc_multiplier: (1 << 48) ^ input.u64(),
        exit_msr_store_count: input.u32(),
        exit_msr_store_addr: input.u64(),
        exit_msr_load_count: input.u32(),
        exit_msr_load_addr: input.u64(),
        entry_msr_load_count: input.u32(),
        entry_msr_load_addr: input.u64(),
        entry_intr_info: input.u32(),
        entry_exception_error_code: input.u32(),
        entry_instruction_len: input.u32(),
        guest_cr0: input.u64(),
    };
    let context = EntryContext {
        maxphyaddr: 46 ^ input.u8(),
        in_smm: input.bool(),
    };

    check_rules(&controls, &fields, &caps, &context);

    // KVM's configuration for a real CPU, with a VMM's usual fields, passes (the x2APIC
    // rule aside: virtualize x2APIC mode and APIC accesses are a per-vCPU choice).
    if selector < 0xc0 && masks.iter().all(|m| *m == 0) {
        let nominal = VmcsFields {
            eptp: 6 | (3 << 3),
            vpid: 1,
            posted_intr_nv: 0xf2,
            tsc_multiplier: 1 << 48,
            ..VmcsFields::default()
        };
        let left: Vec<_> = check_vmx_controls(&base, &nominal, &caps, &EntryContext::default())
            .into_iter()
            .filter(|v| v.rule != SdmRule::X2apicModeWithApicAccesses)
            .collect();
        assert!(left.is_empty(), "KVM's configuration fails: {left:#?}");
    }

    check_pairs(&controls);
    check_views(&controls);
}

/// The validator is deterministic, names the SDM section of every rule, and reports
/// exactly the capability and control-dependency rules the SDM states (26.2.1.1 -
/// 26.2.1.3), restated here.
fn check_rules(
    controls: &ControlValues,
    fields: &VmcsFields,
    caps: &VmxCaps,
    context: &EntryContext,
) {
    let violations = check_vmx_controls(controls, fields, caps, context);
    assert_eq!(
        violations,
        check_vmx_controls(controls, fields, caps, context),
        "the validator is not deterministic"
    );
    for v in &violations {
        let text = v.to_string();
        let prefix = format!("SDM {}: ", v.rule.sdm_section());
        assert!(
            text.starts_with(&prefix),
            "{text:?} does not name {prefix:?}"
        );
        assert!(v.rule.sdm_section().starts_with("26.2.1."), "{:?}", v.rule);
        assert!(!v.rule.description().is_empty());
    }
    let fired = |rule: SdmRule| violations.iter().any(|v| v.rule == rule);

    // Rules stated independently from the SDM (26.2.1.1 - 26.2.1.3).
    let pin = controls.pin.raw_u64() as u32;
    let primary = controls.primary.raw_u64() as u32;
    let secondary_on = primary & (1 << 31) != 0;
    let secondary = if secondary_on {
        controls.secondary.raw_u64() as u32
    } else {
        0
    };
    let exit = controls.exit.raw_u64() as u32;
    let entry = controls.entry.raw_u64() as u32;
    let expect = |rule: SdmRule, should: bool| {
        assert_eq!(fired(rule), should, "{rule:?}: {violations:#?}");
    };
    expect(SdmRule::PinBasedAllowed, !caps.pin_based().permits(pin));
    expect(SdmRule::PrimaryAllowed, !caps.primary().permits(primary));
    expect(SdmRule::ExitAllowed, !caps.exit().permits(exit));
    expect(SdmRule::EntryAllowed, !caps.entry().permits(entry));
    let secondary_allowed = caps
        .secondary()
        .unwrap_or(AllowedSettings::from_raw(0))
        .permits(secondary);
    expect(
        SdmRule::SecondaryAllowed,
        secondary_on && !secondary_allowed,
    );
    // NMI exiting (pin 3), virtual NMIs (pin 5), NMI-window exiting (primary 22).
    expect(
        SdmRule::VirtualNmisWithoutNmiExiting,
        pin & (1 << 5) != 0 && pin & (1 << 3) == 0,
    );
    expect(
        SdmRule::NmiWindowWithoutVirtualNmis,
        primary & (1 << 22) != 0 && pin & (1 << 5) == 0,
    );
    // Enable VPID (secondary 5) needs a non-zero VPID.
    expect(
        SdmRule::VpidZero,
        secondary & (1 << 5) != 0 && fields.vpid == 0,
    );
    // Entry to SMM (entry 10), deactivate dual-monitor treatment (entry 11).
    let smm_bits = entry & (3 << 10);
    expect(
        SdmRule::SmmControlsOutsideSmm,
        !context.in_smm && smm_bits != 0,
    );
    expect(SdmRule::EntryToSmmAndDeactDualMonitor, smm_bits == 3 << 10);
}

/// The pair check and the sanitizer: strict mode refuses exactly the pairs found,
/// sanitize mode clears both sides of exactly those pairs and leaves none.
fn check_pairs(controls: &ControlValues) {
    // The pair check and sanitizer.
    let table = &ALL_ENTRY_EXIT_PAIRS[..];
    let (entry_c, exit_c, exit2_c) = (controls.entry, controls.exit, controls.secondary_exit);
    let found = find_inconsistent_pairs(table, entry_c, exit_c, exit2_c);
    for pair in &found {
        assert_error_message(pair);
        assert_ne!(
            pair.entry & pair.entry_mask != 0,
            pair.exit & pair.exit_mask != 0,
            "{pair:?} reported but both sides agree"
        );
    }
    match sanitize_pairs(table, entry_c, exit_c, exit2_c, OnInconsistent::Error) {
        Ok(same) => {
            assert!(found.is_empty(), "strict mode accepted inconsistent pairs");
            assert_eq!(
                (same.entry, same.exit, same.secondary_exit),
                (entry_c, exit_c, exit2_c)
            );
        }
        Err(error) => {
            assert_error_message(&error);
            assert_eq!(error.pairs, found, "strict mode reports other pairs");
        }
    }
    let clean = sanitize_pairs(table, entry_c, exit_c, exit2_c, OnInconsistent::Sanitize)
        .expect("sanitize mode never fails");
    assert_eq!(
        clean.inconsistent, found,
        "sanitize mode reports other pairs"
    );
    let left = find_inconsistent_pairs(table, clean.entry, clean.exit, clean.secondary_exit);
    assert!(
        left.is_empty(),
        "a sanitized configuration fails the pair check: {left:?}"
    );
    let entry_masks: u32 = found.iter().map(|p| p.entry_mask).fold(0, |a, m| a | m);
    let exit_masks: u64 = found
        .iter()
        .filter(|p| !p.secondary_exit)
        .map(|p| p.exit_mask)
        .fold(0, |a, m| a | m);
    let exit2_masks: u64 = found
        .iter()
        .filter(|p| p.secondary_exit)
        .map(|p| p.exit_mask)
        .fold(0, |a, m| a | m);
    assert_eq!(
        clean.entry.raw(),
        entry_c.raw() & !entry_masks,
        "entry sanitizing"
    );
    assert_eq!(
        u64::from(clean.exit.raw()),
        u64::from(exit_c.raw()) & !exit_masks,
        "exit sanitizing"
    );
    assert_eq!(
        clean.secondary_exit.raw(),
        exit2_c.raw() & !exit2_masks,
        "exit2 sanitizing"
    );
}

/// The control-bit views keep every bit.
fn check_views(controls: &ControlValues) {
    // The control-bit views keep every bit.
    let words: [(vmx_controls::ControlField, u64); 7] = [
        (PinBasedControls::FIELD, controls.pin.raw_u64()),
        (PrimaryControls::FIELD, controls.primary.raw_u64()),
        (SecondaryControls::FIELD, controls.secondary.raw_u64()),
        (TertiaryControls::FIELD, controls.tertiary.raw_u64()),
        (ExitControls::FIELD, controls.exit.raw_u64()),
        (
            SecondaryExitControls::FIELD,
            controls.secondary_exit.raw_u64(),
        ),
        (EntryControls::FIELD, controls.entry.raw_u64()),
    ];
    for (field, raw) in words {
        let described = field.describe_bits(raw);
        assert!(
            !described.is_empty(),
            "{field:?} {raw:#x} described as nothing"
        );
        let _ = field.hex(raw);
    }
    for bit in controls.primary.unknown_bit_numbers() {
        assert_ne!(
            controls.primary.raw() & (1 << bit),
            0,
            "unknown bit {bit} not set"
        );
    }
    assert_eq!(
        PrimaryControls::from_raw_u64(controls.primary.raw_u64()),
        controls.primary,
        "raw round trip"
    );
}
