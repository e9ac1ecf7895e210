// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Synthetic capability sets (real fixtures with a few MSR bits changed) driving every
//! error and every diagnostic of `setup_vmcs_config`.

mod common;

use common::*;
use vmx_controls::report::{render_outcome, Format};
use vmx_controls::*;

fn strict() -> VmcsPolicy {
    VmcsPolicy::linux()
}

fn sanitize() -> VmcsPolicy {
    VmcsPolicy::linux().with_on_inconsistent(OnInconsistent::Sanitize)
}

// ---- required controls missing ----

#[test]
fn required_pin_control_missing() {
    let caps = without_allowed1(SKX, 0x481, PinBasedControls::NMI_EXITING.bits());
    let err = setup_vmcs_config(&caps, &strict()).unwrap_err();
    assert_eq!(
        err,
        SetupError::RequiredControlsMissing {
            field: ControlField::PinBased,
            msr: 0x481,
            required: 0x9,
            missing: 0x8,
            allowed1: 0xf7,
        }
    );
    let msg = err.to_string();
    assert!(msg.contains("NMI_EXITING"), "{msg}");
    assert!(msg.contains("pin-based controls"), "{msg}");
    assert_eq!(err.kind(), "required_controls_missing");
}

#[test]
fn required_primary_control_missing() {
    let caps = without_allowed1(SKX, 0x482, PrimaryControls::HLT_EXITING.bits());
    match setup_vmcs_config(&caps, &strict()).unwrap_err() {
        SetupError::RequiredControlsMissing { field, missing, .. } => {
            assert_eq!(field, ControlField::Primary);
            assert_eq!(missing, u64::from(PrimaryControls::HLT_EXITING.bits()));
        }
        e => panic!("unexpected {e:?}"),
    }
}

#[test]
fn required_exit_control_missing() {
    let caps = without_allowed1(SKX, 0x483, ExitControls::ACK_INTR_ON_EXIT.bits());
    match setup_vmcs_config(&caps, &strict()).unwrap_err() {
        SetupError::RequiredControlsMissing {
            field,
            missing,
            msr,
            ..
        } => {
            assert_eq!(field, ControlField::Exit);
            assert_eq!(msr, 0x483);
            assert_eq!(missing, u64::from(ExitControls::ACK_INTR_ON_EXIT.bits()));
        }
        e => panic!("unexpected {e:?}"),
    }
}

#[test]
fn required_entry_control_missing_only_on_x86_64() {
    let caps = without_allowed1(SKX, 0x484, EntryControls::IA32E_MODE.bits());
    match setup_vmcs_config(&caps, &strict()).unwrap_err() {
        SetupError::RequiredControlsMissing { field, missing, .. } => {
            assert_eq!(field, ControlField::Entry);
            assert_eq!(missing, u64::from(EntryControls::IA32E_MODE.bits()));
        }
        e => panic!("unexpected {e:?}"),
    }
    // A 32-bit kernel does not need IA-32e mode guests.
    let ok = setup_vmcs_config(&caps, &VmcsPolicy::linux_i386()).unwrap();
    assert!(!ok.config.entry.contains(EntryControls::IA32E_MODE));
}

#[test]
fn caller_required_secondary_control_missing() {
    let mut policy = strict();
    policy.secondary.required = SecondaryControls::ENABLE_EPT;
    // Penryn allows secondary controls but not EPT.
    match setup_vmcs_config(&caps(PENRYN), &policy).unwrap_err() {
        SetupError::RequiredControlsMissing {
            field,
            missing,
            allowed1,
            ..
        } => {
            assert_eq!(field, ControlField::Secondary);
            assert_eq!(missing, 0x2);
            assert_eq!(allowed1, 0x41);
        }
        e => panic!("unexpected {e:?}"),
    }
    // And the same request is met on Skylake-X.
    let ok = setup_vmcs_config(&caps(SKX), &policy).unwrap();
    assert!(ok.config.secondary.contains(SecondaryControls::ENABLE_EPT));
}

#[test]
fn caller_required_secondary_without_activate_secondary() {
    let mut policy = strict();
    policy.primary.optional -= PrimaryControls::ACTIVATE_SECONDARY_CONTROLS;
    policy.secondary.required = SecondaryControls::WBINVD_EXITING;
    // Penryn has no EPT caps, so only the unavailable field can fail.
    let err = setup_vmcs_config(&caps(PENRYN), &policy).unwrap_err();
    assert!(matches!(
        err,
        SetupError::RequiredControlsMissing {
            field: ControlField::Secondary,
            allowed1: 0,
            missing: 0x40,
            ..
        }
    ));
}

