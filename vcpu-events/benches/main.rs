// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Hot paths: VM-entry interruption checks, kvm_vcpu_events conversion +
//! validation, the injector's per-run decision.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use kvm_bindings::kvm_vcpu_events;
use vcpu_events::injector::{ExitKind, Injector, RunState};
use vcpu_events::sdm_checks::{check_entry, EntryCaps, EntryControls, GuestEventState};
use vcpu_events::validate::{validate, GuestContext, KvmContext};
use vcpu_events::{EntryInterruption, Event, EventStatus, HardwareException, VcpuEvents};

fn interruption(c: &mut Criterion) {
    let entry = EntryInterruption::encode(&Event::HardwareException(
        HardwareException::page_fault(6, 0x1000),
    ))
    .unwrap();
    let guest = GuestEventState::with_rflags(0x202);
    let controls = EntryControls {
        unrestricted_guest: true,
        virtual_nmis: true,
        entry_to_smm: false,
    };
    let caps = EntryCaps::default();
    c.bench_function("check_entry(#PF, valid)", |b| {
        b.iter(|| check_entry(black_box(&entry), black_box(&guest), &controls, &caps))
    });
    let bad = EntryInterruption::encode(&Event::ExternalInterrupt { vector: 0xd1 }).unwrap();
    let if0 = GuestEventState::with_rflags(0x2);
    c.bench_function("check_entry(ext int, IF=0: 1 violation)", |b| {
        b.iter(|| check_entry(black_box(&bad), black_box(&if0), &controls, &caps))
    });
    c.bench_function("encode+decode(#PF)", |b| {
        b.iter(|| {
            let ev = Event::HardwareException(HardwareException::page_fault(black_box(6), 0x1000));
            EntryInterruption::encode(&ev).unwrap().decode()
        })
    });
}

fn kvm_events(c: &mut Criterion) {
    let mut ev = VcpuEvents::default();
    ev.set_event(
        EventStatus::Injected,
        Event::ExternalInterrupt { vector: 0x30 },
    )
    .unwrap();
    ev.set_event(EventStatus::Pending, Event::Nmi).unwrap();
    let raw: kvm_vcpu_events = ev.into();
    let kvm = KvmContext::default();
    let guest = GuestContext::default();
    c.bench_function("kvm_vcpu_events -> VcpuEvents -> kvm_vcpu_events", |b| {
        b.iter(|| kvm_vcpu_events::from(VcpuEvents::from(black_box(&raw))))
    });
    c.bench_function("kvm_vcpu_events convert + validate", |b| {
        b.iter(|| validate(&VcpuEvents::from(black_box(&raw)), &kvm, &guest))
    });
}

fn injector(c: &mut Criterion) {
    let ready = RunState {
        ready_for_interrupt_injection: true,
        if_flag: true,
        ..Default::default()
    };
    let masked = RunState {
        if_flag: false,
        ..ready
    };
    let mut inj = Injector::new();
    for v in 0x20..0x28 {
        inj.raise(v).unwrap();
    }
    c.bench_function("injector before_run (ready, 8 queued)", |b| {
        b.iter(|| inj.before_run(black_box(&ready)))
    });
    c.bench_function("injector before_run (IF=0, 8 queued)", |b| {
        b.iter(|| inj.before_run(black_box(&masked)))
    });
    let mut cycle = Injector::new();
    c.bench_function("injector raise+before_run+commit+after_exit", |b| {
        b.iter(|| {
            cycle.raise(black_box(0x30)).unwrap();
            let d = cycle.before_run(&ready);
            cycle.commit(&d).unwrap();
            cycle.after_exit(ExitKind::Other);
            d
        })
    });
}

criterion_group!(benches, interruption, kvm_events, injector);
criterion_main!(benches);
