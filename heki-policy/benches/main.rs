//! Hot paths: exit decode, check_cr, lock validation, handler.

use core::time::Duration;
use criterion::{criterion_group, criterion_main, Criterion};
use heki_policy::{
    decode_exit, encode_exit, DenialPolicy, HekiAbi, HekiExit, HekiExitHandler, HekiExitReason,
    HostCrs, PinPolicy, RateLimit,
};
use std::hint::black_box;

const HOST: HostCrs = HostCrs {
    cr0: 0x8005_0033,
    cr4: 0x0037_0ef0,
};

fn benches(c: &mut Criterion) {
    let mut union = [0u8; 256];
    let exit = HekiExit::denial(HekiExitReason::Cr4, 0x6f0);
    let nr = encode_exit(HekiAbi::RfcV3, &exit, &mut union).unwrap_or(0);
    c.bench_function("decode_exit/heki_denial_v3", |b| {
        b.iter(|| {
            decode_exit(
                black_box(Some(HekiAbi::RfcV3)),
                black_box(nr),
                black_box(&union),
            )
        })
    });
    c.bench_function("decode_exit/not_heki_no_abi", |b| {
        b.iter(|| decode_exit(black_box(None), black_box(39), black_box(&union)))
    });
    c.bench_function("encode_exit/heki_denial_v3", |b| {
        b.iter(|| {
            encode_exit(
                black_box(HekiAbi::RfcV3),
                black_box(&exit),
                black_box(&mut union),
            )
        })
    });

    let mut policy = PinPolicy::new(HekiAbi::RfcV3);
    let _ = policy.lock(0, 1 << 16, HOST);
    let _ = policy.lock(4, (1 << 20) | (1 << 21), HOST);
    c.bench_function("check_cr/allow", |b| {
        b.iter(|| policy.check_cr(black_box(4), black_box(0x0037_0ef0)))
    });
    c.bench_function("check_cr/deny", |b| {
        b.iter(|| policy.check_cr(black_box(0), black_box(0x8000_0033)))
    });
    c.bench_function("validate_lock/cr4_ok", |b| {
        b.iter(|| {
            policy.validate_lock(
                black_box(4),
                black_box((1 << 20) | (1 << 23)),
                black_box(HOST),
            )
        })
    });
    c.bench_function("validate_lock/cr0_einval", |b| {
        b.iter(|| policy.validate_lock(black_box(0), black_box(1), black_box(HOST)))
    });

    // The handler counts a line only when the logger shows it: with no logger this
    // would time the filtered path instead of the rate limiter.
    test_support::install_warn_logger();
    let mut handler = HekiExitHandler::new(HekiAbi::RfcV3, DenialPolicy::Gp)
        .with_pins(policy.pins())
        .with_rate_limit(RateLimit::new(Duration::from_secs(5), 10));
    let mut t = 0u64;
    c.bench_function("handler/denial_rate_limited", |b| {
        b.iter(|| {
            t += 1;
            handler.handle(black_box(&exit), Duration::from_nanos(t))
        })
    });
}

criterion_group!(heki, benches);
criterion_main!(heki);
