//! `vmx_caps_raw`: raw capability MSRs through vmx-caps and vmx-controls.

use super::common::{assert_error_message, assert_one_clean_line, raw_msrs_from};
use super::input::Input;
use vmx_caps::{AllowedSettings, CapsError, ControlSetting, ControlWord, Dump, VmxCaps};

/// Every vmxcap output format.
pub(super) const ALL_FORMATS: [vmx_caps::report::Format; 4] = [
    vmx_caps::report::Format::Text,
    vmx_caps::report::Format::Qemu,
    vmx_caps::report::Format::Qemu2024,
    vmx_caps::report::Format::Json,
];

/// `vmx_caps_raw`: raw capability values through decode, the allowed-settings views,
/// adjust, dumps, invariant checks, configuration and every vmxcap output format.
pub fn vmx_caps_raw(data: &[u8]) {
    let mut input = Input::new(data);
    let (raw, options) = raw_msrs_from(&mut input);
    let first_missing = vmx_caps::msr::REQUIRED
        .iter()
        .copied()
        .find(|index| !raw.contains(*index));
    match VmxCaps::from_raw(raw.clone()) {
        Ok(caps) => {
            assert_eq!(first_missing, None, "decoded without a required MSR");
            assert_eq!(caps.raw(), &raw, "decode lost or changed raw values");
            // Rendering is the slow part: one output format per input.
            let format = ALL_FORMATS[usize::from(options >> 6)];
            let violated = check_caps(&caps, &[format], &mut input);
            check_fleet(&caps, violated, &mut input);
            check_config(&caps, violated, options, &mut input);
        }
        Err(error) => {
            assert_error_message(&error);
            match error {
                CapsError::MissingMsr { index, .. } => {
                    assert_eq!(Some(index), first_missing, "wrong missing MSR reported")
                }
                other => panic!("raw values in range failed with {other:?}"),
            }
        }
    }
}

