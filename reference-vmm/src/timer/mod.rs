// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The `timer` guest: interrupts raised by a host timer thread on N vCPUs.
//!
//! ```text
//! reference-vmm run --guest timer --vcpus N --rate HZ --seconds S [--irqchip user|kernel]
//!                    [--snapshot-every N]
//! ```
//!
//! One timer thread per VM raises [`TIMER_VECTOR`] on every vCPU at `HZ`
//! for `S` seconds. The guest (guests/timer.S) acknowledges each interrupt
//! with one port write (the host timestamps it: raise -> acknowledgement
//! latency), EOIs its xAPIC, and spends long stretches with interrupts masked.
//!
//! * `--irqchip user` (default): the timer raises through vcpu-events'
//!   [`RaiseHandle`](vcpu_events::raise::RaiseHandle) (queue + kick); each
//!   vCPU thread runs [`run_with_kicks`](vcpu_events::kvm::kick::run_with_kicks)
//!   and the VMM answers the guest's xAPIC MMIO itself ([`xapic`]). The
//!   accounting is vcpu-events': requested = delivered + coalesced + refused
//!   + pending, and `lost` is what that sum misses (must be 0).
//! * `--irqchip kernel`: KVM_CREATE_IRQCHIP before the vCPUs; the timer sends
//!   KVM_SIGNAL_MSI to each vCPU's local APIC ([`kernel`]). KVM merges a
//!   vector still set in the IRR without telling, so here `delivered` is what
//!   the guest acknowledged, `refused` what KVM_SIGNAL_MSI blocked or failed,
//!   and `coalesced` = requested - delivered - refused (so `lost` is 0 by
//!   construction and `pending` is 0: the guest drains before it stops).
//!
//! With `--snapshot-every N` (either irqchip) every vCPU is paused,
//! snapshotted and restored into a fresh VM after every N-th exit while the
//! timer keeps raising ([`snapshot`]; with `--irqchip kernel` the in-kernel
//! PICs, IOAPIC, LAPICs and MP states are saved and restored too).

pub mod kernel;
pub mod latency;
pub mod report;
pub mod snapshot;
pub mod user;
pub mod vm;
pub mod xapic;

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::{Duration, Instant};

use serde::Serialize;
use vcpu_events::injector::Injector;
use vcpu_events::kvm::kick::KickSignal;
use vcpu_events::raise::{Accounting, VcpuInterrupts};

use crate::guests::TIMER_VECTOR;
use crate::vmm::VmmError;
use latency::Stamp;
pub use report::{TimerReport, VcpuTimerReport};

/// Who delivers the interrupts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Irqchip {
    /// The VMM: vcpu-events' raise handle, kick and KVM_INTERRUPT.
    User,
    /// KVM's in-kernel irqchip (KVM_CREATE_IRQCHIP, KVM_SIGNAL_MSI).
    Kernel,
}

impl Irqchip {
    /// The name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Irqchip::User => "user",
            Irqchip::Kernel => "kernel",
        }
    }
}

/// A timer run.
#[derive(Clone, Debug, PartialEq)]
pub struct TimerConfig {
    /// vCPUs (1..=64).
    pub vcpus: u8,
    /// Raises per second per vCPU (1..=1,000,000).
    pub rate_hz: u32,
    /// How long the timer raises.
    pub duration: Duration,
    /// Who delivers.
    pub irqchip: Irqchip,
    /// Busy-loop iterations of each interrupts-masked stretch (guest rdi).
    pub masked_iterations: u64,
    /// Busy-loop iterations of each open stretch (guest rsi).
    pub open_iterations: u64,
    /// The injector's queue bound (user path).
    pub queue_capacity: usize,
    /// Give up (error) when the guest is not done this long after the timer stops.
    pub drain_timeout: Duration,
    /// Pause after every N-th exit (counted over all vCPUs), snapshot every
    /// vCPU and guest memory, destroy the VM and restore into a fresh one
    /// ([`snapshot`]; either irqchip).
    pub snapshot_every: Option<u64>,
}

impl TimerConfig {
    /// Defaults: 1 vCPU, 1000 Hz, 1 s, user irqchip; masked stretches of
    /// 40 busy-loop iterations, open stretches of 10 (on this project's
    /// software-virtualized test host a round takes a few hundred µs, well
    /// under a 1000 Hz period, so both paths can deliver every tick).
    pub fn new(irqchip: Irqchip) -> Self {
        TimerConfig {
            vcpus: 1,
            rate_hz: 1000,
            duration: Duration::from_secs(1),
            irqchip,
            masked_iterations: 40,
            open_iterations: 10,
            queue_capacity: vcpu_events::injector::DEFAULT_CAPACITY,
            drain_timeout: Duration::from_secs(10),
            snapshot_every: None,
        }
    }
}

