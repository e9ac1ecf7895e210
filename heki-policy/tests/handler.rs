//! VMM side: mirror, denial policies, anomalies, rate limit, stats; and the
//! hypervisor-side model feeding it.

use core::time::Duration;
use heki_policy::enforce::EnableCapError;
use heki_policy::handler::{ConfigureSemantics, HekiAnomaly, Verdict};
use heki_policy::{
    decode_exit, encode_exit, CallerMode, CrWriteVerdict, DenialPolicy, ExitDecode, HekiAbi,
    HekiAction, HekiCap, HekiExit, HekiExitHandler, HekiExitReason, HekiVm, HostCrs, HypercallRegs,
    PinPolicy, PinnedCrs, RateLimit, RebootPolicy,
};

const WP: u64 = 1 << 16;
const SMEP: u64 = 1 << 20;
const SMAP: u64 = 1 << 21;
const HOST: HostCrs = HostCrs {
    cr0: 0x8005_0033,
    cr4: 0x0037_0ef0,
};
const T0: Duration = Duration::ZERO;

fn lock(vm: &mut HekiVm, cr: u64, pin: u64) -> Option<HekiExit> {
    let regs = HypercallRegs {
        nr: vm.policy().abi().lock_cr_update_nr(),
        a0: cr,
        a1: pin,
        ..Default::default()
    };
    let (outcome, exit) = vm.on_hypercall(regs, CallerMode::KERNEL_64, HOST).unwrap();
    assert_eq!(outcome.ret.to_rax(true), 0, "{outcome:?}");
    exit
}

#[test]
fn hypervisor_emits_exits_only_when_enabled() {
    let mut vm = HekiVm::new(PinPolicy::new(HekiAbi::RfcV3));
    assert_eq!(lock(&mut vm, 0, WP), None);
    vm.enable_cap(HekiCap::Configure, 2).unwrap(); // CR4 only
    assert_eq!(lock(&mut vm, 0, WP), None);
    // The exit reports this call's bits after host masking (CET dropped).
    assert_eq!(
        lock(&mut vm, 4, SMEP | (1 << 23)),
        Some(HekiExit::configure(HekiExitReason::Cr4, SMEP))
    );
    assert_eq!(
        vm.on_cr_write(4, 0),
        CrWriteVerdict::InjectGp { cleared: SMEP }
    );
    vm.enable_cap(HekiCap::Denial, 3).unwrap();
    assert_eq!(
        vm.on_cr_write(4, 0x6f0),
        CrWriteVerdict::ExitThenGp {
            exit: HekiExit::denial(HekiExitReason::Cr4, 0x6f0),
            cleared: SMEP
        }
    );
    assert_eq!(vm.on_cr_write(4, SMEP | SMAP), CrWriteVerdict::Allow);
    assert_eq!(vm.on_cr_write(3, 0), CrWriteVerdict::Allow);
    assert!(vm.enable_cap(HekiCap::Denial, 4).is_err());
    let mut v1 = HekiVm::new(PinPolicy::new(HekiAbi::RfcV1));
    assert_eq!(
        v1.enable_cap(HekiCap::Denial, 3),
        Err(EnableCapError::NoUapi(HekiAbi::RfcV1))
    );
}

/// Hypervisor model → kvm_run bytes → decode → VMM handler, for both revisions.
#[test]
fn end_to_end_mirror_matches_hypervisor() {
    for abi in [HekiAbi::RfcV2, HekiAbi::RfcV3] {
        let mut vm = HekiVm::new(PinPolicy::new(abi));
        vm.enable_cap(HekiCap::Configure, 3).unwrap();
        vm.enable_cap(HekiCap::Denial, 3).unwrap();
        let mut vmm = HekiExitHandler::new(abi, DenialPolicy::Gp);
        let mut union = [0u8; 256];
        for (cr, pin) in [(0, WP), (4, SMEP), (4, SMAP)] {
            let exit = lock(&mut vm, cr, pin).unwrap();
            let nr = encode_exit(abi, &exit, &mut union).unwrap();
            let ExitDecode::Heki(decoded) = decode_exit(Some(abi), nr, &union).unwrap() else {
                panic!("not decoded as Heki");
            };
            let d = vmm.handle(&decoded, T0);
            assert_eq!(
                (d.action, d.verdict, d.anomaly),
                (HekiAction::Resume, Verdict::Configured, None)
            );
        }
        assert_eq!(vmm.pins(), vm.policy().pins());
        let CrWriteVerdict::ExitThenGp { exit, cleared } = vm.on_cr_write(0, HOST.cr0 & !WP) else {
            panic!("not denied");
        };
        let nr = encode_exit(abi, &exit, &mut union).unwrap();
        let ExitDecode::Heki(decoded) = decode_exit(Some(abi), nr, &union).unwrap() else {
            panic!("not decoded as Heki");
        };
        let d = vmm.handle(&decoded, T0);
        assert_eq!(d.denied_bits, cleared);
        assert_eq!(
            (d.action, d.verdict, d.anomaly),
            (HekiAction::Resume, Verdict::Enforced, None)
        );
        assert_eq!(vmm.stats().denials_cr0, 1);
        assert_eq!(vmm.stats().configure_exits, 3);
    }
}

