// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The computed configuration of every real-CPU fixture equals the KVM result of
//! reference §5.4, and passes the SDM control checks.
//!
//! §5.4 states its values "before the TPR/VID/SGX/preemption-timer fix-ups" (steps 3,
//! 5 and 8 of `setup_vmcs_config`). Why the final values are the same, fixture by
//! fixture:
//!
//! * TPR fix-up (no TPR_SHADOW clears APIC_REGISTER_VIRT / VIRTUALIZE_X2APIC_MODE /
//!   VIRTUAL_INTR_DELIVERY): every fixture allows primary bit 21 (TPR_SHADOW) — it is in
//!   the allowed-1 half of 0x482 of all seven (…fffe / f7f9fffe) — so it never fires.
//!   The 32-bit-only half (no VIRTUALIZE_APIC_ACCESSES clears TPR_SHADOW) does not apply
//!   to the default x86_64 policy, and all seven allow secondary bit 0 anyway.
//! * VID fix-up (no VIRTUAL_INTR_DELIVERY clears POSTED_INTR): SKX, ICL, TGL, ARL have
//!   both (secondary bit 9 set; pin 0xff); BDW (pin allowed-1 0x7f), CFL (0x7f) and Penryn
//!   (0x3f) do not allow POSTED_INTR at all, so nothing is cleared either way.
//! * SGX fix-up (no SGX clears ENCLS_EXITING) and the preemption-timer errata list need
//!   CPUID facts; with the default policy no CPUID facts are supplied, so neither runs.
//!   With the fixtures' real CPUID facts (second test group) they do not fire either:
//!   ENCLS_EXITING survives adjust only on ICL and CFL, both SGX parts, and no fixture's
//!   CPUID.1:EAX is on the broken-timer list or a Nehalem/Westmere model.
//! * EPT/VPID caps: every fixture with 0x48C also allows ENABLE_EPT and ENABLE_VPID;
//!   Penryn has neither the MSR nor the controls.
//! * Tertiary: TGL and ARL allow ACTIVATE_TERTIARY_CONTROLS (primary bit 17) but the
//!   Bochs dumps stop at 0x490, so 0x492 reads as 0 (like `rdmsr_safe`): tertiary = 0,
//!   primary keeps bit 17 (KVM does not clear it), and a diagnostic says the MSR is absent.
//! * Pairs: every fixture is pair-consistent at the allowed-1 level (§5.1), BASIC checks
//!   pass (sizes 1024–2048, WB, no 32-bit limit).

mod common;

use common::*;
use vmx_controls::report::Format;
use vmx_controls::sdm_checks::EntryContext;
use vmx_controls::*;

struct Expected {
    pin: u32,
    primary: u32,
    secondary: u32,
    exit: u32,
    entry: u32,
    ept_cap: u32,
    vpid_cap: u32,
    tertiary_caps_missing: bool,
}

fn check_fixture(name: &str, e: &Expected) {
    let caps = caps(name);
    let setup = setup_vmcs_config(&caps, &VmcsPolicy::linux()).expect("fixture configures");
    let c = &setup.config;
    assert_eq!(c.pin.raw(), e.pin, "{name}: pin");
    assert_eq!(c.primary.raw(), e.primary, "{name}: primary");
    assert_eq!(c.secondary.raw(), e.secondary, "{name}: secondary");
    assert_eq!(c.tertiary.raw(), 0, "{name}: tertiary");
    assert_eq!(c.exit.raw(), e.exit, "{name}: exit");
    assert_eq!(c.secondary_exit.raw(), 0, "{name}: secondary exit");
    assert_eq!(c.entry.raw(), e.entry, "{name}: entry");
    assert_eq!(c.ept_cap, e.ept_cap, "{name}: EPT caps kept");
    assert_eq!(c.vpid_cap, e.vpid_cap, "{name}: VPID caps kept");
    assert_eq!(c.basic, caps.basic().raw());
    assert_eq!(c.misc, caps.misc().raw());
    let expected_diags = if e.tertiary_caps_missing {
        vec![Diagnostic::TertiaryCapsMissing]
    } else {
        vec![]
    };
    assert_eq!(setup.diagnostics, expected_diags, "{name}: diagnostics");
    // Every result keeps the must-be-1 (default1) bits of the legacy MSRs.
    assert!(c.pin.contains(PinBasedControls::DEFAULT1));
    assert!(c.primary.contains(PrimaryControls::DEFAULT1));
    assert!(c.exit.contains(ExitControls::DEFAULT1));
    assert!(c.entry.contains(EntryControls::DEFAULT1));
    // Nothing the crate cannot name survives KVM's policy.
    assert!(c.secondary.unknown().is_empty());
}

