//! `heki_hypercall`: a hostile guest against heki-policy, end to end.

use super::common::{assert_error_message, heki_abi_from};
use super::input::Input;

use heki_policy::cap::HekiExitReasons;
use heki_policy::hypercall::decode_request;
use heki_policy::policy::Refusal;
use heki_policy::{
    decode_exit, encode_exit, CallerMode, CrCheck, CrWriteVerdict, DenialPolicy, ExitDecode,
    HekiAbi, HekiAction, HekiCap, HekiExit, HekiExitHandler, HekiVm, HostCrs, HypercallRegs,
    HypercallRet, KvmHcError, LockCrRequest, PinPolicy, PinnedCrs, RebootPolicy,
};
use std::time::Duration;

/// CR0.WP.
const WP: u64 = 1 << 16;

/// Both sides of one VM and what the property tracks between operations.
struct World {
    /// The ABI revision.
    abi: HekiAbi,
    /// The host's CR0 and CR4.
    host: HostCrs,
    /// The VMM's denial policy.
    denial_policy: DenialPolicy,
    /// The hypervisor side.
    vm: HekiVm,
    /// The VMM side.
    vmm: HekiExitHandler,
    /// Whether configure exits have been on for CR0 / CR4 since that register had no
    /// pins (then the VMM's mirror must be exact).
    mirrored_from_start: [bool; 2],
    /// The VMM's clock.
    now: Duration,
}

/// `heki_hypercall`: a hostile guest against the hypervisor-side pin policy and the
/// VMM-side exit handler, end to end.
///
/// Input: ABI byte, host CR0 and CR4 (u64), denial-policy byte, then operations:
/// KVM_ENABLE_CAP of a Heki cap, a `KVM_HC_LOCK_CR_UPDATE` hypercall (registers and
/// caller mode), a guest write to CR0/CR4, a reboot. Exits the hypervisor produces go
/// through the kvm_run bytes (encode, decode) to the VMM's handler.
///
/// Pins never shrink (except an explicit reset at reboot); a lock succeeds exactly as
/// the RFC says (pin non-zero, CR0 pins contain WP and are set on the host, CR4 pins
/// inside the pinnable mask, host-absent CR4 bits dropped, CPL > 0 gets -KVM_EPERM);
/// a CR write is denied exactly when it clears a pinned bit; the VMM's mirror never
/// claims a pin the hypervisor does not have, and equals it while configure exits are
/// on for both registers; hypercall return values read back the same on the guest side.
pub fn heki_hypercall(data: &[u8]) {
    let mut input = Input::new(data);
    let Some(abi) = heki_abi_from(input.u8()) else {
        return;
    };
    let host = HostCrs {
        cr0: input.u64(),
        cr4: input.u64(),
    };
    let denial_policy = match input.u8() % 3 {
        0 => DenialPolicy::Gp,
        1 => DenialPolicy::Shutdown,
        _ => DenialPolicy::AuditOnly,
    };
    let mut w = World {
        abi,
        host,
        denial_policy,
        vm: HekiVm::new(PinPolicy::new(abi)),
        vmm: HekiExitHandler::new(abi, denial_policy),
        mirrored_from_start: [false, false],
        now: Duration::ZERO,
    };
    let mut ops = 0;
    while !input.is_empty() && ops < 4096 {
        ops += 1;
        w.now += Duration::from_micros(u64::from(input.u8()));
        let before = w.vm.policy().pins();
        match input.u8() % 5 {
            0 => enable_cap(&mut w, &mut input, before),
            1 | 2 => {
                if !hypercall(&mut w, &mut input, before) {
                    continue;
                }
            }
            3 => cr_write(&mut w, &mut input),
            _ => {
                reboot(&mut w, &mut input, before);
                continue;
            }
        }
        check_pins(&mut w, before);
    }
}