#[test]
fn caller_required_tertiary_and_secondary_exit() {
    let mut policy = strict();
    policy.tertiary.required = TertiaryControls::IPI_VIRT;
    // SKX cannot activate tertiary controls at all.
    assert!(matches!(
        setup_vmcs_config(&caps(SKX), &policy),
        Err(SetupError::RequiredControlsMissing {
            field: ControlField::Tertiary,
            ..
        })
    ));
    // ARL can, and with 0x492 allowing IPI virtualization the requirement is met.
    let arl = caps_with(ARL, &[(0x492, Some(0x10))]);
    let ok = setup_vmcs_config(&arl, &policy).unwrap();
    assert_eq!(ok.config.tertiary, TertiaryControls::IPI_VIRT);
    // ARL without 0x492: required tertiary fails, after the missing-MSR diagnostic.
    assert!(matches!(
        setup_vmcs_config(&caps(ARL), &policy),
        Err(SetupError::RequiredControlsMissing {
            field: ControlField::Tertiary,
            allowed1: 0,
            ..
        })
    ));

    let mut policy = strict().with_fred();
    policy.secondary_exit.required = SecondaryExitControls::LOAD_IA32_FRED;
    assert!(matches!(
        setup_vmcs_config(&caps(SKX), &policy),
        Err(SetupError::RequiredControlsMissing {
            field: ControlField::SecondaryExit,
            ..
        })
    ));
}

// ---- EPT / VPID caps without their controls ----

#[test]
fn ept_caps_without_enable_ept() {
    let caps = caps_with(PENRYN, &[(0x48C, Some(0x0000_0F01_0673_4141))]);
    assert_eq!(
        setup_vmcs_config(&caps, &strict()).unwrap_err(),
        SetupError::EptCapWithoutEnableEpt {
            ept_cap: 0x0673_4141
        }
    );
    let ok = setup_vmcs_config(&caps, &sanitize()).unwrap();
    assert_eq!(ok.config.ept_cap, 0);
    assert_eq!(ok.config.vpid_cap, 0);
    assert_eq!(
        ok.diagnostics,
        vec![
            Diagnostic::EptCapWithoutEnableEpt {
                ept_cap: 0x0673_4141
            },
            Diagnostic::VpidCapWithoutEnableVpid { vpid_cap: 0xf01 },
        ]
    );
    assert!(ok.diagnostics[0].to_string().starts_with(
        "EPT CAP should not exist if not support 1-setting enable EPT VM-execution control"
    ));
    assert_eq!(ok.diagnostics[0].severity(), Severity::Warning);
}

#[test]
fn vpid_caps_without_enable_vpid() {
    // Skylake-X with ENABLE_VPID removed from 0x48B: EPT is fine, VPID caps are stray.
    let v = raw(SKX).get(0x48B).unwrap();
    let caps = caps_with(SKX, &[(0x48B, Some(v & !(1u64 << (32 + 5))))]);
    assert_eq!(
        setup_vmcs_config(&caps, &strict()).unwrap_err(),
        SetupError::VpidCapWithoutEnableVpid { vpid_cap: 0xf01 }
    );
    let ok = setup_vmcs_config(&caps, &sanitize()).unwrap();
    assert_eq!(ok.config.ept_cap, 0x0673_4141, "EPT caps untouched");
    assert_eq!(ok.config.vpid_cap, 0);
    assert_eq!(
        ok.diagnostics,
        vec![Diagnostic::VpidCapWithoutEnableVpid { vpid_cap: 0xf01 }]
    );
    assert!(ok.diagnostics[0]
        .to_string()
        .starts_with("VPID CAP should not exist if not support 1-setting enable VPID"));
}

#[test]
fn ept_caps_checked_before_vpid_caps_in_strict_mode() {
    // No secondary controls at all: both caps stray, the EPT one is reported (KVM order).
    let caps = caps_with(SKX, &[(0x48B, None)]);
    assert!(matches!(
        setup_vmcs_config(&caps, &strict()),
        Err(SetupError::EptCapWithoutEnableEpt { .. })
    ));
}

// ---- BASIC checks ----

fn basic_of(name: &str) -> u64 {
    raw(name).get(0x480).unwrap()
}