fn denial(cr: HekiExitReason, value: u64) -> HekiExit {
    HekiExit::denial(cr, value)
}

fn pinned_handler(policy: DenialPolicy) -> HekiExitHandler {
    HekiExitHandler::new(HekiAbi::RfcV2, policy).with_pins(PinnedCrs {
        cr0: WP,
        cr4: SMEP | SMAP,
    })
}

#[test]
fn denial_policy_gp() {
    let mut h = pinned_handler(DenialPolicy::Gp);
    assert_eq!(DenialPolicy::default(), DenialPolicy::Gp);
    let d = h.handle(&denial(HekiExitReason::Cr4, SMAP), T0);
    assert_eq!(d.action, HekiAction::Resume);
    assert_eq!(d.verdict, Verdict::Enforced);
    assert_eq!(d.denied_bits, SMEP);
    assert_eq!(h.stats().denials_cr4, 1);
    assert_eq!(h.stats().shutdowns, 0);
}

#[test]
fn denial_policy_shutdown() {
    let mut h = pinned_handler(DenialPolicy::Shutdown);
    let d = h.handle(&denial(HekiExitReason::Cr0, 0), T0);
    assert_eq!(d.action, HekiAction::Shutdown);
    assert_eq!(d.verdict, Verdict::ShutDown);
    assert_eq!(d.denied_bits, WP);
    assert_eq!(h.stats().shutdowns, 1);
    // Configure exits are never a reason to shut down.
    let d = h.handle(&HekiExit::configure(HekiExitReason::Cr4, SMEP), T0);
    assert_eq!(d.action, HekiAction::Resume);
}

#[test]
fn denial_policy_audit_only() {
    let mut h = pinned_handler(DenialPolicy::AuditOnly);
    let d = h.handle(&denial(HekiExitReason::Cr4, 0), T0);
    assert_eq!(d.action, HekiAction::Resume);
    assert_eq!(d.verdict, Verdict::Audited);
    assert_eq!(d.denied_bits, SMEP | SMAP);
    assert_eq!(h.stats().audited, 1);
    // Escalation at run time.
    h.set_policy(DenialPolicy::Shutdown);
    assert_eq!(
        h.handle(&denial(HekiExitReason::Cr4, 0), T0).action,
        HekiAction::Shutdown
    );
}

#[test]
fn per_call_reports_never_shrink_the_mirror() {
    let mut h = HekiExitHandler::new(HekiAbi::RfcV2, DenialPolicy::Gp);
    h.handle(&HekiExit::configure(HekiExitReason::Cr4, SMEP | SMAP), T0);
    // A later call pinning only SMAP is normal under RFC semantics.
    let d = h.handle(&HekiExit::configure(HekiExitReason::Cr4, SMAP), T0);
    assert_eq!(d.anomaly, None);
    assert_eq!(h.pins().cr4, SMEP | SMAP);
}

#[test]
fn cumulative_report_that_would_shrink_is_an_anomaly() {
    let mut h = HekiExitHandler::new(HekiAbi::RfcV2, DenialPolicy::Gp)
        .with_configure_semantics(ConfigureSemantics::Cumulative);
    h.handle(&HekiExit::configure(HekiExitReason::Cr4, SMEP | SMAP), T0);
    let d = h.handle(&HekiExit::configure(HekiExitReason::Cr4, SMAP), T0);
    assert_eq!(
        d.anomaly,
        Some(HekiAnomaly::ShrinkingReport { cr: 4, lost: SMEP })
    );
    assert_eq!(h.pins().cr4, SMEP | SMAP, "the mirror keeps the pins");
    assert_eq!(h.stats().anomalies, 1);
    let d = h.handle(&HekiExit::configure(HekiExitReason::Cr4, SMEP | SMAP), T0);
    assert_eq!(d.anomaly, None);
}