/// KVM_ENABLE_CAP of a Heki cap: allowed exactly for an ABI with exits and a valid
/// argument; tracks whether the mirror must be exact from here on.
fn enable_cap(w: &mut World, input: &mut Input<'_>, before: PinnedCrs) {
    let abi = w.abi;
    let vm = &mut w.vm;
    let vmm = &mut w.vmm;
    let mirrored_from_start = &mut w.mirrored_from_start;
    let cap = if input.bool() {
        HekiCap::Configure
    } else {
        HekiCap::Denial
    };
    let arg = u64::from(input.u8() % 8);
    let result = vm.enable_cap(cap, arg);
    assert_eq!(
        result.is_ok(),
        abi.uapi().is_some() && arg & !3 == 0,
        "enable_cap({cap:?}, {arg:#x}) on {abi:?}: {result:?}"
    );
    if let Err(error) = &result {
        assert_error_message(error);
    }
    assert_eq!(HekiExitReasons::from_enable_arg(arg).is_ok(), arg & !3 == 0);
    for (i, cr) in [0u32, 4].into_iter().enumerate() {
        if !vm.caps().exits_for(HekiCap::Configure, cr) {
            mirrored_from_start[i] = false;
        } else if before.get(cr) == Some(0) && vmm.pins().get(cr) == Some(0) {
            mirrored_from_start[i] = true;
        }
    }
}

/// A hypercall from the guest; false when the hypervisor ignored it (not its number).
fn hypercall(w: &mut World, input: &mut Input<'_>, before: PinnedCrs) -> bool {
    let (abi, host, now) = (w.abi, w.host, w.now);
    let pinnable = abi.cr4_pinnable().bits();
    let vm = &mut w.vm;
    let vmm = &mut w.vmm;
    let selector = input.u8();
    let nr = if selector & 1 == 0 {
        abi.lock_cr_update_nr()
    } else {
        input.u64()
    };
    let a0 = match (selector >> 1) & 3 {
        0 => 0,
        1 => 4,
        2 => u64::from(input.u8()),
        _ => input.u64(),
    };
    let a1 = input.u64();
    let a2 = match (selector >> 3) & 3 {
        0 => 0,
        1 => 1,
        _ => input.u64(),
    };
    let mode = CallerMode {
        cpl: if selector & 0x20 != 0 {
            input.u8() % 4
        } else {
            0
        },
        long_mode: selector & 0x40 == 0,
    };
    let regs = HypercallRegs {
        nr,
        a0,
        a1,
        a2,
        a3: 0,
    };
    let seen = regs.as_seen_by_kvm(mode.long_mode);
    let request = decode_request(abi, regs, mode);
    let handled = vm.on_hypercall(regs, mode, host);
    let Some((outcome, exit)) = handled else {
        assert_eq!(request, Ok(None), "a handled hypercall was not decoded");
        assert_ne!(seen.nr, abi.lock_cr_update_nr(), "own hypercall ignored");
        assert_eq!(
            vm.policy().pins(),
            before,
            "an ignored hypercall changed pins"
        );
        return false;
    };
    assert_eq!(
        seen.nr,
        abi.lock_cr_update_nr(),
        "handled another hypercall"
    );
    if mode.cpl != 0 {
        assert_eq!(
            outcome.ret,
            HypercallRet::Error(KvmHcError::Perm),
            "CPL > 0"
        );
    }
    assert_eq!(
        outcome.ret == HypercallRet::Success,
        outcome.grant.is_some()
    );
    assert_eq!(
        outcome.refusal.is_some(),
        matches!(outcome.ret, HypercallRet::Error(_))
            && outcome.request != Some(LockCrRequest::VersionQuery),
        "refusal vs return value: {outcome:?}"
    );
    if let Some(refusal) = outcome.refusal {
        if let Refusal::Request(e) = refusal {
            assert_error_message(&e);
        } else if let Refusal::Lock(e) = refusal {
            assert_error_message(&e);
        }
    }
    // The RFC's rules for a lock from CPL 0 without flags.
    if mode.cpl == 0 && (seen.a2 == 0 || !abi.has_flags()) {
        let pin = seen.a1;
        let expected_ok = pin != 0
            && match seen.a0 {
                0 => pin & WP != 0 && pin & !host.cr0 == 0,
                4 => pin & !pinnable == 0,
                _ => false,
            };
        assert_eq!(
            outcome.ret == HypercallRet::Success,
            expected_ok,
            "lock CR{} pin {pin:#x} on {abi:?} (host {host:?}): {outcome:?}",
            seen.a0
        );
        if let Some(grant) = outcome.grant {
            let applied = if seen.a0 == 0 { pin } else { pin & host.cr4 };
            assert_eq!(grant.applied, applied, "applied pin");
            assert_eq!(grant.requested, pin);
            assert_eq!(grant.dropped_not_on_host, pin & !applied);
        }
    }
    if outcome.request == Some(LockCrRequest::VersionQuery) {
        assert_eq!(outcome.ret, HypercallRet::AbiVersion(1), "version query");
    }
    // The guest reads the return value back as the same thing.
    if let Some(request) = outcome.request {
        let rax = outcome.ret.to_rax(mode.long_mode);
        assert_eq!(
            request.interpret_return(rax, mode.long_mode),
            Ok(outcome.ret),
            "return value {rax:#x} of {request:?}"
        );
        if let Ok(guest_regs) = request.to_regs(abi) {
            assert_eq!(
                decode_request(abi, guest_regs, CallerMode::KERNEL_64),
                Ok(Some(request)),
                "guest-side registers do not decode to the request"
            );
        }
    }
    // A configure exit reports what was applied, through the kvm_run bytes.
    if let Some(exit) = exit {
        let grant = outcome.grant.expect("configure exit without a grant");
        assert_eq!(exit, HekiExit::configure(exit.reason(), grant.applied));
        deliver_heki_exit(abi, &exit, vmm, now);
    }
    true
}

