// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Snapshot and restore under fire on real /dev/kvm (`run --snapshot-every`,
//! `--snapshot-file`, `resume`): after every N-th exit the vCPU
//! (vcpu-events' `kvm::snapshot::capture`) and guest memory are saved, the VM
//! is destroyed and the snapshot restored into a fresh VM
//! (`kvm::snapshot::restore`: regs, sregs, events), and the guests' own
//! counters prove no event was lost or duplicated. Each event kind is caught
//! in flight by some snapshot: an injected-not-delivered interrupt
//! (KVM_INTERRUPT), queued vectors and a requested window (the injector), an
//! injected #GP with its error code, a pending #PF with its CR2 payload
//! (KVM_CAP_EXCEPTION_PAYLOAD), a pending NMI, a pending triple fault
//! (KVM_CAP_X86_TRIPLE_FAULT_EVENT). Skipped when /dev/kvm cannot be opened,
//! unless VMM_TEST_REQUIRE_KVM=1.

#[allow(dead_code)] // only part of the shared helpers is used here.
mod common;

use std::time::{Duration, Instant};

use common::{bin, kvm_or_skip, run_config};
use reference_vmm::action::Outcome;
use reference_vmm::config::RunConfig;
use reference_vmm::guests::Guest;
use reference_vmm::report::Report;
use reference_vmm::snapshot::document::SnapshotFile;
use reference_vmm::stop::StopCause;

fn config(guest: Guest, count: u64, every: u64) -> RunConfig {
    let mut cfg = RunConfig::new(guest);
    cfg.count = count;
    cfg.snapshot_every = Some(every);
    // Every snapshot destroys and creates a VM; the machine may be loaded.
    cfg.timeout = Some(Duration::from_secs(300));
    cfg
}

/// Snapshots are taken after every `every`-th exit, except after the last
/// exit (the stop): exactly `(exits - 1) / every` of them, all restored.
fn assert_every_snapshot_restored(r: &Report, every: u64) {
    let s = r.snapshots.expect("snapshots section");
    assert_eq!(s.every, Some(every));
    assert_eq!(s.taken, (r.exits_total - 1) / every, "{s:?}");
    assert_eq!(s.restored, s.taken, "{s:?}");
    assert_eq!(s.restore_failures, 0);
}

#[test]
fn irq_storm_20000_every_97_delivers_each_interrupt_once_across_600_fresh_vms() {
    if !kvm_or_skip() {
        return;
    }
    // The "done when": `run --guest irq-storm --count 20000 --snapshot-every 97`.
    let r = run_config(&config(Guest::IrqStorm, 20_000, 97));
    assert_eq!(r.outcome, Outcome::Halted, "{}", r.reason);
    let i = r.interrupts.expect("interrupts section");
    assert_eq!(i.requested, 20_000);
    assert_eq!(i.injected, 20_000);
    assert_eq!(i.coalesced, 0);
    assert_eq!(
        i.delivered,
        Some(20_000),
        "lost or duplicated across a restore"
    );
    assert_eq!(i.delivered_while_masked, Some(0));
    assert_eq!(i.pending_at_end, 0);
    assert_every_snapshot_restored(&r, 97);
    let s = r.snapshots.unwrap();
    // The guest raises at about a third of its ~3 exits per interrupt: about
    // 60000 exits, so about 600 snapshots (the bound holds for any timing).
    assert!(s.taken >= 500, "{s:?}");
    // Mid-storm: some snapshots held an interrupt injected but not delivered,
    // some a vector queued, some a window request.
    assert!(s.held.interrupt_injected > 0, "{s:?}");
    assert!(s.held.vectors_queued > 0, "{s:?}");
    assert!(s.held.window_requested > 0, "{s:?}");
}