/// A timer configuration that cannot run (bad usage).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TimerConfigError {
    /// `--vcpus` out of range.
    #[error("--vcpus {0}: the timer guest runs on 1 to 64 vCPUs")]
    Vcpus(u8),
    /// `--rate` out of range.
    #[error("--rate {0}: must be 1 to 1000000 Hz")]
    Rate(u32),
    /// `--seconds` out of range.
    #[error("--seconds: must be more than 0 and at most 3600")]
    Duration,
    /// `--snapshot-every 0`.
    #[error("--snapshot-every 0: must be at least 1")]
    SnapshotEvery,
}

/// Errors of a timer run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TimerError {
    /// Bad usage.
    #[error(transparent)]
    Config(#[from] TimerConfigError),
    /// Setting up the VM failed.
    #[error(transparent)]
    Vmm(#[from] VmmError),
    /// The injector could not be created.
    #[error("vcpu-events injector")]
    Injector(#[source] vcpu_events::injector::InjectorError),
    /// The kick signal or the kicked run failed (includes an in-kernel
    /// irqchip refused at set-up by `check_userspace_irqchip`).
    #[error("vCPU {vcpu}: kicked run")]
    Kick {
        /// vCPU index.
        vcpu: usize,
        /// vcpu-events' error.
        #[source]
        source: vcpu_events::kvm::kick::KickError,
    },
    /// KVM_RUN failed.
    #[error("vCPU {vcpu}: KVM_RUN failed")]
    Run {
        /// vCPU index.
        vcpu: usize,
        /// errno.
        #[source]
        source: vmm_sys_util::errno::Error,
    },
    /// A delivery the injector did not expect.
    #[error("vCPU {vcpu}: delivery report")]
    Delivery {
        /// vCPU index.
        vcpu: usize,
        /// vcpu-events' error.
        #[source]
        source: vcpu_events::injector::InjectorError,
    },
    /// The guest's xAPIC access is not one the VMM answers.
    #[error("vCPU {vcpu}: xAPIC")]
    Apic {
        /// vCPU index.
        vcpu: usize,
        /// Why.
        #[source]
        source: xapic::XApicError,
    },
    /// An exit the timer guest never makes.
    #[error("vCPU {vcpu}: unexpected exit {exit}")]
    UnexpectedExit {
        /// vCPU index.
        vcpu: usize,
        /// The exit, as kvm-ioctls prints it.
        exit: String,
    },
    /// The guest was not done within the drain timeout.
    #[error("vCPU {vcpu}: not done within the drain timeout")]
    NotDone {
        /// vCPU index.
        vcpu: usize,
    },
    /// A snapshot or restore failed.
    #[error("vCPU {vcpu}: snapshot")]
    Snapshot {
        /// vCPU index.
        vcpu: usize,
        /// Why.
        #[source]
        source: snapshot::TimerSnapshotError,
    },
    /// A thread panicked.
    #[error("a timer-run thread panicked")]
    ThreadPanicked,
}

impl TimerError {
    /// True for bad usage (exit status 2).
    pub fn is_usage(&self) -> bool {
        matches!(self, TimerError::Config(_)) || matches!(self, TimerError::Vmm(e) if e.is_usage())
    }
}

/// What every vCPU thread of a timer run is given besides its vCPU.
#[derive(Clone, Copy)]
pub struct VcpuThread<'a> {
    /// vCPU index (= APIC ID).
    pub id: usize,
    /// Its latency stamp.
    pub stamp: &'a Stamp,
    /// Set once the timer thread has stopped.
    pub stopping: &'a AtomicBool,
    /// Run start (latency clock).
    pub start: Instant,
    /// Give up after this.
    pub deadline: Instant,
    /// Latency samples to reserve up front (no allocation per exit).
    pub samples: usize,
    /// The pause rendezvous (`--snapshot-every`).
    pub pauses: Option<&'a snapshot::Pauses<'a>>,
}

/// Who holds the VM (without its vCPUs) while the threads run (one per run: no box).
#[allow(clippy::large_enum_variant)]
enum VmOwner<'a> {
    /// `--snapshot-every`: the pause rendezvous, which replaces it at every restore.
    Rendezvous(snapshot::Pauses<'a>),
    /// The run itself: the VM (with guest memory) lives until the threads end.
    Run(vm::TimerVm),
}

impl<'a> VmOwner<'a> {
    /// The owner for `cfg`, given `vm` whose `vcpus` vCPUs were taken out.
    fn new(
        cfg: &'a TimerConfig,
        vm: vm::TimerVm,
        vcpus: usize,
        handles: Vec<vcpu_events::raise::RaiseHandle>,
    ) -> Self {
        match cfg.snapshot_every {
            Some(every) => {
                VmOwner::Rendezvous(snapshot::Pauses::new(cfg, every, vm, vcpus, handles))
            }
            None => VmOwner::Run(vm),
        }
    }

    fn pauses(&self) -> Option<&snapshot::Pauses<'a>> {
        match self {
            VmOwner::Rendezvous(p) => Some(p),
            VmOwner::Run(_) => None,
        }
    }
}