/// A guest write to a control register, checked against the pins, and the denial
/// exit delivered to the VMM.
fn cr_write(w: &mut World, input: &mut Input<'_>) {
    let (abi, denial_policy, now) = (w.abi, w.denial_policy, w.now);
    let vm = &mut w.vm;
    let vmm = &mut w.vmm;
    let cr = match input.u8() % 3 {
        0 => 0,
        1 => 4,
        _ => u32::from(input.u8()),
    };
    let value = input.u64();
    let pinned = vm.policy().pins().get(cr).unwrap_or(0);
    let cleared = pinned & !value;
    let expected = if cleared == 0 {
        CrCheck::Allow
    } else {
        CrCheck::Deny { cleared }
    };
    assert_eq!(
        vm.policy().check_cr(cr, value),
        expected,
        "CR{cr} <- {value:#x}"
    );
    // Setting more bits never turns an allowed write into a denied one.
    if cleared == 0 {
        assert_eq!(
            vm.policy().check_cr(cr, value | input.u64()),
            CrCheck::Allow
        );
    }
    // (if-let rather than match: the enums are #[non_exhaustive].)
    let verdict = vm.on_cr_write(cr, value);
    if verdict == CrWriteVerdict::Allow {
        assert_eq!(cleared, 0);
    } else if let CrWriteVerdict::InjectGp { cleared: c } = verdict {
        assert_eq!(c, cleared);
        assert!(!vm.caps().exits_for(HekiCap::Denial, cr));
    } else if let CrWriteVerdict::ExitThenGp { exit, cleared: c } = verdict {
        {
            assert_eq!(c, cleared);
            assert!(vm.caps().exits_for(HekiCap::Denial, cr));
            let decision = deliver_heki_exit(abi, &exit, vmm, now).expect("denial exit decodes");
            assert_eq!(
                decision.denied_bits,
                vmm.pins().get(cr).unwrap_or(0) & !value,
                "denied bits"
            );
            assert_eq!(
                decision.action == HekiAction::Shutdown,
                denial_policy == DenialPolicy::Shutdown,
                "denial action under {denial_policy:?}"
            );
        }
    } else {
        panic!("unexpected CR write verdict {verdict:?}");
    }
}

