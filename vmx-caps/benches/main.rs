// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Hot paths: decoding a capability set, the invariant check, the renderers, dump
//! parsing and the fleet baseline.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use vmx_caps::baseline::intersect;
use vmx_caps::check::check;
use vmx_caps::report::{self, Format};
use vmx_caps::{Dump, VmxCaps};

const ARL: &str = include_str!("../../fixtures/vmx/arrowlake-core-ultra-5-245k.json");
const SKX: &str = include_str!("../../fixtures/vmx/skylake-x-i7-7800x.json");

fn benches(c: &mut Criterion) {
    let dump = Dump::from_json(ARL).unwrap();
    let caps = dump.caps().unwrap();
    let skx = Dump::from_json(SKX).unwrap().caps().unwrap();

    c.bench_function("decode/from_raw", |b| {
        b.iter(|| VmxCaps::from_raw(black_box(&dump.msrs).clone()).unwrap())
    });
    c.bench_function("dump/from_json", |b| {
        b.iter(|| Dump::from_json(black_box(ARL)).unwrap())
    });
    c.bench_function("check", |b| b.iter(|| check(black_box(&caps))));
    c.bench_function("render/qemu", |b| {
        b.iter(|| report::render(black_box(&caps), Format::Qemu))
    });
    c.bench_function("render/text", |b| {
        b.iter(|| report::render(black_box(&caps), Format::Text))
    });
    c.bench_function("render/json", |b| {
        b.iter(|| report::render(black_box(&caps), Format::Json))
    });
    let pair = [caps.clone(), skx];
    c.bench_function("baseline/intersect2", |b| {
        b.iter(|| intersect(black_box(&pair)).unwrap())
    });
}

criterion_group!(main_benches, benches);
criterion_main!(main_benches);