/// What one vCPU thread saw.
#[derive(Debug, Default)]
pub struct VcpuRun {
    /// Acknowledgements (both ports).
    pub acked: u64,
    /// Acknowledgements on the masked port.
    pub acked_masked: u64,
    /// EOI writes the VMM answered (user path; the kernel's LAPIC takes them otherwise).
    pub eois: u64,
    /// Exits returned to userspace.
    pub exits: u64,
    /// Raise -> acknowledgement latencies.
    pub latencies_ns: Vec<u64>,
    /// vcpu-events' accounting (user path).
    pub accounting: Option<Accounting>,
    /// Snapshots of this vCPU taken (`--snapshot-every`).
    pub snapshots: u64,
    /// Snapshots of this vCPU restored into a fresh VM.
    pub restores: u64,
    /// Raises the timer made on this vCPU while it was paused for a snapshot
    /// (queued, coalesced or refused by the injector, and counted).
    pub raised_while_paused: u64,
    /// Snapshots at which the vCPU's in-kernel LAPIC held the timer vector in
    /// its IRR: raised, not yet delivered, carried into the fresh VM
    /// (`--irqchip kernel`).
    pub held_in_lapic: u64,
    /// Time this vCPU spent paused (from its safe point to running again in the
    /// fresh VM), over all pauses.
    pub paused: Duration,
    /// The longest single pause.
    pub longest_pause: Duration,
}

impl VcpuRun {
    fn with_capacity(n: usize) -> Self {
        VcpuRun {
            latencies_ns: Vec::with_capacity(n),
            ..Default::default()
        }
    }

    /// One more restore, after a pause of `took`.
    fn restored(&mut self, took: Duration) {
        self.restores += 1;
        self.paused += took;
        self.longest_pause = self.longest_pause.max(took);
    }
}

/// What the timer thread did for one vCPU (kernel path; the user path's
/// raises are counted by vcpu-events).
#[derive(Debug, Default, Clone, Copy)]
struct Raised {
    requested: u64,
    refused: u64,
}

/// The timer thread: every 1/`rate` (catching up in bursts when late),
/// stamps and raises for every vCPU until `duration` has passed.
fn timer_thread(
    cfg: &TimerConfig,
    start: Instant,
    stamps: &[Stamp],
    mut raise: impl FnMut(usize) -> bool,
) -> Vec<Raised> {
    let mut raised = vec![Raised::default(); stamps.len()];
    let period = Duration::from_secs(1) / cfg.rate_hz.max(1);
    let mut next = start;
    loop {
        let now = Instant::now();
        if now.duration_since(start) >= cfg.duration {
            return raised;
        }
        if now < next {
            std::thread::sleep(next - now);
            continue;
        }
        let t = now.duration_since(start).as_nanos() as u64;
        for (i, (s, r)) in stamps.iter().zip(raised.iter_mut()).enumerate() {
            s.mark(t);
            r.requested += 1;
            if !raise(i) {
                r.refused += 1;
            }
        }
        next += period;
    }
}

/// Checks `cfg`.
pub fn validate(cfg: &TimerConfig) -> Result<(), TimerConfigError> {
    if cfg.vcpus == 0 || cfg.vcpus > 64 {
        return Err(TimerConfigError::Vcpus(cfg.vcpus));
    }
    if cfg.rate_hz == 0 || cfg.rate_hz > 1_000_000 {
        return Err(TimerConfigError::Rate(cfg.rate_hz));
    }
    if cfg.duration.is_zero() || cfg.duration > Duration::from_secs(3600) {
        return Err(TimerConfigError::Duration);
    }
    if cfg.snapshot_every == Some(0) {
        return Err(TimerConfigError::SnapshotEvery);
    }
    Ok(())
}