#[test]
fn skylake_x() {
    check_fixture(
        SKX,
        &Expected {
            pin: 0xff,
            primary: 0xfff9fffe,
            secondary: 0x02193fff,
            exit: 0x01ffffff,
            entry: 0x0003f3ff,
            ept_cap: 0x06734141,
            vpid_cap: 0xf01,
            tertiary_caps_missing: false,
        },
    );
}

#[test]
fn icelake_u() {
    check_fixture(
        ICL,
        &Expected {
            pin: 0xff,
            primary: 0xfff9fffe,
            secondary: 0x031bbfff,
            exit: 0x037fffff,
            entry: 0x0006f3ff,
            ept_cap: 0x06734141,
            vpid_cap: 0xf01,
            tertiary_caps_missing: false,
        },
    );
}

#[test]
fn tigerlake() {
    check_fixture(
        TGL,
        &Expected {
            pin: 0xff,
            primary: 0xfffbfffe,
            secondary: 0x031b3fff,
            exit: 0x137fffff,
            entry: 0x0016f3ff,
            ept_cap: 0x06f34141,
            vpid_cap: 0xf01,
            tertiary_caps_missing: true,
        },
    );
}

#[test]
fn arrowlake() {
    check_fixture(
        ARL,
        &Expected {
            pin: 0xff,
            primary: 0xfffbfffe,
            secondary: 0xc71b7fff,
            exit: 0x137fffff,
            entry: 0x0016f3ff,
            ept_cap: 0x06f34141,
            vpid_cap: 0xf01,
            tertiary_caps_missing: true,
        },
    );
}

#[test]
fn broadwell() {
    check_fixture(
        BDW,
        &Expected {
            pin: 0x7f,
            primary: 0xfff9fffe,
            secondary: 0x00017cff,
            exit: 0x007fffff,
            entry: 0x0000f3ff,
            ept_cap: 0x06334141,
            vpid_cap: 0xf01,
            tertiary_caps_missing: false,
        },
    );
}

#[test]
fn coffeelake() {
    check_fixture(
        CFL,
        &Expected {
            pin: 0x7f,
            primary: 0xfff9fffe,
            secondary: 0x001bbcff,
            exit: 0x01ffffff,
            entry: 0x0003f3ff,
            ept_cap: 0x06734141,
            vpid_cap: 0xf01,
            tertiary_caps_missing: false,
        },
    );
}

#[test]
fn penryn() {
    check_fixture(
        PENRYN,
        &Expected {
            pin: 0x3f,
            primary: 0xf7f9fffe,
            secondary: 0x00000041,
            exit: 0x0003ffff,
            entry: 0x000033ff,
            ept_cap: 0,
            vpid_cap: 0,
            tertiary_caps_missing: false,
        },
    );
}

/// CPUID.1:EAX and SGX presence of the fixture CPUs. SKX/ICL/TGL/BDW/CFL signatures are
/// from the reference (§5.1/§5.2); Penryn T9600 (E0, 0x1067A) and Arrow Lake 245K
/// (family 6 model 0xC6, stepping assumed 2) are assumed — any stepping gives the same
/// result, since neither list keys on them.
const REAL_CPUID: [(&str, u32, bool); 7] = [
    (SKX, 0x50654, false),
    (ICL, 0x706E5, true),
    (TGL, 0x806C1, false),
    (ARL, 0xC0662, false),
    (BDW, 0x306D4, false),
    (CFL, 0x906EA, true),
    (PENRYN, 0x1067A, false),
];