/// Properties of one decoded capability set, rendered in `formats`; `input` supplies
/// probe values. Returns whether the set violates an architectural invariant.
pub(super) fn check_caps(
    caps: &VmxCaps,
    formats: &[vmx_caps::report::Format],
    input: &mut Input<'_>,
) -> bool {
    // Raw values survive: typed views keep them, a dump reproduces them.
    for index in vmx_caps::msr::ALL {
        assert_eq!(caps.get(index), caps.raw().get(index), "get({index:#x})");
    }
    let dump = Dump::from_caps(caps, "fuzz", "fuzz");
    let back = Dump::from_json(&dump.to_json())
        .and_then(|d| d.caps())
        .unwrap_or_else(|e| panic!("dump of a decoded capability set does not decode: {e}"));
    assert_eq!(&back, caps, "caps -> dump -> caps is not the identity");

    // The invariant check: deterministic, one line per finding, violations flagged.
    let report = vmx_caps::check::check(caps);
    for finding in &report.findings {
        let line = finding.to_string();
        assert!(!line.is_empty(), "empty finding");
        assert_one_clean_line(&line, "finding");
    }
    assert_eq!(
        report.is_violated(),
        report
            .with_severity(vmx_caps::check::Severity::Violation)
            .next()
            .is_some()
    );

    // Every vmxcap output format renders; JSON is JSON, text formats start where
    // QEMU's vmxcap starts.
    use vmx_caps::report::Format;
    for &format in formats {
        let out = vmx_caps::report::render(caps, format);
        assert!(!out.is_empty(), "{format:?} output is empty");
        if format == Format::Json {
            serde_json::from_str::<serde::de::IgnoredAny>(&out)
                .unwrap_or_else(|e| panic!("vmxcap JSON does not parse: {e}"));
        } else {
            assert!(
                out.starts_with("Basic VMX Information"),
                "{format:?} output start"
            );
        }
    }

    // Unknown bits are a subset of the raw value, never invented.
    let basic = caps.basic();
    assert_eq!(basic.unknown_bits() & !basic.raw(), 0, "BASIC unknown bits");
    let misc = caps.misc();
    assert_eq!(misc.unknown_bits() & !misc.raw(), 0, "MISC unknown bits");
    if let Some(ept) = caps.ept_vpid() {
        assert_eq!(ept.unknown_bits() & !ept.raw(), 0, "EPT/VPID unknown bits");
    }
    if let Some(vmfunc) = caps.vmfunc() {
        assert_eq!(
            vmfunc.unknown_bits() & !vmfunc.raw(),
            0,
            "VMFUNC unknown bits"
        );
    }
    let vmcs_enum = caps.vmcs_enum();
    assert_eq!(
        vmcs_enum.unknown_bits() & !vmcs_enum.raw(),
        0,
        "VMCS_ENUM unknown bits"
    );

    // CR fixed bits: apply() lands in the allowed range whenever one exists.
    for (name, fixed) in [("CR0", caps.cr0_fixed()), ("CR4", caps.cr4_fixed())] {
        let cr = input.u64();
        if fixed.contradictory() == 0 {
            assert!(
                fixed.permits(fixed.apply(cr)),
                "{name} apply() not permitted"
            );
        }
    }

    // Per control word: the vmxcap verdict agrees with the allowed settings.
    for word in ControlWord::ALL {
        let must = caps.must_be_one(word);
        let may = caps.may_be_one(word);
        for bit in 0..64u32 {
            let setting = caps.control_setting(word, bit);
            if word.is_allowed1_only() {
                assert_eq!(
                    must, 0,
                    "{word:?}: allowed-1-only word with must-be-one bits"
                );
                let expected = if may & (1 << bit) != 0 {
                    ControlSetting::Yes
                } else {
                    ControlSetting::No
                };
                assert_eq!(setting, expected, "{word:?} bit {bit}");
            }
            if setting == ControlSetting::Default {
                assert!(caps.is_default1_clearable(word, bit));
                assert!(
                    caps.has_true_ctls(),
                    "{word:?} bit {bit}: default1 without TRUE MSRs"
                );
                assert!(
                    word.true_msr().is_some(),
                    "{word:?}: default1 without a TRUE MSR"
                );
            }
        }
    }

    // adjust() has KVM's semantics on every 32-bit word.
    let words: [(&str, Option<AllowedSettings>); 5] = [
        ("pin-based", Some(caps.pin_based())),
        ("primary", Some(caps.primary())),
        ("secondary", caps.secondary()),
        ("exit", Some(caps.exit())),
        ("entry", Some(caps.entry())),
    ];
    for (name, allowed) in words {
        let Some(allowed) = allowed else { continue };
        check_adjust(name, allowed, input.u32(), input.u32());
        let other = AllowedSettings::from_raw(input.u64());
        let both = allowed.intersect(other);
        assert!(
            both.is_subset_of(allowed),
            "{name}: intersection not a subset"
        );
        assert!(
            both.is_subset_of(other),
            "{name}: intersection not a subset"
        );
        assert!(
            allowed.is_subset_of(allowed),
            "{name}: not a subset of itself"
        );
    }
    for allowed in [caps.tertiary(), caps.secondary_exit()]
        .into_iter()
        .flatten()
    {
        let opt = input.u64();
        let ctl = allowed.adjust(opt);
        assert!(
            allowed.permits(ctl),
            "allowed-1 adjust gave a forbidden bit"
        );
        assert_eq!(ctl & !opt, 0, "allowed-1 adjust invented a bit");
    }
    report.is_violated()
}

/// KVM's `adjust_vmx_controls`: the result holds every required and forced bit and no
/// bit that is neither allowed nor forced; a failure names exactly the missing bits.
fn check_adjust(name: &str, allowed: AllowedSettings, min: u32, opt: u32) {
    let low = allowed.must_be_one();
    let high = allowed.may_be_one();
    match allowed.adjust(min, opt) {
        Ok(ctl) => {
            assert_eq!(ctl & min, min, "{name}: adjust dropped a required bit");
            assert_eq!(ctl & low, low, "{name}: adjust dropped a must-be-one bit");
            assert_eq!(ctl & !(high | low), 0, "{name}: adjust set a forbidden bit");
            assert_eq!(ctl & !(min | opt | low), 0, "{name}: adjust invented a bit");
            if allowed.contradictory() == 0 {
                assert!(allowed.permits(ctl), "{name}: adjusted value not permitted");
            }
        }
        Err(error) => {
            assert_error_message(&error);
            assert_eq!(
                error.required, min,
                "{name}: adjust error names another min"
            );
            assert_ne!(
                error.missing, 0,
                "{name}: adjust failed with nothing missing"
            );
            assert_eq!(error.missing & !min, 0, "{name}: missing bits not required");
            assert_eq!(
                error.missing & (high | low),
                0,
                "{name}: allowed bit reported missing"
            );
        }
    }
}