/// Runs the timer guest and reports.
pub fn run(cfg: &TimerConfig) -> Result<TimerReport, TimerError> {
    validate(cfg)?;
    let mut tvm = vm::build(cfg)?;
    let stamps: Vec<Stamp> = (0..cfg.vcpus).map(|_| Stamp::default()).collect();
    let stopping = AtomicBool::new(false);
    let start = Instant::now();
    let deadline = start + cfg.duration + cfg.drain_timeout;
    // At most one sample per raise: reserve them all (bounded), so the exit
    // path does not allocate.
    let samples = (cfg.duration.as_secs_f64() * f64::from(cfg.rate_hz) + 16.0).min(4e6) as usize;
    let vcpus = std::mem::take(&mut tvm.vcpus);
    let thread = |id, pauses| VcpuThread {
        id,
        stamp: &stamps[id],
        stopping: &stopping,
        start,
        deadline,
        samples,
        pauses,
    };
    let (runs, raised) = match cfg.irqchip {
        Irqchip::User => {
            let signal = KickSignal::install(user::KICK_SIGNAL_OFFSET)
                .map_err(|source| TimerError::Kick { vcpu: 0, source })?;
            let mut ints = Vec::with_capacity(vcpus.len());
            for _ in 0..vcpus.len() {
                let inj =
                    Injector::with_capacity(cfg.queue_capacity).map_err(TimerError::Injector)?;
                ints.push(VcpuInterrupts::new(inj));
            }
            let handles: Vec<_> = ints.iter().map(|i| i.handle()).collect();
            let owner = VmOwner::new(cfg, tvm, vcpus.len(), handles.clone());
            let pauses = owner.pauses();
            std::thread::scope(|s| {
                let threads: Vec<_> = vcpus
                    .into_iter()
                    .zip(ints)
                    .enumerate()
                    .map(|(id, (vcpu, interrupts))| {
                        let u = user::UserVcpu {
                            thread: thread(id, pauses),
                            vcpu,
                            interrupts,
                        };
                        s.spawn(move || user::run_vcpu(u, signal))
                    })
                    .collect();
                let raised = timer_thread(cfg, start, &stamps, |i| {
                    handles[i].raise(TIMER_VECTOR).is_ok()
                });
                stopping.store(true, SeqCst);
                join(threads).map(|r| (r, raised))
            })?
        }
        Irqchip::Kernel => {
            // With --snapshot-every the timer's MSIs go through the rendezvous
            // (never to a VM being saved or rebuilt).
            let owner = VmOwner::new(cfg, tvm, vcpus.len(), Vec::new());
            let pauses = owner.pauses();
            std::thread::scope(|s| {
                let threads: Vec<_> = vcpus
                    .into_iter()
                    .enumerate()
                    .map(|(id, vcpu)| {
                        let thread = thread(id, pauses);
                        s.spawn(move || kernel::run_vcpu(thread, vcpu))
                    })
                    .collect();
                let raised = timer_thread(cfg, start, &stamps, |i| {
                    let outcome = match &owner {
                        VmOwner::Rendezvous(p) => p.signal_msi(i, TIMER_VECTOR),
                        VmOwner::Run(t) => kernel::signal_msi(&t.vm, i as u8, TIMER_VECTOR),
                    };
                    outcome == kernel::MsiOutcome::Accepted
                });
                stopping.store(true, SeqCst);
                join(threads).map(|r| (r, raised))
            })?
        }
    };
    let elapsed = start.elapsed();
    Ok(report::build(cfg, runs, &raised, elapsed))
}

fn join<'s>(
    threads: Vec<std::thread::ScopedJoinHandle<'s, Result<VcpuRun, TimerError>>>,
) -> Result<Vec<VcpuRun>, TimerError> {
    let mut out = Vec::with_capacity(threads.len());
    let mut first_err = None;
    for t in threads {
        match t.join() {
            Ok(Ok(r)) => out.push(r),
            Ok(Err(e)) => {
                // "The fresh VM was not built" gives way to the thread that says why.
                let rebuild_failed = |e: &TimerError| {
                    matches!(
                        e,
                        TimerError::Snapshot {
                            source: snapshot::TimerSnapshotError::RebuildFailed,
                            ..
                        }
                    )
                };
                if first_err.as_ref().is_none_or(rebuild_failed) {
                    first_err = Some(e);
                }
            }
            Err(_) => {
                first_err.get_or_insert(TimerError::ThreadPanicked);
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}