#[test]
fn configure_anomalies() {
    let mut h = HekiExitHandler::new(HekiAbi::RfcV2, DenialPolicy::Gp);
    let d = h.handle(&HekiExit::configure(HekiExitReason::Cr0, 1), T0);
    assert_eq!(
        d.anomaly,
        Some(HekiAnomaly::Cr0PinWithoutWp { cr_pinned: 1 })
    );
    let fred = 1 << 32;
    let d = h.handle(&HekiExit::configure(HekiExitReason::Cr4, fred), T0);
    assert_eq!(
        d.anomaly,
        Some(HekiAnomaly::Cr4PinOutsidePinnable { outside: fred })
    );
    let d = h.handle(&HekiExit::configure(HekiExitReason::Unknown(3), WP), T0);
    assert_eq!(d.anomaly, Some(HekiAnomaly::UnknownReason(3)));
    assert_eq!(
        h.pins(),
        PinnedCrs { cr0: 1, cr4: fred },
        "unknown reason mirrors nothing"
    );
    let d = h.handle(
        &HekiExit::Configure {
            reason: HekiExitReason::Cr0,
            cr_pinned: WP,
            reserved: [0, 0, 0, 0, 0, 9],
        },
        T0,
    );
    assert_eq!(d.anomaly, Some(HekiAnomaly::ReservedNonZero));
    assert_eq!(h.stats().anomalies, 4);
}

#[test]
fn denial_anomalies() {
    let mut h = pinned_handler(DenialPolicy::Gp);
    // Clears nothing we mirrored: our mirror is incomplete.
    let d = h.handle(&denial(HekiExitReason::Cr4, SMEP | SMAP), T0);
    assert_eq!(
        d.anomaly,
        Some(HekiAnomaly::UnexplainedDenial {
            cr: 4,
            cr_value: SMEP | SMAP
        })
    );
    assert_eq!(d.action, HekiAction::Resume);
    let d = h.handle(&denial(HekiExitReason::Unknown(0), 0), T0);
    assert_eq!(d.anomaly, Some(HekiAnomaly::UnknownReason(0)));
    assert_eq!(h.stats().denials_unknown, 1);
    let mut s = pinned_handler(DenialPolicy::Shutdown);
    assert_eq!(
        s.handle(&denial(HekiExitReason::Unknown(9), 0), T0).action,
        HekiAction::Shutdown
    );
}

// The limiter itself (x86_kvm_base::ratelimit, after lib/ratelimit.c ___ratelimit()) is
// tested in x86-kvm-base; what follows tests how the handler uses it.

/// No logger is installed in this test binary, so no line is written: 200,000 exits
/// are all counted as filtered, none as emitted or suppressed (the rate limit with a
/// logger is tested in `tests/logging.rs`), and memory stays constant.
#[test]
fn many_exits_without_a_logger_count_nothing_as_written() {
    let mut h = pinned_handler(DenialPolicy::Gp)
        .with_rate_limit(RateLimit::new(Duration::from_secs(5), 10));
    let n: u64 = 200_000;
    for i in 0..n {
        // 1000 exits per (simulated) second.
        let d = h.handle(&denial(HekiExitReason::Cr0, 0), Duration::from_millis(i));
        assert_eq!(d.action, HekiAction::Resume);
        assert_eq!(d.log, heki_policy::handler::LogPermit::Suppress);
    }
    let s = h.stats();
    assert_eq!(s.denials_cr0, n);
    assert_eq!(
        (s.logs_emitted, s.logs_suppressed, s.logs_filtered),
        (0, 0, n)
    );
    // The handler holds no per-exit data.
    assert!(core::mem::size_of::<HekiExitHandler>() < 256);
}

#[test]
fn reboot_policy_on_mirror() {
    let mut h = pinned_handler(DenialPolicy::Gp);
    assert_eq!(h.on_reboot(RebootPolicy::KeepPins), PinnedCrs::EMPTY);
    assert!(!h.pins().is_empty());
    assert_eq!(
        h.on_reboot(RebootPolicy::ResetPins),
        PinnedCrs {
            cr0: WP,
            cr4: SMEP | SMAP
        }
    );
    assert!(h.pins().is_empty());
}

#[cfg(feature = "serde")]
#[test]
fn mirror_survives_migration() {
    let h = pinned_handler(DenialPolicy::Gp);
    let json = serde_json::to_string(&h.pins()).unwrap();
    let restored = HekiExitHandler::new(HekiAbi::RfcV2, DenialPolicy::Gp)
        .with_pins(serde_json::from_str(&json).unwrap());
    assert_eq!(restored.pins(), h.pins());
}