#[test]
fn vmcs_size_above_4k() {
    let basic = (basic_of(SKX) & !(0x1fff << 32)) | (4097 << 32);
    let caps = caps_with(SKX, &[(0x480, Some(basic))]);
    assert_eq!(
        setup_vmcs_config(&caps, &strict()).unwrap_err(),
        SetupError::VmcsSizeTooLarge { size: 4097 }
    );
    // Exactly 4096 (bit 44 set, bits 43:32 clear) is fine.
    let basic = (basic_of(SKX) & !(0x1fff << 32)) | (4096 << 32);
    assert!(setup_vmcs_config(&caps_with(SKX, &[(0x480, Some(basic))]), &strict()).is_ok());
}

#[test]
fn physical_address_limit_32bit() {
    let caps = caps_with(SKX, &[(0x480, Some(basic_of(SKX) | (1 << 48)))]);
    assert_eq!(
        setup_vmcs_config(&caps, &strict()).unwrap_err(),
        SetupError::PhysAddr32Bit
    );
    // Only x86_64 kernels care.
    assert!(setup_vmcs_config(&caps, &VmcsPolicy::linux_i386()).is_ok());
}

#[test]
fn memory_type_not_write_back() {
    let caps = caps_with(SKX, &[(0x480, Some(basic_of(SKX) & !(0xf << 50)))]);
    assert_eq!(
        setup_vmcs_config(&caps, &strict()).unwrap_err(),
        SetupError::VmcsMemoryTypeNotWb { memory_type: 0 }
    );
}

#[test]
fn basic_checks_come_after_control_checks() {
    // Both a missing required control and a bad memory type: KVM stops at the first.
    let v = raw(SKX).get(0x481).unwrap() & !(0x8u64 << 32);
    let caps = caps_with(
        SKX,
        &[
            (0x481, Some(v)),
            (0x480, Some(basic_of(SKX) & !(0xf << 50))),
        ],
    );
    assert!(matches!(
        setup_vmcs_config(&caps, &strict()),
        Err(SetupError::RequiredControlsMissing { .. })
    ));
}

// ---- diagnostics ----

#[test]
fn no_tpr_shadow_clears_apic_virtualization_and_posted_interrupts() {
    let caps = without_allowed1(SKX, 0x482, PrimaryControls::TPR_SHADOW.bits());
    let ok = setup_vmcs_config(&caps, &strict()).unwrap();
    let cleared = SecondaryControls::APIC_REGISTER_VIRT
        | SecondaryControls::VIRTUALIZE_X2APIC_MODE
        | SecondaryControls::VIRTUAL_INTR_DELIVERY;
    assert_eq!(
        ok.diagnostics,
        vec![
            Diagnostic::ApicVirtWithoutTprShadow { cleared },
            Diagnostic::PostedIntrWithoutVid
        ]
    );
    assert_eq!(ok.config.secondary.raw(), 0x02193fff & !cleared.bits());
    assert_eq!(ok.config.pin.raw(), 0x7f);
    assert!(ok.diagnostics[0]
        .to_string()
        .contains("VIRTUAL_INTR_DELIVERY"));
}

#[test]
fn i386_without_apic_access_virtualization_clears_tpr_shadow() {
    let caps = without_allowed1(
        SKX,
        0x48B,
        SecondaryControls::VIRTUALIZE_APIC_ACCESSES.bits(),
    );
    let ok = setup_vmcs_config(&caps, &VmcsPolicy::linux_i386()).unwrap();
    assert_eq!(ok.diagnostics[0], Diagnostic::TprShadowWithoutApicAccesses);
    assert!(!ok.config.primary.contains(PrimaryControls::TPR_SHADOW));
    assert!(matches!(
        ok.diagnostics[1],
        Diagnostic::ApicVirtWithoutTprShadow { .. }
    ));
    // x86_64 keeps the TPR shadow.
    let ok64 = setup_vmcs_config(&caps, &strict()).unwrap();
    assert!(ok64.config.primary.contains(PrimaryControls::TPR_SHADOW));
    assert!(ok64.diagnostics.is_empty());
}

#[test]
fn posted_interrupts_need_virtual_interrupt_delivery() {
    let caps = without_allowed1(SKX, 0x48B, SecondaryControls::VIRTUAL_INTR_DELIVERY.bits());
    let ok = setup_vmcs_config(&caps, &strict()).unwrap();
    assert_eq!(ok.diagnostics, vec![Diagnostic::PostedIntrWithoutVid]);
    assert_eq!(ok.config.pin.raw(), 0x7f);
    assert_eq!(ok.diagnostics[0].severity(), Severity::Info);
}

