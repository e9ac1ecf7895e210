//! The probe against simulated kernels: a Heki kernel, this kind of upstream host, and
//! adversarial upstream answers.

use heki_policy::abi::HekiCap;
use heki_policy::cap::HekiCapState;
use heki_policy::probe::{probe, CapQuery, NotSupported, EINVAL, SENTINEL_SPAN};
use heki_policy::{HekiAbi, HekiSupport};
use std::collections::HashMap;

/// A kernel described by its KVM_CHECK_EXTENSION answers and an enable_cap rule.
struct FakeKernel {
    caps: HashMap<u32, i64>,
    enable: Box<dyn FnMut(u32, u64) -> Result<(), i32>>,
    enables: Vec<(u32, u64)>,
}

impl CapQuery for FakeKernel {
    fn check_extension(&mut self, cap: u32) -> i64 {
        self.caps.get(&cap).copied().unwrap_or(0)
    }
    fn enable_on_scratch_vm(&mut self, cap: u32, arg: u64) -> Result<(), i32> {
        self.enables.push((cap, arg));
        (self.enable)(cap, arg)
    }
}

fn kernel(
    caps: &[(u32, i64)],
    enable: impl FnMut(u32, u64) -> Result<(), i32> + 'static,
) -> FakeKernel {
    FakeKernel {
        caps: caps.iter().copied().collect(),
        enable: Box::new(enable),
        enables: Vec::new(),
    }
}

/// A kernel with revision `abi` applied: the caps behave as in RFC v2 03/19.
fn heki_kernel(abi: HekiAbi) -> FakeKernel {
    let u = abi.uapi().unwrap();
    let (conf, den) = (u.cap_configure(), u.cap_denial());
    let mut state = HekiCapState::new();
    kernel(&[(234, 1), (conf, 3), (den, 3)], move |cap, arg| {
        let which = if cap == conf {
            HekiCap::Configure
        } else if cap == den {
            HekiCap::Denial
        } else {
            return Err(EINVAL);
        };
        state.enable(which, arg).map_err(|_| EINVAL)
    })
}

/// Upstream answers as seen on this host (Linux 6.18): VM_TYPES=1, PRE_FAULT_MEMORY=0,
/// APIC_BUS_CYCLES_NS=1, X86_GUEST_MODE=1; enabling any of them with 0 is EINVAL.
fn upstream_6_18() -> FakeKernel {
    kernel(
        &[(234, 1), (235, 1), (236, 0), (237, 1), (238, 1)],
        |_, _| Err(EINVAL),
    )
}

#[test]
fn heki_kernels_are_recognised() {
    for abi in [HekiAbi::RfcV2, HekiAbi::RfcV3] {
        let mut k = heki_kernel(abi);
        let s = probe(abi, &mut k).supported().expect("supported");
        assert_eq!(s.abi(), abi);
        // Both caps were exercised with 0 and an unknown bit, on the scratch VM.
        assert_eq!(k.enables.len(), 4);
    }
}

#[test]
fn wrong_revision_is_not_supported() {
    // A v2 kernel probed as v3: 237 answers 0.
    let mut k = heki_kernel(HekiAbi::RfcV2);
    assert!(matches!(
        probe(HekiAbi::RfcV3, &mut k),
        HekiSupport::NotSupported(NotSupported::CheckExtension { .. })
    ));
    // A v3 kernel probed as v2: 235 does not answer 3.
    let mut k = heki_kernel(HekiAbi::RfcV3);
    assert!(probe(HekiAbi::RfcV2, &mut k).supported().is_none());
}

#[test]
fn v1_has_nothing_to_probe() {
    let mut k = heki_kernel(HekiAbi::RfcV2);
    assert_eq!(
        probe(HekiAbi::RfcV1, &mut k),
        HekiSupport::NotSupported(NotSupported::NoUapi {
            abi: HekiAbi::RfcV1
        })
    );
}

#[test]
fn upstream_host_is_not_heki() {
    for abi in [HekiAbi::RfcV2, HekiAbi::RfcV3] {
        let mut k = upstream_6_18();
        let HekiSupport::NotSupported(NotSupported::CheckExtension {
            cap,
            value,
            upstream,
        }) = probe(abi, &mut k)
        else {
            panic!("upstream host reported as Heki {abi}");
        };
        assert!(value != 3);
        assert!(upstream.is_some(), "cap {cap} has an upstream name");
        assert!(
            k.enables.is_empty(),
            "nothing enabled on an upstream kernel"
        );
    }
}

#[test]
fn upstream_answering_the_heki_mask_is_caught_by_numbering() {
    // VM_TYPES = 3 (with SW_PROTECTED_VM) and a PRE_FAULT_MEMORY that happens to say 3:
    // check-extension alone would be fooled.
    let mut k = kernel(&[(235, 3), (236, 3), (237, 1), (238, 1)], |_, _| {
        Err(EINVAL)
    });
    assert_eq!(
        probe(HekiAbi::RfcV2, &mut k),
        HekiSupport::NotSupported(NotSupported::UpstreamNumbering {
            cap: 237,
            value: 1,
            upstream: Some("KVM_CAP_X86_APIC_BUS_CYCLES_NS")
        })
    );
    assert!(k.enables.is_empty());
    // Every sentinel is consulted, not only the first.
    let mut k = kernel(
        &[(236, 3), (237, 3), (238 + SENTINEL_SPAN - 1, 1)],
        |_, _| Err(EINVAL),
    );
    assert!(matches!(
        probe(HekiAbi::RfcV3, &mut k),
        HekiSupport::NotSupported(NotSupported::UpstreamNumbering { cap: 240, .. })
    ));
}