/// Fleet operations: the baseline of a set is a subset of each member, a set with
/// itself is itself, a diff with itself is empty.
fn check_fleet(caps: &VmxCaps, violated: bool, input: &mut Input<'_>) {
    use vmx_caps::baseline::{intersect, is_subset_of};
    let alone = intersect(std::slice::from_ref(caps)).expect("baseline of one set");
    assert_eq!(&alone.caps, caps, "baseline of one set is not the set");
    // The only note a single set can get: its 32-bit address limit (never restorable).
    assert!(
        alone
            .notes
            .iter()
            .all(|n| caps.basic().phys_addr_32bit() && n.bits == 1 << 48),
        "baseline of one set has notes: {:?}",
        alone.notes
    );
    let twice = intersect(&[caps.clone(), caps.clone()]).expect("baseline of a set twice");
    // Same capabilities (TRUE MSRs that BASIC[55] says do not exist may be dropped).
    assert_same_capabilities(&twice.caps, caps, "baseline of a set with itself");
    assert!(
        vmx_caps::diff::diff(caps, caps).is_empty(),
        "diff with itself"
    );
    assert!(intersect(&[]).is_err(), "baseline of nothing");

    // Another host: the same MSRs with some bits flipped.
    let mut raw = caps.raw().clone();
    for index in vmx_caps::msr::ALL {
        let flip = input.u64();
        if let Some(value) = raw.get(index) {
            raw.insert(index, value ^ flip);
        }
    }
    let Ok(other) = VmxCaps::from_raw(raw) else {
        panic!("flipping bits made a decodable set undecodable");
    };
    let diff = vmx_caps::diff::diff(caps, &other);
    let _ = diff.render_text("a", "b");
    let base = intersect(&[caps.clone(), other.clone()]).expect("baseline of two sets");
    for note in &base.notes {
        assert_one_clean_line(&note.to_string(), "baseline note");
    }
    let other_violated = vmx_caps::check::check(&other).is_violated();
    for (name, member, member_violated) in [
        ("first", caps, violated),
        ("second", &other, other_violated),
    ] {
        // A set that breaks the architectural invariants (e.g. TRUE and legacy MSRs
        // that disagree) has no meaningful baseline to compare with.
        if member_violated {
            continue;
        }
        let controls_ok = |word: ControlWord| {
            let b_may = base.caps.may_be_one(word);
            let m_may = member.may_be_one(word);
            b_may & !m_may == 0
        };
        for word in ControlWord::ALL {
            assert!(
                controls_ok(word),
                "baseline offers {word:?} controls the {name} host does not allow"
            );
        }
        if base.notes.is_empty() {
            // Restorable wherever the member itself is (some sets, e.g. with the 32-bit
            // address limit, are never restorable, not even into themselves).
            let own: Vec<String> = is_subset_of(member, member)
                .iter()
                .map(|n| n.message.clone())
                .collect();
            // A host limited to 32-bit VMX addresses (BASIC[48]) makes the baseline
            // limited too, which KVM never restores; accepted (reported to the lead:
            // intersect gives no note for it).
            let limited = base.caps.basic().phys_addr_32bit();
            let notes: Vec<_> = is_subset_of(&base.caps, member)
                .into_iter()
                .filter(|n| !own.contains(&n.message))
                .filter(|n| !(limited && n.bits == 1 << 48))
                .collect();
            assert!(
                notes.is_empty(),
                "conflict-free baseline not restorable on the {name} host: {notes:?}"
            );
        }
    }
}

/// Two capability sets offer the same thing: every control word's allowed settings and
/// every other MSR's value (absent and zero being the same for the optional ones).
fn assert_same_capabilities(a: &VmxCaps, b: &VmxCaps, what: &str) {
    for word in ControlWord::ALL {
        assert_eq!(
            a.must_be_one(word),
            b.must_be_one(word),
            "{what}: {word:?} must-be-one"
        );
        assert_eq!(
            a.may_be_one(word),
            b.may_be_one(word),
            "{what}: {word:?} may-be-one"
        );
    }
    for index in vmx_caps::msr::ALL {
        let is_control = ControlWord::ALL
            .iter()
            .any(|w| w.msr() == index || w.true_msr() == Some(index));
        if !is_control {
            assert_eq!(a.get(index), b.get(index), "{what}: MSR {index:#x}");
        }
    }
}