#[test]
fn real_cpuid_facts_change_nothing() {
    for (name, sig, sgx) in REAL_CPUID {
        let caps = caps(name);
        let plain = setup_vmcs_config(&caps, &VmcsPolicy::linux()).unwrap();
        let with = setup_vmcs_config(
            &caps,
            &VmcsPolicy::linux().with_cpuid(CpuidInfo::new(sig, sgx)),
        )
        .unwrap();
        assert_eq!(plain, with, "{name}");
        assert!(!policy::has_broken_preemption_timer(sig), "{name}");
        assert_eq!(policy::perf_global_ctrl_erratum(sig), None, "{name}");
    }
}

#[test]
fn without_sgx_encls_exiting_goes_on_icl_and_cfl_only() {
    for (name, sig, _) in REAL_CPUID {
        let caps = caps(name);
        let plain = setup_vmcs_config(&caps, &VmcsPolicy::linux()).unwrap();
        let nosgx = setup_vmcs_config(
            &caps,
            &VmcsPolicy::linux().with_cpuid(CpuidInfo::new(sig, false)),
        )
        .unwrap();
        let had = plain
            .config
            .secondary
            .contains(SecondaryControls::ENCLS_EXITING);
        assert_eq!(had, name == ICL || name == CFL, "{name}");
        assert!(!nosgx
            .config
            .secondary
            .contains(SecondaryControls::ENCLS_EXITING));
        assert_eq!(
            nosgx
                .diagnostics
                .contains(&Diagnostic::EnclsExitingWithoutSgx),
            had,
            "{name}"
        );
    }
    let icl = setup_vmcs_config(
        &caps(ICL),
        &VmcsPolicy::linux().with_cpuid(CpuidInfo {
            signature: None,
            sgx: Some(false),
        }),
    )
    .unwrap();
    assert_eq!(icl.config.secondary.raw(), 0x031b3fff);
}

/// The per-vCPU view KVM derives from `vmcs_config` for a vCPU in xAPIC mode: KVM's
/// `vmx_secondary_exec_control()` clears VIRTUALIZE_X2APIC_MODE (it is switched on
/// only when the guest enables x2APIC, together with clearing VIRTUALIZE_APIC_ACCESSES),
/// because the SDM forbids both at once. Everything else is used as configured.
fn xapic_vcpu_controls(config: &VmcsConfig) -> ControlValues {
    let mut v = ControlValues::from(config);
    v.secondary
        .remove(SecondaryControls::VIRTUALIZE_X2APIC_MODE);
    v
}

/// VMCS fields a VMM would write for those controls: 4-level write-back EPTP, VPID 1,
/// posted-interrupt vector 0xf2, TSC multiplier 1.0; all addresses 0 (aligned).
fn vcpu_fields() -> VmcsFields {
    VmcsFields {
        eptp: 6 | (3 << 3),
        vpid: 1,
        posted_intr_nv: 0xf2,
        tsc_multiplier: 1 << 48,
        ..VmcsFields::default()
    }
}

#[test]
fn fixture_configurations_pass_the_sdm_checks() {
    for name in ALL {
        let caps = caps(name);
        let setup = setup_vmcs_config(&caps, &VmcsPolicy::linux()).unwrap();
        let v = check_vmx_controls(
            &xapic_vcpu_controls(&setup.config),
            &vcpu_fields(),
            &caps,
            &EntryContext::default(),
        );
        assert!(v.is_empty(), "{name}: {v:#?}");
    }
}

