// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Hot paths: computing a VMCS configuration from capabilities, the SDM control checks
//! on a configuration, and the pair sanitizer.

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion};
use vmx_caps::{Dump, VmxCaps};
use vmx_controls::sdm_checks::EntryContext;
use vmx_controls::*;

fn caps(name: &str) -> VmxCaps {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/vmx")
        .join(name);
    Dump::read(&path).unwrap().caps().unwrap()
}

fn benches(c: &mut Criterion) {
    let skx = caps("skylake-x-i7-7800x.json");
    let arl = caps("arrowlake-core-ultra-5-245k.json");
    let linux = VmcsPolicy::linux();

    c.bench_function("setup_vmcs_config/skylake-x", |b| {
        b.iter(|| setup_vmcs_config(black_box(&skx), black_box(&linux)))
    });
    // Arrow Lake produces one diagnostic (0x492 absent): includes that allocation.
    c.bench_function("setup_vmcs_config/arrowlake", |b| {
        b.iter(|| setup_vmcs_config(black_box(&arl), black_box(&linux)))
    });

    let setup = setup_vmcs_config(&arl, &linux).unwrap();
    let mut controls = ControlValues::from(&setup.config);
    controls
        .secondary
        .remove(SecondaryControls::VIRTUALIZE_X2APIC_MODE);
    let fields = VmcsFields {
        eptp: 0x1e,
        vpid: 1,
        posted_intr_nv: 0xf2,
        tsc_multiplier: 1 << 48,
        entry_intr_info: 0x8000_0b0e,
        guest_cr0: 0x8000_0031,
        ..VmcsFields::default()
    };
    let ctx = EntryContext::default();
    c.bench_function("check_vmx_controls/arrowlake-pass", |b| {
        b.iter(|| check_vmx_controls(black_box(&controls), black_box(&fields), &arl, &ctx))
    });
    let mut bad = controls;
    bad.pin.remove(PinBasedControls::VMX_PREEMPTION_TIMER);
    c.bench_function("check_vmx_controls/arrowlake-1-violation", |b| {
        b.iter(|| check_vmx_controls(black_box(&bad), black_box(&fields), &arl, &ctx))
    });

    let entry = setup.config.entry;
    let exit = setup.config.exit;
    c.bench_function("sanitize_pairs/consistent", |b| {
        b.iter(|| {
            sanitize_pairs(
                &ALL_ENTRY_EXIT_PAIRS,
                black_box(entry),
                black_box(exit),
                SecondaryExitControls::empty(),
                OnInconsistent::Sanitize,
            )
        })
    });
}

criterion_group!(main_benches, benches);
criterion_main!(main_benches);
