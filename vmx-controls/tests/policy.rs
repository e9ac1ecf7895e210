// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The default policy equals the required/optional table of reference §3.2 (current
//! Linux `KVM_REQUIRED_VMX_*` / `KVM_OPTIONAL_VMX_*`, with the CET pair, without FRED),
//! written here as the bit numbers the reference lists; the x86_64-only bits, the FRED
//! and PROVE_VE opt-ins, and the pair tables each policy checks.

use vmx_controls::*;

fn bits(list: &[u32]) -> u64 {
    list.iter().fold(0, |m, b| m | (1u64 << b))
}

fn req_opt<T: ControlBits>(set: &ControlSet<T>) -> (u64, u64) {
    (set.required.raw_u64(), set.optional.raw_u64())
}

#[test]
fn linux_x86_64_matches_reference_table() {
    let p = VmcsPolicy::linux();
    // pin: EXT_INTR_MASK(0), NMI_EXITING(3) | VIRTUAL_NMIS(5), POSTED_INTR(7), TIMER(6)
    assert_eq!(req_opt(&p.pin), (bits(&[0, 3]), bits(&[5, 7, 6])));
    // primary: HLT(7) CR3_LOAD(15) CR3_STORE(16) UNCOND_IO(24) MOV_DR(23) TSC_OFFSET(3)
    // MWAIT(10) MONITOR(29) INVLPG(9) RDPMC(11) INTR_WINDOW(2) + x86_64 CR8_LOAD(19)
    // CR8_STORE(20) | RDTSC(12) TPR_SHADOW(21) IO_BITMAPS(25) MTF(27) MSR_BITMAPS(28)
    // NMI_WINDOW(22) PAUSE(30) SECONDARY(31) TERTIARY(17)
    assert_eq!(
        req_opt(&p.primary),
        (
            bits(&[7, 15, 16, 24, 23, 3, 10, 29, 9, 11, 2, 19, 20]),
            bits(&[12, 21, 25, 27, 28, 22, 30, 31, 17])
        )
    );
    // secondary: nothing required; EPT_VIOLATION_VE (18) only with PROVE_VE.
    assert_eq!(
        req_opt(&p.secondary),
        (
            0,
            bits(&[
                0, 4, 6, 5, 1, 7, 10, 2, 3, 12, 8, 9, 14, 20, 16, 11, 17, 25, 26, 24, 19, 13, 30,
                31, 15
            ])
        )
    );
    assert_eq!(req_opt(&p.tertiary), (0, bits(&[4])));
    // exit: SAVE_DEBUG(2) ACK_INTR(15) + x86_64 HOST_ADDR_SPACE_SIZE(9) | PERF_GLOBAL(12)
    // SAVE_PAT(18) LOAD_PAT(19) SAVE_EFER(20) SAVE_TIMER(22) LOAD_EFER(21)
    // CLEAR_BNDCFGS(23) PT_CONCEAL_PIP(24) CLEAR_RTIT(25) LOAD_CET_STATE(28)
    assert_eq!(
        req_opt(&p.exit),
        (
            bits(&[2, 15, 9]),
            bits(&[12, 18, 19, 20, 22, 21, 23, 24, 25, 28])
        )
    );
    assert_eq!(req_opt(&p.secondary_exit), (0, 0), "no FRED by default");
    // entry: LOAD_DEBUG(2) + x86_64 IA32E_MODE(9) | PERF_GLOBAL(13) PAT(14) EFER(15)
    // BNDCFGS(16) PT_CONCEAL_PIP(17) RTIT(18) CET(20)
    assert_eq!(
        req_opt(&p.entry),
        (bits(&[2, 9]), bits(&[13, 14, 15, 16, 17, 18, 20]))
    );
    assert_eq!(p.pairs, &VMCS_ENTRY_EXIT_PAIRS[..]);
    assert_eq!(p.on_inconsistent, OnInconsistent::Error);
    assert_eq!(p.host, HostMode::X86_64);
    assert_eq!(
        p.cpuid,
        CpuidInfo::default(),
        "no CPUID-driven fix-up by default"
    );
    assert_eq!(VmcsPolicy::default(), p);
}

#[test]
fn i386_drops_exactly_the_x86_64_only_requirements() {
    let p = VmcsPolicy::linux();
    let q = VmcsPolicy::linux_i386();
    assert_eq!(q.host, HostMode::I386);
    assert_eq!(
        p.primary.required.raw_u64() ^ q.primary.required.raw_u64(),
        bits(&[19, 20])
    );
    assert_eq!(
        p.exit.required.raw_u64() ^ q.exit.required.raw_u64(),
        bits(&[9])
    );
    assert_eq!(
        p.entry.required.raw_u64() ^ q.entry.required.raw_u64(),
        bits(&[9])
    );
    // Everything else is the same.
    assert_eq!(p.primary.optional, q.primary.optional);
    assert_eq!(p.pin, q.pin);
    assert_eq!(p.secondary, q.secondary);
    assert_eq!(p.exit.optional, q.exit.optional);
    assert_eq!(p.entry.optional, q.entry.optional);
}

#[test]
fn fred_and_prove_ve_are_opt_in_additions() {
    let p = VmcsPolicy::linux();
    let f = VmcsPolicy::linux().with_fred();
    // FRED: exit ACTIVATE_SECONDARY_CONTROLS(31), secondary exit SAVE/LOAD_FRED(0, 1),
    // entry LOAD_IA32_FRED(23), and the FRED pair table.
    assert_eq!(
        f.exit.optional.raw_u64() ^ p.exit.optional.raw_u64(),
        bits(&[31])
    );
    assert_eq!(req_opt(&f.secondary_exit), (0, bits(&[0, 1])));
    assert_eq!(
        f.entry.optional.raw_u64() ^ p.entry.optional.raw_u64(),
        bits(&[23])
    );
    assert_eq!(f.pairs, &ALL_ENTRY_EXIT_PAIRS[..]);
    assert_eq!(
        (f.pin, f.primary, f.secondary),
        (p.pin, p.primary, p.secondary)
    );
    assert_eq!(f.exit.required, p.exit.required);
    assert_eq!(f.entry.required, p.entry.required);

    let v = VmcsPolicy::linux().with_prove_ve();
    assert_eq!(
        v.secondary.optional.raw_u64() ^ p.secondary.optional.raw_u64(),
        bits(&[18])
    );
    assert_eq!(v.pairs, p.pairs);
}

/// Linux 6.18 `setup_vmcs_config` (arch/x86/kvm/vmx/vmx.c) asks for the VM-exit controls
/// of `KVM_OPTIONAL_VMX_VM_EXIT_CONTROLS`; SAVE_IA32_PERF_GLOBAL_CTRL (bit 30) only joins
/// that list with the mediated-PMU series posted after 6.18.
#[test]
fn linux_exit_optional_is_6_18_without_save_perf_global_ctrl() {
    use vmx_controls::ExitControls as X;
    let p = vmx_controls::VmcsPolicy::linux();
    assert!(!p.exit.optional.contains(X::SAVE_IA32_PERF_GLOBAL_CTRL));
    assert_eq!(
        p.exit.optional,
        X::LOAD_IA32_PERF_GLOBAL_CTRL
            | X::SAVE_IA32_PAT
            | X::LOAD_IA32_PAT
            | X::SAVE_IA32_EFER
            | X::SAVE_VMX_PREEMPTION_TIMER
            | X::LOAD_IA32_EFER
            | X::CLEAR_BNDCFGS
            | X::PT_CONCEAL_PIP
            | X::CLEAR_IA32_RTIT_CTL
            | X::LOAD_CET_STATE
    );
}
