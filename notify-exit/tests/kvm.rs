// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Integration tests on a real `/dev/kvm`.
//!
//! The machine these were written on has no Notify VM exit (no VMX in the nested guest's
//! CPU), so the notify cap is expected to be absent there; the tests check whichever
//! answer the host gives is handled as documented.

#![cfg(feature = "kvm")]

use kvm_bindings::{kvm_userspace_memory_region, KVM_VCPUEVENT_VALID_TRIPLE_FAULT};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use notify_exit::kvm::{
    exit_from_kvm_run, probe_kvm, probe_vm, CapOutcome, KvmSetupError, PreVcpuVm, Requirement,
};
use notify_exit::{
    decode, NotifyAction, NotifyCapArg, NotifyConfig, NotifyExit, NotifyFlags, NotifyHandler,
    NotifyPolicy, NotifyVmexitMode, StopReason, KVM_CAP_X86_NOTIFY_VMEXIT, KVM_EXIT_NOTIFY,
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

fn kvm() -> Option<Kvm> {
    test_support::kvm_or_skip()
}

const GUEST_MEM: usize = 0x10000;
const CODE: u64 = 0x1000;

/// A real-mode guest: `hlt` at 0x1000, then a jump back to it.
fn guest_vcpu(vm: &VmFd, mem: &GuestMemoryMmap) -> VcpuFd {
    // hlt; jmp short -3 (back to the hlt)
    mem.write_slice(&[0xf4, 0xeb, 0xfd], GuestAddress(CODE))
        .expect("write guest code");
    let host = mem
        .get_host_address(GuestAddress(0))
        .expect("host address of guest memory");
    let region = kvm_userspace_memory_region {
        slot: 0,
        guest_phys_addr: 0,
        memory_size: GUEST_MEM as u64,
        userspace_addr: host as u64,
        flags: 0,
    };
    // SAFETY: `host` is the start of a GUEST_MEM-byte anonymous mapping owned by `mem`,
    // which every caller keeps alive for as long as the VM (and its vCPU) is used; the
    // slot does not overlap any other.
    unsafe { vm.set_user_memory_region(region) }.expect("KVM_SET_USER_MEMORY_REGION");

    let vcpu = vm.create_vcpu(0).expect("KVM_CREATE_VCPU");
    let mut sregs = vcpu.get_sregs().expect("KVM_GET_SREGS");
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    vcpu.set_sregs(&sregs).expect("KVM_SET_SREGS");
    let mut regs = vcpu.get_regs().expect("KVM_GET_REGS");
    regs.rip = CODE;
    regs.rflags = 2;
    vcpu.set_regs(&regs).expect("KVM_SET_REGS");
    vcpu
}

fn guest_memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), GUEST_MEM)]).expect("guest memory")
}

/// Applies a SynthesizeTripleFault action the way a VMM does (the reference VMM goes
/// through the vcpu-events crate): KVM_GET_VCPU_EVENTS, flag + pending, KVM_SET_VCPU_EVENTS.
fn request_triple_fault(vcpu: &VcpuFd) -> Result<(), kvm_ioctls::Error> {
    let mut events = vcpu.get_vcpu_events()?;
    events.flags |= KVM_VCPUEVENT_VALID_TRIPLE_FAULT;
    events.triple_fault.pending = 1;
    vcpu.set_vcpu_events(&events)
}

#[test]
fn probing_and_enabling_notify_gives_a_typed_outcome() {
    let Some(kvm) = kvm() else { return };
    let caps = probe_kvm(&kvm);
    println!("host caps: {caps:?}");
    let config = NotifyConfig::new(NotifyVmexitMode::Run, 0);

    let mut vm = PreVcpuVm::create(&kvm).expect("KVM_CREATE_VM");
    assert_eq!(vm.caps(), caps, "system and VM fds agree");
    let outcome = vm
        .enable_notify_vmexit(&config, Requirement::Optional)
        .expect("optional enable never fails on the host's answer");
    if caps.notify_vmexit {
        assert_eq!(outcome, CapOutcome::Enabled);
    } else {
        // This machine: no Notify VM exit (AMD, or nested without it).
        assert_eq!(outcome, CapOutcome::NotSupportedByHost);
        match vm.enable_notify_vmexit(&config, Requirement::Required) {
            Err(KvmSetupError::NotSupportedByHost { cap }) => {
                assert_eq!(cap, KVM_CAP_X86_NOTIFY_VMEXIT)
            }
            other => panic!("required enable on an unsupported host: {other:?}"),
        }
    }
    // Disable never calls KVM, even when required.
    assert_eq!(
        vm.enable_notify_vmexit(
            &NotifyConfig::new(NotifyVmexitMode::Disable, 0),
            Requirement::Required
        )
        .expect("disable"),
        CapOutcome::NotRequested
    );
    let outcome = vm
        .enable_notify_vmexit(&config, Requirement::Optional)
        .unwrap();
    let (vm, setup) = vm.finish();
    assert_eq!(setup.notify_vmexit, outcome);
    assert_eq!(
        setup.notify_arg,
        outcome
            .is_enabled()
            .then(|| NotifyCapArg::for_config(&config))
            .flatten()
    );
    // The VM is usable after finish(): vCPUs can now be created.
    vm.create_vcpu(0).expect("KVM_CREATE_VCPU after finish");
    if !caps.notify_vmexit {
        assert_eq!(
            setup.policy(CapOutcome::NotRequested).mode,
            NotifyVmexitMode::Disable
        );
        assert!(!setup.needs_triple_fault_event());
    }
}