#[test]
fn irq_flood_accounts_for_every_raise_across_restores() {
    if !kvm_or_skip() {
        return;
    }
    let r = run_config(&config(Guest::IrqFlood, 4000, 61));
    assert_eq!(r.outcome, Outcome::Halted, "{}", r.reason);
    let i = r.interrupts.expect("interrupts section");
    assert_eq!(i.requested, 4000);
    assert!(i.accounted(), "{i:?}");
    assert_eq!(i.delivered_while_masked, Some(0));
    // The guest sums the vectors it received: none changed across a restore.
    assert_eq!(i.delivered_vector_sum, Some(i.injected_vector_sum));
    assert!(i.max_queued <= i.queue_capacity);
    assert_every_snapshot_restored(&r, 61);
    let s = r.snapshots.unwrap();
    assert!(
        s.held.interrupt_injected > 0 && s.held.vectors_queued > 0,
        "{s:?}"
    );
}

#[test]
fn exceptions_survive_a_snapshot_after_every_exit() {
    if !kvm_or_skip() {
        return;
    }
    let r = run_config(&config(Guest::Exceptions, 0, 1));
    assert_eq!(r.outcome, Outcome::Halted, "{}", r.reason);
    let e = r.exceptions.expect("exceptions section");
    // The #GP's error code and the #PF's CR2 (a pending payload) arrive.
    assert_eq!(e.received, Some(e.expected));
    assert_every_snapshot_restored(&r, 1);
    let s = r.snapshots.unwrap();
    // Snapshots between the VMM's injection and the guest's handler:
    // the injected #GP, the pending #PF with its payload, the pending NMI.
    assert_eq!(s.held.exception, 2, "{s:?}");
    assert_eq!(s.held.exception_payload, 1, "{s:?}");
    assert_eq!(s.held.nmi, 1, "{s:?}");
}

#[test]
fn each_exception_snapshot_holds_the_event_between_injection_and_handler() {
    if !kvm_or_skip() {
        return;
    }
    // Stop right after the k-th snapshot: the last snapshot is the one after
    // the k-th sync exit (#GP, #PF, NMI in that order).
    for k in 1..=3u64 {
        let mut cfg = config(Guest::Exceptions, 0, k);
        cfg.max_exits = k + 1;
        let run = reference_vmm::vmm::run(&cfg, Instant::now()).expect("run");
        assert!(matches!(run.stop.cause, StopCause::ExitBudget { .. }));
        let saved = run.last_snapshot.expect("a snapshot");
        let ev = saved.snapshot.vcpu.events;
        match k {
            1 => {
                // Injected with its error code (no payload: queued as injected).
                assert!(ev.exception.injected.get());
                assert_eq!(ev.exception.nr, 13);
                assert!(ev.exception.has_error_code.get());
                assert_eq!(ev.exception.error_code, 0x1230);
            }
            2 => {
                // Pending with its CR2 payload: KVM writes CR2 at delivery.
                assert!(ev.exception.pending.get());
                assert_eq!(ev.exception.nr, 14);
                assert!(ev.exception.has_payload.get());
                assert_eq!(ev.exception.payload, 0x7fff_dead_b000);
                assert_eq!(ev.exception.error_code, 0x2);
            }
            _ => assert!(ev.nmi.pending != 0 || ev.nmi.injected.get()),
        }
    }
}

#[test]
fn a_pending_triple_fault_survives_the_restore() {
    if !kvm_or_skip() {
        return;
    }
    let r = run_config(&config(Guest::TripleFault, 0, 1));
    // The VMM synthesized it before the snapshot; the fresh VM shuts down.
    assert!(
        matches!(r.cause, StopCause::SynthesizedTripleFault { .. }),
        "{}",
        r.reason
    );
    let s = r.snapshots.expect("snapshots section");
    assert_eq!((s.taken, s.restored, s.held.triple_fault), (1, 1, 1));
}