#[test]
fn broken_preemption_timer_list() {
    // Xeon E3-1220 V2 (0x306A8), reserved bits 15:14 and 31:28 ignored.
    for sig in [0x000306A8, 0x000306A8 | (0x3 << 14) | (0xf << 28)] {
        let policy = strict().with_cpuid(CpuidInfo {
            signature: Some(sig),
            sgx: None,
        });
        let ok = setup_vmcs_config(&caps(SKX), &policy).unwrap();
        assert_eq!(
            ok.diagnostics,
            vec![Diagnostic::BrokenPreemptionTimer { signature: sig }]
        );
        assert_eq!(ok.config.pin.raw(), 0xff & !0x40);
    }
    // Every list entry matches; a neighbouring stepping does not.
    for sig in policy::BROKEN_PREEMPTION_TIMER_SIGNATURES {
        assert!(policy::has_broken_preemption_timer(sig));
    }
    assert!(!policy::has_broken_preemption_timer(0x000306A9));
}

#[test]
fn nehalem_westmere_perf_global_ctrl_erratum() {
    // Westmere-EP: family 6, model 0x2C (44).
    let policy = strict().with_cpuid(CpuidInfo {
        signature: Some(0x000206C2),
        sgx: Some(false),
    });
    let ok = setup_vmcs_config(&caps(SKX), &policy).unwrap();
    assert_eq!(
        ok.diagnostics,
        vec![Diagnostic::PerfGlobalCtrlErratum {
            erratum: "BC86,AAY89,BD102"
        }]
    );
    assert!(!ok
        .config
        .entry
        .contains(EntryControls::LOAD_IA32_PERF_GLOBAL_CTRL));
    assert!(!ok
        .config
        .exit
        .contains(ExitControls::LOAD_IA32_PERF_GLOBAL_CTRL));
    assert_eq!(ok.config.exit.raw(), 0x01ffffff & !(1 << 12));
    assert_eq!(ok.config.entry.raw(), 0x0003f3ff & !(1 << 13));
    assert!(ok.diagnostics[0].to_string().starts_with(
        "VM_EXIT_LOAD_IA32_PERF_GLOBAL_CTRL does not work properly. Using workaround"
    ));

    // Nehalem-EP Xeon 5500 D0 (0x106A5) is also on the timer list: both fix-ups.
    let policy = strict().with_cpuid(CpuidInfo {
        signature: Some(0x000106A5),
        sgx: None,
    });
    let ok = setup_vmcs_config(&caps(SKX), &policy).unwrap();
    assert_eq!(
        ok.diagnostics,
        vec![
            Diagnostic::BrokenPreemptionTimer {
                signature: 0x000106A5
            },
            Diagnostic::PerfGlobalCtrlErratum { erratum: "AAK155" }
        ]
    );
    for (model, name) in policy::PERF_GLOBAL_CTRL_ERRATA {
        let sig = 0x600 | ((model & 0xf) << 4) | ((model >> 4) << 16);
        assert_eq!(policy::perf_global_ctrl_erratum(sig), Some(name));
    }
    // Family 15 with the same model bits is not affected.
    assert_eq!(policy::perf_global_ctrl_erratum(0x00010FA5), None);
}

#[test]
fn erratum_runs_after_the_pair_check() {
    // Exit side of PERF_GLOBAL_CTRL missing: the pair check sees the inconsistency
    // before the erratum would clear the entry side (KVM order since the Nov-2024 fix).
    let caps = without_allowed1(SKX, 0x483, ExitControls::LOAD_IA32_PERF_GLOBAL_CTRL.bits());
    let policy = strict().with_cpuid(CpuidInfo {
        signature: Some(0x000206C2),
        sgx: None,
    });
    assert!(matches!(
        setup_vmcs_config(&caps, &policy),
        Err(SetupError::InconsistentPairs(_))
    ));
}

#[test]
fn secondary_caps_missing() {
    // ACTIVATE_SECONDARY allowed, 0x48B (and 0x48C, else the EPT check fires) absent.
    let caps = caps_with(SKX, &[(0x48B, None), (0x48C, None)]);
    let ok = setup_vmcs_config(&caps, &strict()).unwrap();
    assert_eq!(ok.config.secondary.raw(), 0);
    assert_eq!(
        ok.diagnostics,
        vec![
            Diagnostic::SecondaryCapsMissing,
            Diagnostic::PostedIntrWithoutVid
        ]
    );
}