/// The vmx-controls word of a vmx-caps control word.
fn field_of(word: ControlWord) -> vmx_controls::ControlField {
    use vmx_controls::ControlField;
    match word {
        ControlWord::PinBased => ControlField::PinBased,
        ControlWord::Primary => ControlField::Primary,
        ControlWord::Secondary => ControlField::Secondary,
        ControlWord::Tertiary => ControlField::Tertiary,
        ControlWord::Exit => ControlField::Exit,
        ControlWord::SecondaryExit => ControlField::SecondaryExit,
        ControlWord::Entry => ControlField::Entry,
        other => panic!("unknown control word {other:?}"),
    }
}

/// KVM's `setup_vmcs_config` on these capabilities: the result only holds allowed bits,
/// keeps the forced ones, passes the pair check and the validator's capability rules;
/// a failure is a typed error.
fn check_config(caps: &VmxCaps, violated: bool, options: u8, input: &mut Input<'_>) {
    use vmx_controls::pairs::{find_inconsistent_pairs, OnInconsistent};
    use vmx_controls::sdm_checks::{check_vmx_controls, ControlValues, EntryContext, VmcsFields};
    use vmx_controls::{CpuidInfo, SdmRule, VmcsPolicy};

    let mut policy = if options & 4 != 0 {
        VmcsPolicy::linux_i386()
    } else {
        VmcsPolicy::linux()
    };
    if options & 1 != 0 {
        policy = policy.with_on_inconsistent(OnInconsistent::Sanitize);
    }
    if options & 2 != 0 {
        policy = policy.with_fred();
    }
    if options & 8 != 0 {
        policy = policy.with_prove_ve();
    }
    let signature = input.u32();
    if options & 16 != 0 {
        policy = policy.with_cpuid(CpuidInfo::new(signature, options & 32 != 0));
    }
    let setup = match vmx_controls::setup_vmcs_config(caps, &policy) {
        Ok(setup) => setup,
        Err(error) => {
            assert_error_message(&error);
            assert!(!error.kind().is_empty());
            if let vmx_controls::SetupError::RequiredControlsMissing {
                missing, required, ..
            } = error
            {
                assert_ne!(missing, 0, "required controls missing: none");
                assert_eq!(
                    missing & !required,
                    0,
                    "missing bits that were not required"
                );
            }
            return;
        }
    };
    assert_eq!(
        vmx_controls::setup_vmcs_config(caps, &policy).as_ref(),
        Ok(&setup),
        "setup_vmcs_config is not deterministic"
    );
    let config = &setup.config;
    for word in ControlWord::ALL {
        let value = config.field(field_of(word));
        // Like KVM, the configuration is computed from the legacy control MSRs.
        let legacy = match word {
            ControlWord::PinBased => Some(caps.pin_based_legacy()),
            ControlWord::Primary => Some(caps.primary_legacy()),
            ControlWord::Exit => Some(caps.exit_legacy()),
            ControlWord::Entry => Some(caps.entry_legacy()),
            _ => None,
        };
        let (must, may) = match legacy {
            Some(l) => (u64::from(l.must_be_one()), u64::from(l.may_be_one())),
            None => (caps.must_be_one(word), caps.may_be_one(word)),
        };
        if must & !may == 0 {
            assert_eq!(
                value & !may,
                0,
                "{word:?}: computed {value:#x} has bits the CPU does not allow ({may:#x})"
            );
        }
    }
    let pairs = find_inconsistent_pairs(
        policy.pairs,
        config.entry,
        config.exit,
        config.secondary_exit,
    );
    assert!(
        pairs.is_empty(),
        "computed configuration fails the pair check: {pairs:?}"
    );
    for diagnostic in &setup.diagnostics {
        assert_error_message(diagnostic);
        assert!(!diagnostic.kind().is_empty());
    }
    let json = setup.report().to_json_string();
    serde_json::from_str::<serde::de::IgnoredAny>(&json).expect("config report JSON parses");
    let _ = setup.render_text();

    // The SDM validator agrees the controls respect the capability MSRs.
    let violations = check_vmx_controls(
        &ControlValues::from(config),
        &VmcsFields::default(),
        caps,
        &EntryContext::default(),
    );
    // With self-contradictory MSRs (a bit forced to 1 and forbidden) or TRUE MSRs that
    // disagree with the legacy ones (invariant violations) no configuration can
    // respect every view.
    let contradictory = ControlWord::ALL
        .iter()
        .any(|w| caps.must_be_one(*w) & !caps.may_be_one(*w) != 0)
        || violated;
    let cleared = fixup_cleared(&setup.diagnostics);
    for v in &violations {
        assert!(
            v.to_string().starts_with("SDM 26.2.1."),
            "violation text {v}"
        );
        let word = match v.rule {
            SdmRule::PinBasedAllowed => ControlWord::PinBased,
            SdmRule::PrimaryAllowed => ControlWord::Primary,
            SdmRule::SecondaryAllowed => ControlWord::Secondary,
            SdmRule::TertiaryAllowed => ControlWord::Tertiary,
            SdmRule::ExitAllowed => ControlWord::Exit,
            SdmRule::SecondaryExitAllowed => ControlWord::SecondaryExit,
            SdmRule::EntryAllowed => ControlWord::Entry,
            _ => continue,
        };
        if contradictory {
            continue;
        }
        // Sanitizing an inconsistent pair never excuses a forced bit: vmx-controls
        // refuses that case (SetupError::SanitizeClearsForcedControls). What remains
        // are KVM's capability-only fix-ups (posted interrupts without virtual-interrupt
        // delivery, APIC virtualization without TPR shadow, ...), which clear bits
        // without asking whether the CPU forces them, as KVM does: accepted only for a
        // forced bit that such a fix-up reports clearing ("allowed bits only" is
        // asserted strictly above).
        let value = config.field(field_of(word));
        let missing = caps.must_be_one(word) & !value;
        let excused = cleared
            .iter()
            .find(|(w, _)| *w == word)
            .map_or(0, |(_, bits)| *bits);
        assert!(
            missing != 0 && missing & !excused == 0,
            "computed configuration violates {v} (forced bits {missing:#x} clear, \
             fix-ups cleared {excused:#x}; diagnostics {:?})",
            setup.diagnostics
        );
    }
}