/// The triple-fault event cap is vcpu-events' (`vcpu_events::kvm::enable_event_caps`);
/// notify-exit probes it and takes the outcome. Enabled after vCPUs exist (KVM reads it
/// at KVM_SET_VCPU_EVENTS time), the policy built from that outcome synthesizes.
#[test]
fn the_triple_fault_event_outcome_from_vcpu_events_drives_the_policy() {
    let Some(kvm) = kvm() else { return };
    assert!(
        probe_kvm(&kvm).triple_fault_event,
        "KVM_CAP_X86_TRIPLE_FAULT_EVENT needs Linux >= 6.0"
    );
    let (vm, setup) = PreVcpuVm::create(&kvm).unwrap().finish();
    assert!(probe_vm(&vm).triple_fault_event);
    let _vcpu = vm.create_vcpu(0).unwrap();
    let ev = vcpu_events::kvm::enable_event_caps(&vm).unwrap();
    assert_eq!(ev.triple_fault_event, CapOutcome::Enabled);
    let policy = notify_exit::kvm::NotifySetup::new(setup.config, CapOutcome::Enabled)
        .policy(ev.triple_fault_event);
    assert!(policy.triple_fault_event_enabled);
}

#[test]
fn context_invalid_notify_exit_ends_in_kvm_exit_shutdown() {
    let Some(kvm) = kvm() else { return };
    let mem = guest_memory();
    let mut pre = PreVcpuVm::create(&kvm).unwrap();
    let config: NotifyConfig = "notify-vmexit=run,notify-window=0".parse().unwrap();
    pre.enable_notify_vmexit(&config, Requirement::Optional)
        .unwrap();
    let (vm, _setup) = pre.finish();
    let mut vcpu = guest_vcpu(&vm, &mem);
    // The triple-fault event cap, through its owner (vcpu-events).
    let ev = vcpu_events::kvm::enable_event_caps(&vm).expect("enable the event caps");
    assert_eq!(ev.triple_fault_event, CapOutcome::Enabled);

    // The guest runs: first exit is its hlt (no in-kernel irqchip).
    assert!(matches!(vcpu.run().expect("KVM_RUN"), VcpuExit::Hlt));
    // A real kvm_run that is not a notify exit is refused by the decoder.
    assert!(exit_from_kvm_run(vcpu.get_kvm_run()).is_err());

    // A fake "context invalid" notify exit, fed as a VMM would on Unsupported(37).
    let union = NotifyExit::new(NotifyFlags::CONTEXT_INVALID).to_union_bytes();
    // The mode as configured (this host may lack the exit itself; the fake exit stands in).
    let policy = NotifyPolicy::new(config.mode, ev.triple_fault_event.is_enabled());
    let mut handler = NotifyHandler::new(0, policy);
    let decision = handler
        .handle_raw(KVM_EXIT_NOTIFY, &union, std::time::Duration::from_nanos(1))
        .unwrap();
    assert_eq!(decision.action, NotifyAction::SynthesizeTripleFault);

    // Apply it; the next KVM_RUN must shut the vCPU down.
    request_triple_fault(&vcpu).expect("KVM_SET_VCPU_EVENTS with a pending triple fault");
    let exit = vcpu.run().expect("KVM_RUN");
    assert!(matches!(exit, VcpuExit::Shutdown), "got {exit:?}");
    assert_eq!(handler.stats().triple_faults, 1);
    drop(vcpu);
    drop(vm);
    drop(mem);
}

#[test]
fn without_the_triple_fault_cap_the_policy_stops_and_kvm_would_refuse() {
    let Some(kvm) = kvm() else { return };
    let mem = guest_memory();
    // Nobody enabled KVM_CAP_X86_TRIPLE_FAULT_EVENT (vcpu-events' enable_event_caps
    // was not called): the outcome the policy gets is NotRequested.
    let (vm, _setup) = PreVcpuVm::create(&kvm).unwrap().finish();
    let triple_fault_event = CapOutcome::NotRequested;
    let vcpu = guest_vcpu(&vm, &mem);

    let exit = decode(
        KVM_EXIT_NOTIFY,
        &NotifyExit::new(NotifyFlags::CONTEXT_INVALID).to_union_bytes(),
    )
    .unwrap();
    let action =
        NotifyPolicy::new(NotifyVmexitMode::Run, triple_fault_event.is_enabled()).decide(exit);
    assert!(matches!(
        action,
        NotifyAction::StopInternalError {
            reason: StopReason::NoTripleFaultEvent,
            ..
        }
    ));
    // The fallback is needed: KVM rejects the pending triple fault without the cap.
    let err = request_triple_fault(&vcpu).expect_err("KVM must refuse without the cap");
    assert_eq!(err.errno(), libc_einval());
    drop(vcpu);
    drop(vm);
    drop(mem);
}

/// EINVAL (22 on every Linux architecture).
fn libc_einval() -> i32 {
    22
}