#[test]
fn tertiary_from_0x492() {
    let ok = setup_vmcs_config(&caps_with(ARL, &[(0x492, Some(0xff))]), &strict()).unwrap();
    assert_eq!(
        ok.config.tertiary,
        TertiaryControls::IPI_VIRT,
        "only IPI_VIRT is asked for"
    );
    assert!(ok.diagnostics.is_empty());
    let ok = setup_vmcs_config(&caps_with(ARL, &[(0x492, Some(0x1))]), &strict()).unwrap();
    assert_eq!(ok.config.tertiary.raw(), 0);
}

#[test]
fn fred_is_opt_in() {
    // ARL allows exit ACTIVATE_SECONDARY_CONTROLS (bit 31); default Linux does not ask.
    let plain = setup_vmcs_config(&caps(ARL), &strict()).unwrap();
    assert!(!plain
        .config
        .exit
        .contains(ExitControls::ACTIVATE_SECONDARY_CONTROLS));

    // With FRED but no 0x493 in the dump: activated, zero, diagnostic.
    let fred = setup_vmcs_config(&caps(ARL), &strict().with_fred()).unwrap();
    assert_eq!(fred.config.exit.raw(), 0x937fffff);
    assert_eq!(fred.config.secondary_exit.raw(), 0);
    assert_eq!(
        fred.diagnostics,
        vec![
            Diagnostic::TertiaryCapsMissing,
            Diagnostic::SecondaryExitCapsMissing
        ]
    );

    // A FRED part: entry bit 23 and 0x493 allow FRED.
    let v = raw(ARL).get(0x484).unwrap() | (1 << (32 + 23));
    let caps = caps_with(
        ARL,
        &[(0x484, Some(v)), (0x493, Some(0x3)), (0x492, Some(0x10))],
    );
    let ok = setup_vmcs_config(&caps, &strict().with_fred()).unwrap();
    assert_eq!(ok.config.secondary_exit.raw(), 0x3);
    assert!(ok.config.entry.contains(EntryControls::LOAD_IA32_FRED));
    assert!(ok.diagnostics.is_empty());
    // Default Linux leaves FRED alone on the same part.
    let ok = setup_vmcs_config(&caps, &strict()).unwrap();
    assert!(!ok.config.entry.contains(EntryControls::LOAD_IA32_FRED));
    assert_eq!(ok.config.secondary_exit.raw(), 0);
}

#[test]
fn prove_ve_is_opt_in() {
    let caps = with_allowed1(SKX, 0x48B, SecondaryControls::EPT_VIOLATION_VE.bits());
    let plain = setup_vmcs_config(&caps, &strict()).unwrap();
    assert!(!plain
        .config
        .secondary
        .contains(SecondaryControls::EPT_VIOLATION_VE));
    let ve = setup_vmcs_config(&caps, &strict().with_prove_ve()).unwrap();
    assert!(ve
        .config
        .secondary
        .contains(SecondaryControls::EPT_VIOLATION_VE));
}

#[test]
fn custom_policy_sets() {
    // A minimal VMM that wants only HLT exiting and external-interrupt exiting.
    let policy = VmcsPolicy {
        pin: ControlSet {
            required: PinBasedControls::EXT_INTR_MASK,
            optional: PinBasedControls::empty(),
        },
        primary: ControlSet {
            required: PrimaryControls::HLT_EXITING,
            optional: PrimaryControls::empty(),
        },
        secondary: ControlSet::default(),
        tertiary: ControlSet::default(),
        exit: ControlSet {
            required: ExitControls::HOST_ADDR_SPACE_SIZE,
            optional: ExitControls::empty(),
        },
        secondary_exit: ControlSet::default(),
        entry: ControlSet::default(),
        ..VmcsPolicy::linux().with_on_inconsistent(OnInconsistent::Sanitize)
    };
    // EPT caps exist but EPT is not asked for: sanitize mode drops them.
    let ok = setup_vmcs_config(&caps(SKX), &policy).unwrap();
    assert_eq!(ok.config.pin.raw(), 0x17);
    assert_eq!(ok.config.primary.raw(), 0x0401e172 | 0x80);
    assert_eq!(ok.config.secondary.raw(), 0);
    assert_eq!(ok.config.exit.raw(), 0x36dff | 0x200);
    assert_eq!(ok.config.entry.raw(), 0x11ff);
    assert_eq!(ok.config.ept_cap, 0);
}

// ---- sanitize mode must not clear forced controls ----

