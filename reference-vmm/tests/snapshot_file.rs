// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Hostile snapshot files through the real binary: `resume PATH` refuses each
//! with one line naming what is wrong and exit status 2 (bad input), before
//! any VM exists, never running a silently different guest. Every file is
//! crafted from a real snapshot (the committed seeds of the `vmm_snapshot`
//! fuzz target, written by `run --snapshot-every N --snapshot-file PATH` on
//! KVM): an irq-storm guest with an interrupt injected (KVM_INTERRUPT done)
//! and not yet delivered, and the exceptions guest with a #PF pending with
//! its CR2 payload (KVM_CAP_EXCEPTION_PAYLOAD).

#[allow(dead_code)] // only `bin` of the shared helpers is used here.
mod common;

use std::path::PathBuf;

use common::bin;
use reference_vmm::snapshot::document::SnapshotFile;
use serde_json::Value;

fn seed(name: &str) -> String {
    let path = format!(
        "{}/../fuzz/seeds/vmm_snapshot/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn json(name: &str) -> Value {
    serde_json::from_str(&seed(name)).expect("seed is JSON")
}

/// A scratch file under the target directory, unique per test.
fn scratch(name: &str, text: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("snapshot_file");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// `resume` on `text`: status 2, nothing on stdout, one line on stderr
/// containing `want`.
fn refused(name: &str, text: &str, want: &str) {
    let path = scratch(name, text);
    let out = bin().arg("resume").arg(&path).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{name}: {err}");
    assert!(out.stdout.is_empty(), "{name}: printed a report");
    assert_eq!(err.trim_end().lines().count(), 1, "{name}: {err:?}");
    assert!(err.starts_with("error: "), "{name}: {err}");
    assert!(err.contains(want), "{name}: {err:?} lacks {want:?}");
    assert!(!err.contains('\x1b'), "{name}: raw control character");
}

fn edited(seed_name: &str, edit: impl FnOnce(&mut Value)) -> String {
    let mut v = json(seed_name);
    edit(&mut v);
    v.to_string()
}

#[test]
fn the_committed_seeds_read_back_as_what_they_claim() {
    // SnapshotFile::from_json is what `resume` runs first.
    let irq = SnapshotFile::from_json(seed("irq-storm-injected.json").as_bytes()).unwrap();
    assert!(irq.vcpu.events.interrupt.injected.get());
    assert!(irq.vcpu.injector.is_some());
    assert_eq!(irq.at_exit, irq.state.exits.total());
    let pf = SnapshotFile::from_json(seed("exceptions-pf-payload.json").as_bytes()).unwrap();
    let e = pf.vcpu.events.exception;
    assert!(e.pending.get() && e.has_payload.get());
    assert_eq!((e.nr, e.payload), (14, 0x7fff_dead_b000));
    // Written again, a file reads back to the same document.
    let again = SnapshotFile::from_json(pf.to_json().as_bytes()).unwrap();
    assert_eq!(again.to_json(), pf.to_json());
}

#[test]
fn a_truncated_file_is_refused() {
    let s = seed("irq-storm-injected.json");
    refused(
        "truncated.json",
        &s[..s.len() / 2],
        "not a snapshot document: EOF",
    );
    refused("empty.json", "", "not a snapshot document");
}

#[test]
fn another_version_or_format_is_refused_before_its_layout_is_read() {
    let t = edited("irq-storm-injected.json", |v| {
        v["version"] = 2.into();
        v["unheard_of"] = 1.into();
    });
    refused(
        "version.json",
        &t,
        "snapshot file version 2 is not supported",
    );
    let t = edited("irq-storm-injected.json", |v| {
        v["vcpu"]["version"] = 2.into()
    });
    refused(
        "vcpu-version.json",
        &t,
        "vcpu: snapshot version 2 is not supported",
    );
    let t = edited("irq-storm-injected.json", |v| v["format"] = "qemu".into());
    refused(
        "format.json",
        &t,
        "format \"qemu\" is not \"reference-vmm-snapshot\"",
    );
}

#[test]
fn an_injected_interrupt_with_if_clear_is_refused() {
    // kvm_regs as bytes (kvm-bindings' serde form): rflags is bytes 136..144,
    // IF is bit 9 (SDM Vol. 3A 2.3), i.e. bit 1 of byte 137. SDM 26.2.1.3:
    // an external interrupt cannot be injected with RFLAGS.IF = 0.
    let t = edited("irq-storm-injected.json", |v| {
        let b = v["vcpu"]["regs"][137].as_u64().unwrap();
        v["vcpu"]["regs"][137] = (b & !2).into();
    });
    refused("if-clear.json", &t, "ExternalInterruptWithIfClear");
}

#[test]
fn a_pending_payload_without_the_payload_flag_is_refused() {
    // Without KVM_VCPUEVENT_VALID_PAYLOAD (0x10) KVM ignores `exception.pending`
    // and the payload (kvm_vcpu_ioctl_x86_set_vcpu_events): the #PF and its CR2
    // would be dropped silently.
    let t = edited("exceptions-pf-payload.json", |v| {
        let f = v["vcpu"]["events"]["flags"].as_u64().unwrap();
        v["vcpu"]["events"]["flags"] = (f & !0x10).into();
    });
    refused(
        "payload-no-flag.json",
        &t,
        "PendingIgnoredWithoutPayloadFlag",
    );
}

#[test]
fn an_unknown_event_flag_or_field_is_refused() {
    let t = edited("irq-storm-injected.json", |v| {
        let f = v["vcpu"]["events"]["flags"].as_u64().unwrap();
        v["vcpu"]["events"]["flags"] = (f | 0x100).into();
    });
    refused("unknown-flag.json", &t, "unknown flag bits 0x100");
    let t = edited("irq-storm-injected.json", |v| v["vmm"]["extra"] = 1.into());
    refused("unknown-field.json", &t, "unknown field `extra`");
}

#[test]
fn memory_of_the_wrong_shape_is_refused() {
    let t = edited("irq-storm-injected.json", |v| {
        let h = v["memory"]["pages"][0]["hex"].as_str().unwrap().to_string();
        v["memory"]["pages"][0]["hex"] = h[..h.len() - 2].into();
    });
    refused("short-page.json", &t, "not 8192 hex digits");
    let t = edited("irq-storm-injected.json", |v| {
        let n = v["memory"]["pages"].as_array().unwrap().len();
        v["memory"]["pages"][n - 1]["gpa"] = (2u64 << 20).into();
    });
    refused("page-outside.json", &t, "outside guest memory");
    let t = edited("irq-storm-injected.json", |v| {
        v["memory"]["pages"][1]["gpa"] = v["memory"]["pages"][0]["gpa"].clone();
    });
    refused("page-twice.json", &t, "not after the previous page");
    let t = edited("irq-storm-injected.json", |v| {
        let h = v["memory"]["pages"][0]["hex"]
            .as_str()
            .unwrap()
            .to_uppercase();
        v["memory"]["pages"][0]["hex"] = h.into();
    });
    refused("page-upper.json", &t, "not lower-case hex");
}

#[test]
fn an_unknown_guest_or_one_without_snapshots_is_refused() {
    let t = edited("irq-storm-injected.json", |v| v["guest"] = "nope".into());
    refused("guest.json", &t, "guest \"nope\": no such guest");
    let t = edited("irq-storm-injected.json", |v| v["guest"] = "timer".into());
    refused("timer.json", &t, "guest \"timer\"");
    // The exceptions guest takes no interrupts: a snapshot carrying an
    // injector is not one of its snapshots.
    let t = edited("irq-storm-injected.json", |v| {
        v["guest"] = "exceptions".into();
        v["count"] = 0.into();
    });
    refused("wrong-guest.json", &t, "vmm state: irq mode");
}

#[test]
fn a_huge_string_in_the_file_is_echoed_clipped() {
    // A 1 MB guest name or flag value comes back as 64 characters and `...`,
    // not as a 1 MB error line.
    let long = "g".repeat(1 << 20);
    let t = edited("irq-storm-injected.json", |v| {
        v["guest"] = long.clone().into()
    });
    let want = format!("guest \"{}...\": no such guest", "g".repeat(64));
    refused("long-guest.json", &t, &want);
    let t = edited("irq-storm-injected.json", |v| {
        v["policy"]["heki_abi"] = long.clone().into()
    });
    refused("long-policy.json", &t, &format!("{}...", "g".repeat(64)));
    let path = scratch("long-guest-len.json", &t);
    let out = bin().arg("resume").arg(&path).output().unwrap();
    assert!(out.stderr.len() < 200, "{} bytes", out.stderr.len());
}

#[test]
fn inconsistent_vmm_or_injector_state_is_refused() {
    let t = edited("irq-storm-injected.json", |v| {
        v["vmm"]["irq"]["requested"] = 1_000_000.into();
    });
    refused("irq-counts.json", &t, "irq counts do not add up");
    let t = edited("irq-storm-injected.json", |v| {
        v["vcpu"]["injector"]["in_flight"] = Value::Array(vec![]);
    });
    refused("injector.json", &t, "injector");
    let t = edited("irq-storm-injected.json", |v| {
        v["vmm"]["exits"]["no_such_exit"] = 1.into();
    });
    refused("exit-kind.json", &t, "unknown exit kind");
    let t = edited("irq-storm-injected.json", |v| v["at_exit"] = 1.into());
    refused("at-exit.json", &t, "at_exit 1");
}

#[test]
fn garbage_and_a_missing_file_are_refused_on_one_line() {
    refused(
        "garbage.json",
        "\u{1b}[2J\0 garbage",
        "not a snapshot document",
    );
    let out = bin()
        .args(["resume", "/nonexistent/snapshot.json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot open /nonexistent/snapshot.json"),
        "{err}"
    );
}

#[test]
fn snapshot_flags_are_usage_errors_where_they_cannot_apply() {
    for (args, want) in [
        (
            &[
                "run",
                "--guest",
                "timer",
                "--snapshot-every",
                "5",
                "--snapshot-file",
                "x.json",
            ][..],
            "--snapshot-file does not apply to --guest timer",
        ),
        (
            &[
                "run",
                "--guest",
                "pio-loop",
                "--vcpus",
                "2",
                "--snapshot-every",
                "5",
            ][..],
            "--snapshot-every with --vcpus 2",
        ),
        (
            &["run", "--guest", "irq-storm", "--snapshot-every", "0"][..],
            "--snapshot-every",
        ),
        (
            &["run", "--guest", "irq-storm", "--snapshot-file", "x.json"][..],
            "--snapshot-every",
        ),
    ] {
        let out = bin().args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

#[test]
fn vmm_counters_that_are_not_the_injectors_or_a_snapshots_are_refused() {
    // IrqInjector::before_run copies the injector's counters into the VMM's
    // right before the snapshot is taken: an edited copy would be reported
    // (the next before_run overwrites it, the bounds checks read it). A file
    // holds a snapshot taken and not yet restored (snapshot::run): a restored
    // count of u64::MAX would overflow at the resume's restore.
    for (seed_name, pointer, value, want) in [
        (
            "irq-storm-injected.json",
            "/vmm/irq/injected",
            0,
            "irq injected 0 is not the injector's 1",
        ),
        (
            "irq-flood-queued.json",
            "/vmm/irq/capacity",
            0,
            "irq capacity 0 is not the injector's 32",
        ),
        (
            "irq-flood-queued.json",
            "/vmm/irq/max_queued",
            33,
            "irq max_queued 33 is over the capacity 32",
        ),
        (
            "irq-storm-injected.json",
            "/vmm/irq/injected_vector_sum",
            33,
            "irq injected_vector_sum 33 is not 1 injections of vector 0x20",
        ),
        (
            "irq-storm-injected.json",
            "/vmm/snapshots/restored",
            u64::MAX,
            "restored 18446744073709551615",
        ),
        (
            "irq-storm-injected.json",
            "/vmm/snapshots/taken",
            0,
            "snapshots taken 0",
        ),
        (
            "irq-storm-injected.json",
            "/vmm/snapshots/held/nmi",
            2,
            "more than the 1 taken",
        ),
    ] {
        let t = edited(seed_name, |v| {
            *v.pointer_mut(pointer).expect(pointer) = value.into()
        });
        let name = format!("{}.json", pointer.replace('/', "_"));
        refused(&name, &t, want);
    }
}

#[test]
fn a_repeated_key_inside_the_vcpu_is_refused_as_everywhere_else() {
    // serde refuses a duplicate field of the document's own structs; the vCPU
    // part used to pass through a serde_json::Value, where the last of two
    // keys wins silently: `"nmi": {"pending": 1, ..., "pending": 0}` read as
    // no NMI pending, another reader could take the first.
    let compact = json("irq-storm-injected.json").to_string();
    assert_eq!(compact.matches("\"nmi\":{").count(), 1);
    let t = compact.replace("\"nmi\":{", "\"nmi\":{\"pending\":1,");
    refused("dup-nmi-pending.json", &t, "duplicate field `pending`");
    let t = compact.replace("\"vcpu\":{", "\"vcpu\":{\"version\":1,");
    refused("dup-vcpu-version.json", &t, "duplicate field `version`");
}

#[test]
fn a_leading_bom_is_skipped_as_by_every_other_reader() {
    // trace.rs and vmx-caps' Dump::from_json skip a UTF-8 BOM that starts the
    // input; the snapshot reader refused it ("expected value at line 1").
    let s = seed("exceptions-pf-payload.json");
    let with_bom = SnapshotFile::from_json(format!("\u{feff}{s}").as_bytes()).unwrap();
    let without = SnapshotFile::from_json(s.as_bytes()).unwrap();
    assert_eq!(with_bom.to_json(), without.to_json());
    // Anywhere else it is not JSON whitespace.
    let inside = s.replacen('{', "{\u{feff}", 1);
    refused("bom-inside.json", &inside, "not a snapshot document");
}
