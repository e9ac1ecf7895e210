// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `vmxcap nested`, `baseline --nested`, multi-dump `config` and `diff --kvm`, run
//! through the built binary on the repository's fixture dumps (`fixtures/vmx/`) (model: Linux v6.18
//! `nested_vmx_setup_ctls_msrs`, arch/x86/kvm/vmx/nested.c).

mod common;

use common::*;
use test_support::VMX_DUMPS;

use std::path::PathBuf;
use std::process::Output;

fn stdout(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// A copy of a fixture with one MSR's value replaced.
fn edited(name: &str, msr: &str, value: u64) -> PathBuf {
    let text = std::fs::read_to_string(fixture(name)).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["msrs"][msr] = serde_json::Value::String(format!("0x{value:016x}"));
    let path = tmp(&format!("{name}-{msr}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(&json).unwrap()).unwrap();
    path
}

#[test]
fn every_fixture_in_every_format() {
    for name in VMX_DUMPS {
        let f = fixture(name);
        let text = stdout(&vmxcap(&["nested", "--dump", p(&f)]));
        assert!(text.contains("Linux v6.18"), "{name}");
        for word in ["passed", "emulated", "masked"] {
            assert!(text.contains(word), "{name}: {word}");
        }
        let qemu = stdout(&vmxcap(&["nested", "--dump", p(&f), "--format", "qemu"]));
        // QEMU's vmxcap inside the L1: KVM's VMCS12 revision, 4 KiB, no tertiary MSR.
        assert!(
            qemu.contains("  Revision                                 300252880\n"),
            "{name}"
        );
        assert!(
            qemu.contains("  VMCS size                                4096\n"),
            "{name}"
        );
        assert!(
            qemu.contains("  Enable IPI virtualization                no\n"),
            "{name}"
        );
        assert_eq!(
            qemu.lines().count(),
            130,
            "{name}: the pre-2024 vmxcap layout"
        );
        let json = stdout(&vmxcap(&["nested", "--dump", p(&f), "--format", "json"]));
        assert!(json.contains("\"0x480\": \"0x"), "{name}");
        assert!(
            !json.contains("\"0x492\""),
            "{name}: PROCBASED_CTLS3 is not exposed"
        );
    }
}

#[test]
fn json_round_trips_through_show_check_and_config() {
    for name in VMX_DUMPS {
        let out_file = tmp(&format!("{name}-l1.json"));
        let json = stdout(&vmxcap(&[
            "nested",
            "--dump",
            p(&fixture(name)),
            "--format",
            "json",
        ]));
        std::fs::write(&out_file, &json).unwrap();
        // --dump reads it back; the qemu rendering equals `nested --format qemu`.
        let shown = stdout(&vmxcap(&["--dump", p(&out_file), "--format", "qemu"]));
        let direct = stdout(&vmxcap(&[
            "nested",
            "--dump",
            p(&fixture(name)),
            "--format",
            "qemu",
        ]));
        assert_eq!(shown, direct, "{name}");
        // No architectural violation.
        let check = vmxcap(&["check", "--dump", p(&out_file)]);
        assert_eq!(check.status.code(), Some(0), "{name}: {check:?}");
        // L1's KVM configures from it (setup_vmcs_config succeeds).
        let cfg = stdout(&vmxcap(&[
            "config",
            "--dump",
            p(&out_file),
            "--format",
            "json",
        ]));
        let v: serde_json::Value = serde_json::from_str(&cfg).unwrap();
        assert!(v["secondary"].is_string(), "{name}: {v}");
        // The nested view of the nested view is the same MSRs.
        let again = stdout(&vmxcap(&[
            "nested",
            "--dump",
            p(&out_file),
            "--format",
            "json",
        ]));
        let msrs = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap()["msrs"].clone();
        assert_eq!(msrs(&again), msrs(&json), "{name}");
    }
}

#[test]
fn tiger_lake_text_marks_cet_and_qemu_shows_it() {
    let f = fixture("tigerlake-i5-1135g7");
    let text = stdout(&vmxcap(&["nested", "--dump", p(&f)]));
    let cet = text
        .lines()
        .find(|l| l.contains(" LOAD_CET_STATE ") && l.trim_start().starts_with("28 "))
        .expect("exit bit 28");
    assert!(cet.contains("passed"), "{cet}");
    let ple = text
        .lines()
        .find(|l| l.contains("PAUSE_LOOP_EXITING"))
        .expect("PLE");
    assert!(
        ple.contains("masked") && ple.contains("does not expose"),
        "{ple}"
    );
    let json = stdout(&vmxcap(&["nested", "--dump", p(&f), "--format", "json"]));
    assert!(json.contains("\"0x483\": \"0x107fffff00036dff\""), "{json}");
    assert!(json.contains("\"0x484\": \"0x0010f3ff000011ff\""), "{json}");
    // Without host SHSTK and IBT the CET pair is masked, and the text says why.
    let args = [
        "nested",
        "--dump",
        p(&f),
        "--host-shstk",
        "0",
        "--host-ibt",
        "0",
    ];
    let text = stdout(&vmxcap(&args));
    assert!(text.contains("host has neither SHSTK nor IBT"), "{text}");
    let mut a = args.to_vec();
    a.extend(["--format", "json"]);
    let json = stdout(&vmxcap(&a));
    assert!(json.contains("\"0x483\": \"0x007fffff00036dff\""), "{json}");
    assert!(
        json.contains("host: umip=inferred:1 shstk=0 ibt=0"),
        "{json}"
    );
}

#[test]
fn penryn_without_ept_gets_no_ept() {
    let f = fixture("penryn-core2-t9600");
    let text = stdout(&vmxcap(&["nested", "--dump", p(&f)]));
    assert!(
        text.contains("ept                  off (no ENABLE_EPT in L0's VMCS configuration)"),
        "{text}"
    );
    let qemu = stdout(&vmxcap(&["nested", "--dump", p(&f), "--format", "qemu"]));
    assert!(
        qemu.contains("  Enable EPT                               no\n"),
        "{qemu}"
    );
    assert!(
        qemu.contains("  EPTP Switching                           no\n"),
        "{qemu}"
    );
    assert!(
        qemu.contains("  VMCS shadowing                           yes\n"),
        "{qemu}"
    );
}

#[test]
fn refusals_exit_1_with_the_reason() {
    // VMCS memory type UC: setup_vmcs_config fails, kvm_intel does not load.
    let uc = edited("tigerlake-i5-1135g7", "0x480", 0x01c2_0500_0000_0013);
    for format in ["text", "qemu", "json"] {
        let out = vmxcap(&["nested", "--dump", p(&uc), "--format", format]);
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        assert!(out.stdout.is_empty());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains("no nested view") && err.contains("not write-back"),
            "{err}"
        );
    }
    let out = vmxcap(&[
        "nested",
        "--dump",
        p(&fixture("penryn-core2-t9600")),
        "--kvm-nested",
        "0",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nested=0"));
    // Unusable input stays status 2.
    let out = vmxcap(&["nested", "--dump", "/nonexistent.json"]);
    assert_eq!(out.status.code(), Some(2));
    let out = vmxcap(&[
        "nested",
        "--dump",
        p(&fixture("penryn-core2-t9600")),
        "--ept",
        "maybe",
    ]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn l1_runs_kvm_on_the_nested_view() {
    let f = fixture("skylake-x-i7-7800x");
    let text = stdout(&vmxcap(&["nested", "--dump", p(&f), "--l1"]));
    assert!(
        text.contains("kvm_intel loads on the nested view"),
        "{text}"
    );
    assert!(
        text.contains("VMCS configuration (KVM setup_vmcs_config)"),
        "{text}"
    );
    assert!(
        text.contains("L2 gets the same VMX capabilities as L1"),
        "{text}"
    );
    let json = stdout(&vmxcap(&[
        "nested",
        "--dump",
        p(&f),
        "--l1",
        "--format",
        "json",
    ]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["l1_loads"], true);
    // L1's KVM uses the nested secondary controls it was offered.
    assert_eq!(v["l1_config"]["secondary"], "0x02137bff");
    assert_eq!(v["l2"]["msrs"]["0x48b"], "0x02137bff00000000");
    let qemu = stdout(&vmxcap(&[
        "nested",
        "--dump",
        p(&f),
        "--l1",
        "--format",
        "qemu",
    ]));
    assert!(qemu.contains("Revision                                 300252880"));
}

#[test]
fn baseline_nested_intersects_l1_views() {
    let out_file = tmp("nested-baseline.json");
    let mut args = vec!["baseline".to_owned(), "--nested".to_owned()];
    args.extend(VMX_DUMPS.iter().map(|n| p(&fixture(n)).to_owned()));
    args.extend(["--out".to_owned(), p(&out_file).to_owned()]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = vmxcap(&argv);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let qemu = stdout(&vmxcap(&["--dump", p(&out_file), "--format", "qemu"]));
    // Penryn has no EPT and Broadwell no posted interrupts: nobody in the fleet gets them.
    assert!(
        qemu.contains("  Enable EPT                               no\n"),
        "{qemu}"
    );
    assert!(
        qemu.contains("  Process posted interrupts                no\n"),
        "{qemu}"
    );
    // Everyone gets what KVM emulates.
    assert!(
        qemu.contains("  Activate VMX-preemption timer            yes\n"),
        "{qemu}"
    );
    assert!(
        qemu.contains("  VMCS shadowing                           yes\n"),
        "{qemu}"
    );
    let check = vmxcap(&["check", "--dump", p(&out_file)]);
    assert_eq!(check.status.code(), Some(0), "{check:?}");
    let text = std::fs::read_to_string(&out_file).unwrap();
    assert!(text.contains("L1 on Intel Core i5-1135G7"), "{text}");
    // A CPU KVM refuses makes the nested baseline fail with status 1.
    let uc = edited("tigerlake-i5-1135g7", "0x480", 0x01c2_0500_0000_0013);
    let out = vmxcap(&[
        "baseline",
        "--nested",
        p(&fixture("penryn-core2-t9600")),
        p(&uc),
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
}

#[test]
fn config_over_several_cpus_reports_processor_compat() {
    let tgl = fixture("tigerlake-i5-1135g7");
    let out = vmxcap(&["config", "--dump", p(&tgl), p(&tgl)]);
    let s = stdout(&out);
    assert!(
        s.contains("CPU 1: consistent") && s.contains("kvm_intel loads"),
        "{s}"
    );
    let skx = fixture("skylake-x-i7-7800x");
    let out = vmxcap(&["config", "--dump", p(&tgl), p(&tgl), p(&skx)]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("  Inconsistent VMCS config on CPU 2 ("), "{s}");
    let out = vmxcap(&["config", "--dump", p(&tgl), p(&skx), "--format", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["loads"], false);
    assert_eq!(v["processor_compat"]["cpus"][0]["status"], "inconsistent");
    assert_eq!(v["config"]["exit"], "0x137fffff");
}

#[test]
fn diff_predicted_against_dump_or_kvm() {
    let f = fixture("tigerlake-i5-1135g7");
    let l1 = tmp("tgl-l1-for-diff.json");
    std::fs::write(
        &l1,
        stdout(&vmxcap(&["nested", "--dump", p(&f), "--format", "json"])),
    )
    .unwrap();
    let out = vmxcap(&["diff", p(&l1), p(&f)]);
    assert_eq!(out.status.code(), Some(1));
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.contains("only B allows  PAUSE_LOOP_EXITING [bit 10]"),
        "{s}"
    );
    assert!(s.contains("only A allows  SHADOW_VMCS [bit 14]"), "{s}");
    // Against this host's KVM: a comparison when KVM offers VMX, else a clear error.
    let out = vmxcap(&["diff", p(&l1), "--kvm"]);
    match out.status.code() {
        Some(0) | Some(1) => {
            assert!(String::from_utf8_lossy(&out.stdout).contains("KVM feature MSRs"))
        }
        Some(2) => assert!(String::from_utf8_lossy(&out.stderr).starts_with("vmxcap: error: ")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn config_host_reads_every_cpu_or_fails_clearly() {
    let out = vmxcap(&["config", "--host"]);
    match out.status.code() {
        // A VMX host with the msr module: the boot CPU's configuration and the verdict.
        Some(0) | Some(1) => {
            let s = String::from_utf8_lossy(&out.stdout);
            assert!(s.contains("vmx_check_processor_compat over"), "{s}");
        }
        // No VMX, no msr module or not root: one error line, status 2.
        Some(2) => {
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(err.lines().count(), 1, "{err}");
            assert!(err.starts_with("vmxcap: error: "), "{err}");
        }
        other => panic!("{other:?}"),
    }
    // --host and --dump together are refused by the parser.
    let f = fixture("tigerlake-i5-1135g7");
    assert_eq!(
        vmxcap(&["config", "--host", "--dump", p(&f)]).status.code(),
        Some(2)
    );
}