// The fuzz reproducer `fuzz/seeds/vmx_caps_raw/sanitize-clears-forced-pair-bit.bin`,
// rebuilt on the Skylake-X fixture: every entry control forced to 1, the exit side of
// the PAT/EFER/BNDCFGS/RTIT_CTL/CET pairs not allowed, BASIC bit 55 clear.
fn forced_entry_caps() -> vmx_caps::VmxCaps {
    caps_with(
        SKX,
        &[
            (0x480, Some(basic_of(SKX) & !(1 << 55))),
            (0x484, Some(0xffff_ffff_ffff_ffff)),
            (0x483, Some(0x0003_ffff_0003_6dff)),
        ],
    )
}

#[test]
fn sanitize_refuses_to_clear_forced_pair_controls() {
    let caps = forced_entry_caps();
    let err = setup_vmcs_config(&caps, &sanitize()).unwrap_err();
    assert_eq!(
        err,
        SetupError::SanitizeClearsForcedControls {
            pairs: vec![
                PairId::Pat,
                PairId::Efer,
                PairId::Bndcfgs,
                PairId::RtitCtl,
                PairId::Cet
            ],
            entry_forced: 0x15c000,
            exit_forced: 0,
        }
    );
    assert_eq!(err.kind(), "sanitize_clears_forced_controls");
    let msg = err.to_string();
    for needle in [
        "IA32_PAT",
        "IA32_RTIT_CTL",
        "0x15c000",
        "KVM",
        "anyway",
        "refused",
    ] {
        assert!(msg.contains(needle), "{needle}: {msg}");
    }
    // Strict mode still reports the plain inconsistency.
    assert!(matches!(
        setup_vmcs_config(&caps, &strict()),
        Err(SetupError::InconsistentPairs(p)) if p.len() == 5
    ));

    // `vmxcap config --on-inconsistent sanitize`: configuration fails, status 1.
    let json = vmx_caps::Dump::from_caps(&caps, "synthetic", "test").to_json();
    let outcome = config_from_dump_json(&json, &sanitize());
    assert_eq!(
        outcome.as_ref().unwrap_err().exit_status(),
        EXIT_CONFIG_FAILED
    );
    let out = render_outcome(&outcome, Format::Json);
    assert_eq!(out.exit_status, 1);
    let v: serde_json::Value = serde_json::from_str(&out.output).unwrap();
    assert_eq!(v["error"]["kind"], "sanitize_clears_forced_controls");
}

#[test]
fn sanitize_refuses_a_forced_exit_side() {
    // The exit side forces LOAD_IA32_PAT (bit 19) but entry cannot load PAT.
    let exit = raw(SKX).get(0x483).unwrap() | (1 << 19);
    let entry = raw(SKX).get(0x484).unwrap() & !(1u64 << (32 + 14));
    let caps = caps_with(SKX, &[(0x483, Some(exit)), (0x484, Some(entry))]);
    assert_eq!(
        setup_vmcs_config(&caps, &sanitize()).unwrap_err(),
        SetupError::SanitizeClearsForcedControls {
            pairs: vec![PairId::Pat],
            entry_forced: 0,
            exit_forced: 1 << 19,
        }
    );
}

#[test]
fn sanitize_still_clears_optional_pair_controls() {
    // Entry may load PAT (optional), exit cannot: both sides cleared, success.
    let exit = raw(SKX).get(0x483).unwrap() & !(1u64 << (32 + 19));
    let caps = caps_with(SKX, &[(0x483, Some(exit))]);
    let ok = setup_vmcs_config(&caps, &sanitize()).unwrap();
    assert!(!ok.config.entry.contains(EntryControls::LOAD_IA32_PAT));
    assert!(!ok.config.exit.contains(ExitControls::LOAD_IA32_PAT));
    assert!(ok
        .diagnostics
        .iter()
        .any(|d| matches!(d, Diagnostic::InconsistentPair(p) if p.pair == PairId::Pat)));
}

// ---- tool-level outcome ----