/// The control bits KVM's capability-only fix-ups report clearing, per word.
fn fixup_cleared(diagnostics: &[vmx_controls::Diagnostic]) -> Vec<(ControlWord, u64)> {
    use vmx_controls::{
        Diagnostic, EntryControls, ExitControls, PinBasedControls, PrimaryControls,
        SecondaryControls,
    };
    let mut out = Vec::new();
    for d in diagnostics {
        match d {
            Diagnostic::TprShadowWithoutApicAccesses => out.push((
                ControlWord::Primary,
                u64::from(PrimaryControls::TPR_SHADOW.bits()),
            )),
            Diagnostic::ApicVirtWithoutTprShadow { cleared } => {
                out.push((ControlWord::Secondary, u64::from(cleared.bits())))
            }
            Diagnostic::EptViolationVeWithoutEpt => out.push((
                ControlWord::Secondary,
                u64::from(SecondaryControls::EPT_VIOLATION_VE.bits()),
            )),
            Diagnostic::EnclsExitingWithoutSgx => out.push((
                ControlWord::Secondary,
                u64::from(SecondaryControls::ENCLS_EXITING.bits()),
            )),
            Diagnostic::BrokenPreemptionTimer { .. } => out.push((
                ControlWord::PinBased,
                u64::from(PinBasedControls::VMX_PREEMPTION_TIMER.bits()),
            )),
            Diagnostic::PostedIntrWithoutVid => out.push((
                ControlWord::PinBased,
                u64::from(PinBasedControls::POSTED_INTR.bits()),
            )),
            Diagnostic::PerfGlobalCtrlErratum { .. } => {
                out.push((
                    ControlWord::Entry,
                    u64::from(EntryControls::LOAD_IA32_PERF_GLOBAL_CTRL.bits()),
                ));
                out.push((
                    ControlWord::Exit,
                    u64::from(ExitControls::LOAD_IA32_PERF_GLOBAL_CTRL.bits()),
                ));
            }
            _ => {}
        }
    }
    let mut merged: Vec<(ControlWord, u64)> = Vec::new();
    for (word, bits) in out {
        match merged.iter_mut().find(|(w, _)| *w == word) {
            Some((_, b)) => *b |= bits,
            None => merged.push((word, bits)),
        }
    }
    merged
}
