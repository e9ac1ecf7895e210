// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Per-exit cost of decoding and handling a `KVM_EXIT_NOTIFY`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use notify_exit::{
    decide, decode, NotifyConfig, NotifyExit, NotifyFlags, NotifyHandler, NotifyPolicy,
    NotifyVmexitMode, KVM_EXIT_NOTIFY,
};

fn bench(c: &mut Criterion) {
    let valid = NotifyExit::new(NotifyFlags::empty()).to_union_bytes();
    let invalid = NotifyExit::new(NotifyFlags::CONTEXT_INVALID).to_union_bytes();
    let policy = NotifyPolicy::new(NotifyVmexitMode::Run, true);

    c.bench_function("decode", |b| {
        b.iter(|| decode(black_box(KVM_EXIT_NOTIFY), black_box(&valid[..])))
    });
    c.bench_function("decode+decide", |b| {
        b.iter(|| {
            let exit = decode(black_box(KVM_EXIT_NOTIFY), black_box(&invalid[..]));
            exit.map(|e| decide(black_box(&policy), e))
        })
    });
    // The full per-exit path: decode, decide, count, sliding window, storm detector,
    // log check (no logger installed, as in a VMM with logging off for this target).
    let mut handler = NotifyHandler::new(0, policy);
    let mut now = std::time::Duration::ZERO;
    c.bench_function("handler.handle_raw (decode+handle+stats)", |b| {
        b.iter(|| {
            now += std::time::Duration::from_micros(1);
            handler.handle_raw(black_box(KVM_EXIT_NOTIFY), black_box(&valid[..]), now)
        })
    });
    c.bench_function("config parse", |b| {
        b.iter(|| black_box("notify-vmexit=run,notify-window=128").parse::<NotifyConfig>())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