#[test]
fn exit_statuses() {
    let good = std::fs::read_to_string(path(SKX)).unwrap();
    let out = render_outcome(&config_from_dump_json(&good, &strict()), Format::Text);
    assert_eq!(out.exit_status, EXIT_SUCCESS);

    // Configuration fails: 1, with the reason.
    let bad = good.replace("0x000000ff00000016", "0x000000f700000016");
    let outcome = config_from_dump_json(&bad, &strict());
    let err = outcome.as_ref().unwrap_err();
    assert_eq!(err.exit_status(), EXIT_CONFIG_FAILED);
    let out = render_outcome(&outcome, Format::Json);
    assert_eq!(out.exit_status, 1);
    let v: serde_json::Value = serde_json::from_str(&out.output).unwrap();
    assert_eq!(v["error"]["kind"], "required_controls_missing");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("NMI_EXITING"));
    let out = render_outcome(&outcome, Format::Text);
    assert!(
        out.output.starts_with("error: configuration fails"),
        "{}",
        out.output
    );

    // Unusable input: 2.
    for text in ["", "{", "{\"msrs\": {\"0x480\": \"zz\"}}", "{\"msrs\": {}}"] {
        let outcome = config_from_dump_json(text, &strict());
        let out = render_outcome(&outcome, Format::Json);
        assert_eq!(out.exit_status, EXIT_UNUSABLE_INPUT, "{text}");
        let v: serde_json::Value = serde_json::from_str(&out.output).unwrap();
        assert_eq!(v["error"]["kind"], "unusable_input");
    }
    let missing = config_from_dump_file(std::path::Path::new("/nonexistent/dump.json"), &strict());
    assert_eq!(missing.unwrap_err().exit_status(), EXIT_UNUSABLE_INPUT);
}

#[test]
fn error_kinds_are_distinct() {
    let errs = [
        SetupError::RequiredControlsMissing {
            field: ControlField::Entry,
            msr: 0x484,
            required: 1,
            missing: 1,
            allowed1: 0,
        },
        SetupError::InconsistentPairs(vec![]),
        SetupError::EptCapWithoutEnableEpt { ept_cap: 1 },
        SetupError::VpidCapWithoutEnableVpid { vpid_cap: 1 },
        SetupError::SanitizeClearsForcedControls {
            pairs: vec![PairId::Pat],
            entry_forced: 1 << 14,
            exit_forced: 0,
        },
        SetupError::VmcsSizeTooLarge { size: 8192 },
        SetupError::PhysAddr32Bit,
        SetupError::VmcsMemoryTypeNotWb { memory_type: 0 },
    ];
    let mut kinds: Vec<_> = errs.iter().map(|e| e.kind()).collect();
    kinds.sort_unstable();
    kinds.dedup();
    assert_eq!(kinds.len(), errs.len());
}

#[test]
fn arbitrary_capabilities_never_panic_and_respect_allowed_settings() {
    arbtest::arbtest(|u| {
        let mut r = raw(SKX);
        for index in [
            0x480u32, 0x481, 0x482, 0x483, 0x484, 0x48B, 0x48C, 0x492, 0x493,
        ] {
            if u.arbitrary::<bool>()? {
                r.insert(index, u.arbitrary()?);
            }
        }
        let caps = vmx_caps::VmxCaps::from_raw(r).unwrap();
        let policy = if u.arbitrary::<bool>()? {
            strict()
        } else {
            sanitize().with_fred()
        }
        .with_cpuid(CpuidInfo {
            signature: u.arbitrary()?,
            sgx: u.arbitrary()?,
        });
        if let Ok(s) = setup_vmcs_config(&caps, &policy) {
            let c = s.config;
            // Fix-ups only clear bits: nothing outside the allowed-1 settings appears
            // unless the MSR itself forces it (malformed low ⊄ high).
            let p = caps.pin_based_legacy();
            assert_eq!(c.pin.raw() & !(p.may_be_one() | p.must_be_one()), 0);
            let x = caps.exit_legacy();
            assert_eq!(c.exit.raw() & !(x.may_be_one() | x.must_be_one()), 0);
            // Every pair of the table is consistent in a successful result.
            for pair in policy.pairs {
                assert!(pair.is_consistent(c.entry, c.exit, c.secondary_exit));
            }
            // Required controls are present.
            assert!(c.primary.contains(policy.primary.required));
            assert!(c.entry.contains(policy.entry.required));
        }
        Ok(())
    });
}

#[test]
fn cli_spellings_parse() {
    assert_eq!("error".parse::<OnInconsistent>(), Ok(OnInconsistent::Error));
    assert_eq!(
        "sanitize".parse::<OnInconsistent>(),
        Ok(OnInconsistent::Sanitize)
    );
    assert_eq!("json".parse::<Format>(), Ok(Format::Json));
    assert_eq!("text".parse::<Format>(), Ok(Format::Text));
    let err = "Sanitize".parse::<OnInconsistent>().unwrap_err();
    assert_eq!(err.expected, "error, sanitize");
    assert!(err.to_string().contains("\"Sanitize\""));
    let long = "x".repeat(1000);
    assert_eq!(long.parse::<Format>().unwrap_err().value.len(), 40);
    assert_eq!(OnInconsistent::default(), OnInconsistent::Error);
}