#[test]
fn enable_behaviour_is_required() {
    // Check-extension and numbering fooled, but enable(0) fails as upstream's would.
    let mut k = kernel(&[(235, 3), (236, 3)], |_, _| Err(EINVAL));
    assert_eq!(
        probe(HekiAbi::RfcV2, &mut k),
        HekiSupport::NotSupported(NotSupported::EnableRejected {
            cap: 235,
            errno: EINVAL,
            upstream: Some("KVM_CAP_VM_TYPES")
        })
    );
    // A cap that accepts anything is not a Heki cap either.
    let mut k = kernel(&[(236, 3), (237, 3)], |_, _| Ok(()));
    assert_eq!(
        probe(HekiAbi::RfcV3, &mut k),
        HekiSupport::NotSupported(NotSupported::UnknownBitsAccepted {
            cap: 236,
            result: Ok(())
        })
    );
    // Nor one that refuses unknown bits with another errno.
    let mut k = kernel(&[(236, 3), (237, 3)], |_, arg| {
        if arg == 0 {
            Ok(())
        } else {
            Err(6)
        }
    });
    assert!(matches!(
        probe(HekiAbi::RfcV3, &mut k),
        HekiSupport::NotSupported(NotSupported::UnknownBitsAccepted { result: Err(6), .. })
    ));
}

#[test]
fn negative_or_odd_answers_are_rejected() {
    for v in [-1, 1, 2, 7, i64::MAX] {
        let mut k = kernel(&[(235, v), (236, 3)], |_, _| Ok(()));
        assert!(
            probe(HekiAbi::RfcV2, &mut k).supported().is_none(),
            "value {v}"
        );
    }
}

/// `KVM_ENABLE_CAP` as upstream Linux (6.11+) answers it for the collided numbers:
/// 235 (VM_TYPES) and 236 (PRE_FAULT_MEMORY) are query-only, so the default `-EINVAL`;
/// 237 (APIC_BUS_CYCLES_NS) refuses 0, and on a VM without an in-kernel irqchip (the
/// scratch VM) refuses anything else with `-ENXIO`. With an irqchip a non-zero value
/// would set the APIC bus period: the one enable that could change a VM.
fn upstream_enable(cap: u32, arg: u64) -> Result<(), i32> {
    const ENXIO: i32 = 6;
    match (cap, arg) {
        (237, 0) => Err(EINVAL),
        (237, _) => Err(ENXIO),
        _ => Err(EINVAL),
    }
}

#[test]
fn enable_step_never_sends_a_state_changing_value_to_upstream_caps() {
    // Worst case: an (impossible upstream) kernel that passes steps 2 and 3 for both
    // revisions, with upstream's enable semantics. The probe must stop at the first
    // refused enable(0) and never send a non-zero value to 237.
    for (abi, caps) in [
        (HekiAbi::RfcV2, [(235u32, 3i64), (236, 3)]),
        (HekiAbi::RfcV3, [(236, 3), (237, 3)]),
    ] {
        let mut k = kernel(&caps, upstream_enable);
        let HekiSupport::NotSupported(NotSupported::EnableRejected { cap, errno, .. }) =
            probe(abi, &mut k)
        else {
            panic!("{abi}: upstream enable semantics passed the probe");
        };
        assert_eq!((cap, errno), (caps[0].0, EINVAL));
        assert_eq!(
            k.enables,
            vec![(caps[0].0, 0)],
            "{abi}: only enable(0), once"
        );
    }
    // The realistic upstream answers never reach the enable step at all.
    for abi in [HekiAbi::RfcV2, HekiAbi::RfcV3] {
        let mut k = upstream_6_18();
        assert!(probe(abi, &mut k).supported().is_none());
        assert!(k.enables.is_empty());
    }
}

/// The enable path's request (`HekiSupported::enable_request`, which `kvm::enable_cap`
/// sends as is): the revision's cap number, `args[0]` = exactly the reason mask, every
/// other field 0 (RFC v2 03/19 `kvm_vm_ioctl_enable_cap` reads `cap->args[0]`), and the
/// simulated Heki kernel given that request ends with exactly those reasons enabled.
#[test]
fn enable_request_carries_the_cap_number_and_the_reason_mask() {
    use heki_policy::cap::CapError;
    use heki_policy::HekiExitReasons;
    for abi in [HekiAbi::RfcV2, HekiAbi::RfcV3] {
        let proof = match probe(abi, &mut heki_kernel(abi)) {
            HekiSupport::Supported(p) => p,
            other => panic!("{abi}: {other:?}"),
        };
        let u = abi.uapi().unwrap();
        for cap in [HekiCap::Configure, HekiCap::Denial] {
            for reasons in [
                HekiExitReasons::empty(),
                HekiExitReasons::CR0,
                HekiExitReasons::CR4,
                HekiExitReasons::VALID,
            ] {
                let req = proof.enable_request(cap, reasons).unwrap();
                assert_eq!(req.cap, u.cap(cap), "{abi} {cap:?}");
                assert_eq!(req.args, [reasons.bits(), 0, 0, 0], "{abi} {cap:?}");
                assert_eq!(req.flags, 0);
                assert_eq!(req.pad, [0; 64]);
                // What a Heki kernel does with exactly this request.
                let mut kernel = HekiCapState::new();
                let which = if req.cap == u.cap_configure() {
                    HekiCap::Configure
                } else {
                    HekiCap::Denial
                };
                kernel.enable(which, req.args[0]).unwrap();
                assert_eq!(kernel.enabled(cap), reasons, "{abi} {cap:?}");
            }
            // An unknown reason bit (4) is refused before any ioctl, with the bits named.
            let bad = HekiExitReasons::from_bits_retain(0b111);
            assert_eq!(
                proof.enable_request(cap, bad),
                Err(CapError::UnknownReasons { arg: 7, unknown: 4 })
            );
        }
    }
}