#[test]
fn a_snapshot_file_resumes_in_a_new_process_with_the_right_totals() {
    if !kvm_or_skip() {
        return;
    }
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kvm_snapshot");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("irq-storm.json");
    let _ = std::fs::remove_file(&file);
    let _ = std::fs::remove_file(dir.join("irq-storm-2.json"));
    let out = bin()
        .args(["run", "--guest", "irq-storm", "--count", "3000"])
        .args([
            "--snapshot-every",
            "97",
            "--format",
            "json",
            "--snapshot-file",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let first: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let taken = first["snapshots"]["taken"].as_u64().unwrap();
    // The file holds the last snapshot: somewhere in the run, not at its end.
    let snap = SnapshotFile::read(&file).expect("the file reads back");
    assert_eq!(snap.at_exit, taken * 97);
    assert_eq!(snap.state.snapshots.taken, taken);
    assert!(snap.state.irq.requested <= 3000);
    // No temporary file is left next to it.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);

    let out = bin()
        .args(["resume", "--format", "json"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["outcome"], "halted");
    let i = &r["interrupts"];
    assert_eq!(i["requested"], 3000);
    assert_eq!(i["injected"], 3000);
    assert_eq!(i["delivered"], 3000, "lost or duplicated across processes");
    assert_eq!(i["delivered_while_masked"], 0);
    assert_eq!(i["pending_at_end"], 0);
    assert_eq!(r["snapshots"]["taken"], taken);
    assert_eq!(r["snapshots"]["restored"], taken);
    // The resumed run counts every exit of the whole run.
    assert!(r["exits_total"].as_u64().unwrap() > snap.at_exit);

    // The file also resumes with snapshots going on.
    let out = bin()
        .args(["resume", "--snapshot-every", "5", "--format", "json"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["interrupts"]["delivered"], 3000);
    assert!(r["snapshots"]["taken"].as_u64().unwrap() > taken);

    // A resumed run writes its own last snapshot, which resumes again: a chain of
    // three processes delivers every interrupt exactly once.
    let second = dir.join("irq-storm-2.json");
    let out = bin()
        .args(["resume", "--snapshot-every", "5", "--snapshot-file"])
        .arg(&second)
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let later = SnapshotFile::read(&second).expect("the second file reads back");
    assert!(
        later.at_exit > snap.at_exit,
        "{} <= {}",
        later.at_exit,
        snap.at_exit
    );
    let out = bin()
        .args(["resume", "--format", "json"])
        .arg(&second)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["outcome"], "halted");
    assert_eq!(
        r["interrupts"]["delivered"], 3000,
        "lost or duplicated over 3 processes"
    );
    assert_eq!(r["interrupts"]["delivered_while_masked"], 0);
}

#[test]
fn the_exceptions_seed_resumes_with_the_pending_page_fault_delivered() {
    if !kvm_or_skip() {
        return;
    }
    // A committed snapshot taken with a #PF pending with its CR2 payload.
    let seed = format!(
        "{}/../fuzz/seeds/vmm_snapshot/exceptions-pf-payload.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let out = bin()
        .args(["resume", "--format", "json", &seed])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let e = &r["exceptions"];
    assert_eq!(e["received"], e["expected"], "{e}");
    assert_eq!(e["received"]["pf_cr2"], 0x7fff_dead_b000u64);
}

#[test]
fn a_snapshot_the_fresh_vm_would_drop_is_refused_with_status_2() {
    if !kvm_or_skip() {
        return;
    }
    // SMM state in the events: vcpu-events' check_against refuses it for a VM
    // without KVM_CAP_X86_SMM (KVM_SET_VCPU_EVENTS would fail or drop it). On a
    // host with SMM the file is a valid (SMM) snapshot, so there is nothing to refuse.
    let kvm = vcpu_events::kvm_ioctls::Kvm::new().expect("/dev/kvm");
    if kvm.check_extension_raw(u64::from(vcpu_events::kvm::KVM_CAP_X86_SMM) as _) > 0 {
        eprintln!("skipping: this host supports SMM");
        return;
    }
    let seed = format!(
        "{}/../fuzz/seeds/vmm_snapshot/irq-storm-injected.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(seed).unwrap()).unwrap();
    v["vcpu"]["events"]["smi"]["smm"] = 1.into();
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kvm_snapshot_smm");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("smm.json");
    std::fs::write(&file, v.to_string()).unwrap();
    let out = bin().arg("resume").arg(&file).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(out.stdout.is_empty());
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("no SMM support"), "{err}");
}

#[test]
fn a_snapshot_file_that_cannot_be_written_is_status_1_after_the_report() {
    if !kvm_or_skip() {
        return;
    }
    // No snapshot: halt ends at its first exit.
    let out = bin()
        .args(["run", "--guest", "halt", "--snapshot-every", "5"])
        .args(["--snapshot-file", "/nonexistent/none.json"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("halt (kvm): halted"));
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("no snapshot was taken"), "{err}");
    // A snapshot, but the directory does not exist: nothing is left behind.
    let out = bin()
        .args(["run", "--guest", "exceptions", "--snapshot-every", "1"])
        .args(["--snapshot-file", "/nonexistent/dir/s.json"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("cannot write /nonexistent/dir/s.json"),
        "{err}"
    );
}

/// The seed `seed` with `edit` applied, written under the target directory as `name`.
fn edited_seed(
    seed: &str,
    name: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) -> std::path::PathBuf {
    let seed = format!(
        "{}/../fuzz/seeds/vmm_snapshot/{seed}",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(seed).unwrap()).unwrap();
    edit(&mut v);
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kvm_snapshot_edited");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(name);
    std::fs::write(&file, v.to_string()).unwrap();
    file
}

#[test]
fn sregs_kvm_refuses_are_bad_input_with_status_2() {
    if !kvm_or_skip() {
        return;
    }
    // kvm_sregs (x86_64 repr(C)): cr0 at byte 224. CR0.PG without CR0.PE:
    // KVM_SET_SREGS returns -EINVAL (kvm_is_valid_sregs, Linux
    // arch/x86/kvm/x86.c; SDM Vol. 3A 2.5: PG requires PE). The file is what
    // is wrong, not the host.
    let file = edited_seed("irq-storm-injected.json", "pg-without-pe.json", |v| {
        let b = v["vcpu"]["sregs"][224].as_u64().unwrap();
        v["vcpu"]["sregs"][224] = (b & !1).into();
    });
    let out = bin().arg("resume").arg(&file).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(out.stdout.is_empty());
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("KVM_SET_SREGS failed"), "{err}");
    assert!(err.contains("os error 22"), "{err}");
}

#[test]
fn a_resumed_guest_that_triple_faults_on_its_own_is_status_1() {
    if !kvm_or_skip() {
        return;
    }
    // Every page gone: KVM takes the file (registers and events are fine),
    // the guest faults fetching its next instruction and triple-faults.
    // irq-storm never asks for that end: the report says shutdown, the
    // status is 1, not the 0 of a run that ended as asked.
    let file = edited_seed("irq-storm-injected.json", "no-pages.json", |v| {
        v["memory"]["pages"] = serde_json::Value::Array(vec![])
    });
    let out = bin().arg("resume").arg(&file).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.starts_with("irq-storm (kvm): shutdown - the guest triple-faulted on its own"),
        "{text}"
    );
}

#[test]
fn a_file_naming_4096_mib_does_not_make_resume_touch_them_all() {
    if !kvm_or_skip() {
        return;
    }
    // `mem_mib` 4096 is in range (the `run --mem-mib` bound) and the file
    // holds only the guest's few non-zero pages: the restore writes those
    // into the fresh (zero) mapping, not 4 GiB (peak growth was about 4 GiB).
    let file = edited_seed("irq-storm-injected.json", "4096-mib.json", |v| {
        v["mem_mib"] = 4096.into()
    });
    let out = bin()
        .args(["resume", "--format", "json"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["outcome"], "halted", "{r}");
    let growth = r["memory"]["peak_growth_kib"].as_u64().unwrap();
    assert!(growth < 256 * 1024, "peak growth {growth} KiB");
}

#[test]
fn a_halted_guest_whose_counters_contradict_the_vmm_is_status_1() {
    if !kvm_or_skip() {
        return;
    }
    // The #PF pending with its CR2 payload (KVM_CAP_EXCEPTION_PAYLOAD), the
    // payload edited: KVM delivers it as CR2 and the guest halts normally,
    // but its handler reports a CR2 the VMM never injected.
    let file = edited_seed("exceptions-pf-payload.json", "cr2-edited.json", |v| {
        v["vcpu"]["events"]["exception"]["payload"] = 0x1000.into()
    });
    let out = bin()
        .args(["resume", "--format", "json"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["outcome"], "halted", "{r}");
    assert_eq!(r["exceptions"]["received"]["pf_cr2"], 0x1000, "{r}");
    assert_eq!(r["exceptions"]["expected"]["pf_cr2"], 0x7fff_dead_b000u64);
}