#[test]
fn stray_ept_caps_take_ept_violation_ve_with_them() {
    // A CPU that allows #VE on EPT violations but not EPT itself, with EPT caps.
    let v = raw(SKX).get(0x48B).unwrap();
    let allowed = (v & !(u64::from(SecondaryControls::ENABLE_EPT.bits()) << 32))
        | (u64::from(SecondaryControls::EPT_VIOLATION_VE.bits()) << 32);
    let caps = caps_with(SKX, &[(0x48B, Some(allowed))]);

    // Strict: the stray caps are fatal, as without PROVE_VE.
    assert_eq!(
        setup_vmcs_config(&caps, &strict().with_prove_ve()).unwrap_err(),
        SetupError::EptCapWithoutEnableEpt {
            ept_cap: 0x0673_4141
        }
    );

    // Sanitize with PROVE_VE: caps zeroed and EPT_VIOLATION_VE cleared (Linux 6.10+).
    let ok = setup_vmcs_config(&caps, &sanitize().with_prove_ve()).unwrap();
    assert_eq!(ok.config.ept_cap, 0);
    assert!(!ok
        .config
        .secondary
        .contains(SecondaryControls::EPT_VIOLATION_VE));
    assert_eq!(
        ok.diagnostics,
        vec![
            Diagnostic::EptCapWithoutEnableEpt {
                ept_cap: 0x0673_4141
            },
            Diagnostic::EptViolationVeWithoutEpt,
        ]
    );
    assert_eq!(ok.diagnostics[1].kind(), "ept_violation_ve_without_ept");
    assert_eq!(ok.diagnostics[1].severity(), Severity::Info);
    // Nothing else changes.
    let plain = setup_vmcs_config(&caps, &sanitize()).unwrap();
    assert_eq!(plain.config, ok.config);
    assert_eq!(plain.diagnostics, ok.diagnostics[..1]);

    // With EPT allowed, PROVE_VE keeps the control.
    let caps = with_allowed1(SKX, 0x48B, SecondaryControls::EPT_VIOLATION_VE.bits());
    let ok = setup_vmcs_config(&caps, &sanitize().with_prove_ve()).unwrap();
    assert!(ok
        .config
        .secondary
        .contains(SecondaryControls::EPT_VIOLATION_VE));
    assert!(ok.diagnostics.is_empty());
}

#[test]
fn diagnostic_kinds_are_distinct_and_messages_are_one_line() {
    let pair = sanitize_pairs(
        &VMCS_ENTRY_EXIT_PAIRS,
        EntryControls::LOAD_IA32_PAT,
        ExitControls::empty(),
        SecondaryExitControls::empty(),
        OnInconsistent::Sanitize,
    )
    .unwrap()
    .inconsistent[0];
    let all = [
        Diagnostic::SecondaryCapsMissing,
        Diagnostic::TprShadowWithoutApicAccesses,
        Diagnostic::ApicVirtWithoutTprShadow {
            cleared: SecondaryControls::APIC_REGISTER_VIRT,
        },
        Diagnostic::EptCapWithoutEnableEpt { ept_cap: 1 },
        Diagnostic::EptViolationVeWithoutEpt,
        Diagnostic::VpidCapWithoutEnableVpid { vpid_cap: 1 },
        Diagnostic::EnclsExitingWithoutSgx,
        Diagnostic::TertiaryCapsMissing,
        Diagnostic::BrokenPreemptionTimer { signature: 0x306a8 },
        Diagnostic::PostedIntrWithoutVid,
        Diagnostic::SecondaryExitCapsMissing,
        Diagnostic::InconsistentPair(pair),
        Diagnostic::PerfGlobalCtrlErratum { erratum: "AAK155" },
    ];
    let mut kinds: Vec<_> = all.iter().map(|d| d.kind()).collect();
    kinds.sort_unstable();
    kinds.dedup();
    assert_eq!(kinds.len(), all.len());
    for d in &all {
        // One line each: the text report prints one diagnostic per line.
        let msg = d.to_string();
        assert!(!msg.is_empty() && !msg.contains('\n'), "{d:?}: {msg}");
    }
    assert!(all[11].to_string().ends_with("both sides cleared"));
}
