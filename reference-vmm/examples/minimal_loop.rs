// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The bare kvm-ioctls run loop on the same `pio-loop` guest bytes, for
//! comparing exit throughput with reference-vmm's decode -> decide -> apply loop.
//!
//! ```text
//! cargo run --release -p reference-vmm --example minimal_loop -- --count 1000000
//! cargo run --release -p reference-vmm --example minimal_loop -- --compare --count 200000 --rounds 7
//! ```
//!
//! Without `--compare` it prints one JSON line:
//! `{"exits_total": E, "run_seconds": S, "exits_per_sec": R, "startup_us": U}`
//! (`startup_us` from process start to the first KVM_RUN, as reference-vmm measures it;
//! `run_seconds` covers only the KVM_RUN loop). The VM set-up (memory, long mode,
//! guest image) is reference-vmm's, so both loops run the identical guest; only the
//! loop differs. With `--compare` it interleaves both loops `--rounds` times and
//! prints the medians and the ratio.

use std::time::Instant;

use kvm_ioctls::VcpuExit;
use reference_vmm::config::RunConfig;
use reference_vmm::guests::{Guest, PORT_TICK};
use reference_vmm::vmm::{self, Vm};

/// The minimal loop: KVM_RUN, count, until `hlt`. Returns (exits, seconds, startup).
fn minimal(count: u64, t0: Instant) -> (u64, f64, u128) {
    let mut cfg = RunConfig::new(Guest::PioLoop);
    cfg.count = count;
    let mut vm = Vm::new(&cfg).expect("VM set-up");
    let vcpu = vm.vcpu_mut();
    let mut exits = 0u64;
    let start = Instant::now();
    let startup = start.duration_since(t0).as_micros();
    loop {
        match vcpu.run().expect("KVM_RUN") {
            VcpuExit::IoOut(port, _) if port == PORT_TICK => exits += 1,
            VcpuExit::Hlt => {
                exits += 1;
                break;
            }
            other => panic!("unexpected exit {other:?}"),
        }
    }
    (exits, start.elapsed().as_secs_f64(), startup)
}

/// The reference-vmm loop on the same guest.
fn reference(count: u64) -> (u64, f64) {
    let mut cfg = RunConfig::new(Guest::PioLoop);
    cfg.count = count;
    let r = vmm::run(&cfg, Instant::now()).expect("reference-vmm run");
    (r.state.exits.total(), r.run_time.as_secs_f64())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let t0 = Instant::now();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut count = 1_000_000u64;
    let mut rounds = 7usize;
    let mut compare = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--compare" => compare = true,
            "--count" => count = it.next().and_then(|v| v.parse().ok()).expect("--count N"),
            "--rounds" => rounds = it.next().and_then(|v| v.parse().ok()).expect("--rounds N"),
            n => {
                count = n
                    .parse()
                    .expect("usage: minimal_loop [--count] N [--compare] [--rounds R]")
            }
        }
    }
    if !compare {
        let (exits, secs, startup) = minimal(count, t0);
        println!(
            "{{\"exits_total\": {exits}, \"run_seconds\": {secs:.6}, \"exits_per_sec\": {:.0}, \"startup_us\": {startup}}}",
            exits as f64 / secs
        );
        return;
    }
    let (mut m, mut r, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        // Alternate the order so drift on a shared machine hits both loops alike.
        let (mm, rr) = if round % 2 == 0 {
            let (e, s, _) = minimal(count, Instant::now());
            let a = e as f64 / s;
            let (e, s) = reference(count);
            (a, e as f64 / s)
        } else {
            let (e, s) = reference(count);
            let b = e as f64 / s;
            let (e, s, _) = minimal(count, Instant::now());
            (e as f64 / s, b)
        };
        m.push(mm);
        r.push(rr);
        ratios.push(rr / mm);
    }
    let best = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    println!("pio-loop, {count} exits per run, {rounds} interleaved rounds");
    println!(
        "minimal kvm-ioctls loop: median {:.0} exits/s, best {:.0}  (rounds: {m:.0?})",
        median(m.clone()),
        best(&m)
    );
    println!(
        "reference-vmm loop:      median {:.0} exits/s, best {:.0}  (rounds: {r:.0?})",
        median(r.clone()),
        best(&r)
    );
    println!(
        "ratio reference/minimal: median of per-round ratios {:.3}, best/best {:.3}",
        median(ratios),
        best(&r) / best(&m)
    );
}