#[test]
fn raw_configuration_violates_only_the_x2apic_rule() {
    // Without the per-vCPU choice the hardware-supported set has both APIC modes,
    // which the SDM rejects: exactly one rule fires.
    for name in ALL {
        let caps = caps(name);
        let setup = setup_vmcs_config(&caps, &VmcsPolicy::linux()).unwrap();
        let v = check_vmx_controls(
            &ControlValues::from(&setup.config),
            &vcpu_fields(),
            &caps,
            &EntryContext::default(),
        );
        let rules: Vec<_> = v.iter().map(|x| x.rule).collect();
        if setup
            .config
            .secondary
            .contains(SecondaryControls::VIRTUALIZE_X2APIC_MODE)
        {
            assert_eq!(rules, vec![SdmRule::X2apicModeWithApicAccesses], "{name}");
        } else {
            assert!(rules.is_empty(), "{name}");
        }
    }
}

#[test]
fn json_report_of_each_fixture() {
    for name in ALL {
        let text = std::fs::read_to_string(path(name)).unwrap();
        let outcome = config_from_dump_json(&text, &VmcsPolicy::linux());
        let setup = outcome.as_ref().unwrap();
        let json = setup.to_json_value();
        let obj = json.as_object().unwrap();
        let keys: Vec<_> = obj.keys().map(String::as_str).collect();
        let mut expected = vec![
            "pin_based",
            "primary",
            "secondary",
            "tertiary",
            "exit",
            "secondary_exit",
            "entry",
            "diagnostics",
        ];
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        expected.sort_unstable();
        assert_eq!(sorted, expected, "{name}");
        assert_eq!(
            obj["primary"],
            format!("{:#010x}", setup.config.primary.raw()),
            "{name}"
        );
        assert_eq!(
            obj["tertiary"], "0x0000000000000000",
            "{name}: 64-bit words have 16 digits"
        );
        let rendered = report::render_outcome(&outcome, Format::Json);
        assert_eq!(rendered.exit_status, 0);
        let back: VmcsConfigReport = serde_json::from_str(&rendered.output).unwrap();
        assert_eq!(back, setup.report());
    }
}

#[test]
fn skylake_json_report_exact() {
    let setup = config_from_dump_file(&path(SKX), &VmcsPolicy::linux()).unwrap();
    let expected = serde_json::json!({
        "pin_based": "0x000000ff",
        "primary": "0xfff9fffe",
        "secondary": "0x02193fff",
        "tertiary": "0x0000000000000000",
        "exit": "0x01ffffff",
        "secondary_exit": "0x0000000000000000",
        "entry": "0x0003f3ff",
        "diagnostics": []
    });
    assert_eq!(setup.to_json_value(), expected);
    // Pretty text keeps the documented key order.
    let text = setup.report().to_json_string();
    let order: Vec<usize> = [
        "pin_based",
        "primary",
        "\"secondary\"",
        "tertiary",
        "\"exit\"",
        "secondary_exit",
        "entry",
        "diagnostics",
    ]
    .iter()
    .map(|k| text.find(k).unwrap())
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
}

#[test]
fn tigerlake_text_and_json_carry_the_diagnostic() {
    let setup = config_from_dump_file(&path(TGL), &VmcsPolicy::linux()).unwrap();
    let json = setup.to_json_value();
    assert_eq!(
        json["diagnostics"],
        serde_json::json!([{
            "kind": "tertiary_caps_missing",
            "severity": "warning",
            "message": "ACTIVATE_TERTIARY_CONTROLS is allowed but IA32_VMX_PROCBASED_CTLS3 (0x492) is absent: tertiary controls are 0"
        }])
    );
    let text = setup.render_text();
    assert!(text.contains("VM-Entry controls"), "{text}");
    assert!(text.contains("0x0016f3ff"), "{text}");
    assert!(text.contains("LOAD_CET_STATE"), "{text}");
    assert!(
        text.contains("warning: ACTIVATE_TERTIARY_CONTROLS"),
        "{text}"
    );
}
