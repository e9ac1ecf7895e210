//! On this (upstream) host's KVM the probe must answer "not supported" for every Heki
//! revision, even though KVM_CHECK_EXTENSION answers non-zero for some of the collided
//! cap numbers.
#![cfg(feature = "kvm")]

use heki_policy::abi::upstream_cap_name;
use heki_policy::exit::KVM_RUN_EXIT_UNION_SIZE;
use heki_policy::kvm::{decode_run, exit_union_bytes, probe, write_exit_union};
use heki_policy::{ExitDecode, HekiAbi, HekiExit, HekiExitReason, HekiSupport, NotSupported};
use kvm_ioctls::Kvm;

fn open_kvm() -> Option<Kvm> {
    test_support::kvm_or_skip()
}

#[test]
fn probe_is_not_fooled_by_upstream_numbers() {
    let Some(kvm) = open_kvm() else { return };
    let vm = kvm.create_vm().expect("KVM_CREATE_VM");
    let mut nonzero = Vec::new();
    for cap in 235..=237u32 {
        let v = vm.check_extension_raw(cap.into());
        println!(
            "KVM_CHECK_EXTENSION({cap} = {:?}) = {v}",
            upstream_cap_name(cap)
        );
        if v != 0 {
            nonzero.push(cap);
        }
    }
    // On upstream kernels that have these caps (>= 6.8/6.10), some answer non-zero: a
    // naive probe would report Heki here.
    println!("collided caps answering non-zero: {nonzero:?}");
    for abi in HekiAbi::ALL {
        let support = probe(&kvm, abi).expect("probe");
        println!("{abi}: {support:?}");
        let Some(u) = abi.uapi() else {
            assert_eq!(
                support,
                HekiSupport::NotSupported(NotSupported::NoUapi { abi })
            );
            continue;
        };
        // The first cap of the revision that does not answer exactly CR0 | CR4 (3) is
        // named, with the host's real answer and upstream's name for the number.
        let (cap, value) = [u.cap_configure(), u.cap_denial()]
            .into_iter()
            .map(|cap| (cap, vm.check_extension_raw(cap.into()) as i64))
            .find(|&(_, v)| v != 3)
            .expect("an upstream kernel answers 3 for both Heki caps of a revision");
        assert_eq!(
            support,
            HekiSupport::NotSupported(NotSupported::CheckExtension {
                cap,
                value,
                upstream: upstream_cap_name(cap),
            }),
            "upstream KVM reported as Heki {abi}"
        );
    }
}

/// The whole enable path on this host's KVM: probe, then `kvm::enable_cap` with the
/// token. Upstream KVM has no Heki, so the typed "not supported by this host" answer
/// comes back and no token exists to enable with; on a Heki kernel the enable must
/// succeed. Either way the test asserts an outcome, it never skips.
#[test]
fn enable_path_on_this_host_gives_the_typed_answer() {
    use heki_policy::kvm::enable_cap;
    use heki_policy::{HekiCap, HekiExitReasons};
    let Some(kvm) = open_kvm() else { return };
    for abi in [HekiAbi::RfcV2, HekiAbi::RfcV3] {
        match probe(&kvm, abi).expect("probe") {
            HekiSupport::Supported(proof) => {
                let vm = kvm.create_vm().expect("KVM_CREATE_VM");
                for cap in [HekiCap::Configure, HekiCap::Denial] {
                    enable_cap(&vm, &proof, cap, HekiExitReasons::VALID)
                        .unwrap_or_else(|e| panic!("{abi} {cap:?}: {e}"));
                }
            }
            HekiSupport::NotSupported(why) => {
                println!("{abi}: not supported by this host: {why}");
                assert!(
                    matches!(why, NotSupported::CheckExtension { value, .. } if value != 3),
                    "{abi}: {why:?}"
                );
            }
            other => panic!("{abi}: {other:?}"),
        }
    }
}

#[test]
fn kvm_run_union_round_trip_through_bindings() {
    let Some(kvm) = open_kvm() else { return };
    let vm = kvm.create_vm().expect("KVM_CREATE_VM");
    let mut vcpu = vm.create_vcpu(0).expect("KVM_CREATE_VCPU");
    let run = vcpu.get_kvm_run();
    let exit = HekiExit::denial(HekiExitReason::Cr0, 0x8000_0031);
    write_exit_union(run, &exit.to_bytes());
    // Not run: exit_reason is still what KVM left (0); set the v3 denial number.
    run.exit_reason = 41;
    assert_eq!(
        decode_run(Some(HekiAbi::RfcV3), run),
        Ok(ExitDecode::Heki(exit))
    );
    // Without a selected ABI, 41 is upstream's KVM_EXIT_ARM_SEA, not Heki.
    assert!(
        matches!(decode_run(None, run), Ok(ExitDecode::NotHeki(n)) if n.upstream_name == Some("KVM_EXIT_ARM_SEA"))
    );
    let bytes = exit_union_bytes(run);
    assert_eq!(bytes.len(), KVM_RUN_EXIT_UNION_SIZE);
    assert_eq!(&bytes[..64], &exit.to_bytes());
}

/// The deeper evidence holds on its own too: on an upstream kernel none of the collided
/// caps accepts KVM_ENABLE_CAP(args[0] = 0) the way a Heki cap does. The errno is
/// EINVAL: 235/236 are query-only caps (`kvm_vm_ioctl_enable_cap`'s default case), 237
/// (`KVM_CAP_X86_APIC_BUS_CYCLES_NS`) refuses 0 ns (Linux 6.18 `kvm_vm_ioctl_enable_cap`).
#[test]
fn collided_caps_do_not_behave_like_heki_caps() {
    use heki_policy::probe::CapQuery;
    let Some(kvm) = open_kvm() else { return };
    let mut q = heki_policy::kvm::KvmCapQuery::new(&kvm).expect("scratch VM");
    for abi in [HekiAbi::RfcV2, HekiAbi::RfcV3] {
        let u = abi.uapi().expect("uapi");
        for cap in [u.cap_configure(), u.cap_denial()] {
            let r = q.enable_on_scratch_vm(cap, 0);
            println!("{abi}: KVM_ENABLE_CAP({cap}, 0) = {r:?}");
            assert_eq!(
                r,
                Err(heki_policy::probe::EINVAL),
                "{abi}: cap {cap} ({:?})",
                upstream_cap_name(cap)
            );
        }
    }
}