/// A reboot: pins kept, or reset on both sides.
fn reboot(w: &mut World, input: &mut Input<'_>, before: PinnedCrs) {
    let vm = &mut w.vm;
    let vmm = &mut w.vmm;
    let mirrored_from_start = &mut w.mirrored_from_start;
    let policy = if input.bool() {
        RebootPolicy::ResetPins
    } else {
        RebootPolicy::KeepPins
    };
    let dropped = vm.policy_mut().on_reboot(policy);
    vmm.on_reboot(policy);
    match policy {
        RebootPolicy::KeepPins => {
            assert_eq!(dropped, PinnedCrs::EMPTY);
            assert_eq!(vm.policy().pins(), before, "KeepPins changed pins");
        }
        _ => {
            assert_eq!(dropped, before, "reset returned other pins");
            assert!(vm.policy().pins().is_empty(), "reset left pins");
            assert!(vmm.pins().is_empty(), "reset left mirrored pins");
            *mirrored_from_start = [0u32, 4].map(|cr| vm.caps().exits_for(HekiCap::Configure, cr));
        }
    }
}

/// After an operation: pins never shrink and obey the RFC, the mirror never claims
/// more than the pins and equals them where configure exits were on throughout.
fn check_pins(w: &mut World, before: PinnedCrs) {
    let (abi, host) = (w.abi, w.host);
    let pinnable = abi.cr4_pinnable().bits();
    let vm = &mut w.vm;
    let vmm = &mut w.vmm;
    let mirrored_from_start = &mut w.mirrored_from_start;
    let pins = vm.policy().pins();
    assert!(
        pins.contains(&before),
        "pins shrank: {before:?} -> {pins:?}"
    );
    assert_eq!(pins.cr0 & !host.cr0, 0, "CR0 pin not set on the host");
    assert_eq!(
        pins.cr4 & !(host.cr4 & pinnable),
        0,
        "CR4 pin outside host & pinnable"
    );
    if pins.cr0 != 0 {
        assert_ne!(pins.cr0 & WP, 0, "CR0 pinned without WP");
    }
    let mirror = vmm.pins();
    assert!(
        pins.contains(&mirror),
        "VMM mirror {mirror:?} beyond the pins {pins:?}"
    );
    if mirrored_from_start[0] {
        assert_eq!(mirror.cr0, pins.cr0, "CR0 mirror with configure exits on");
    }
    if mirrored_from_start[1] {
        assert_eq!(mirror.cr4, pins.cr4, "CR4 mirror with configure exits on");
    }
    let masks = heki_policy::required_intercepts(&pins);
    assert_eq!(
        (masks.cr0 & pins.cr0, masks.cr4 & pins.cr4),
        (pins.cr0, pins.cr4)
    );
}

/// Encodes `exit` into kvm_run union bytes as KVM would, decodes it as the VMM does
/// and hands it to the handler; without a selected ABI it must not be Heki.
fn deliver_heki_exit(
    abi: heki_policy::HekiAbi,
    exit: &HekiExit,
    vmm: &mut HekiExitHandler,
    now: Duration,
) -> Option<heki_policy::HekiDecision> {
    let mut union = [0u8; 256];
    let reason = encode_exit(abi, exit, &mut union).ok()?;
    match decode_exit(None, reason, &union) {
        Ok(ExitDecode::NotHeki(_)) => {}
        other => panic!("exit {reason} decoded as Heki without an ABI: {other:?}"),
    }
    match decode_exit(Some(abi), reason, &union) {
        Ok(ExitDecode::Heki(decoded)) => {
            assert_eq!(&decoded, exit, "exit round trip through kvm_run");
            Some(vmm.handle(&decoded, now))
        }
        other => panic!("exit {reason} of {abi:?} not decoded back: {other:?}"),
    }
}
