// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The VMM on /dev/kvm: VM and vCPU set-up, guest memory, and the run loop.
//!
//! Shape: decode -> decide -> apply. Each `KVM_RUN` return is decoded once into
//! an [`Exit`] by [`KvmSource`], the pure [`handlers`] decide, and the one
//! run loop ([`crate::run_loop`]) applies the actions to [`KvmSource`]. Before
//! each `KVM_RUN` the injector decides whether to inject one queued interrupt
//! (only when KVM says the guest can take it) or to request an interrupt window.
//! The per-exit path does not allocate.

use std::time::{Duration, Instant};

use kvm_bindings::{kvm_segment, kvm_userspace_memory_region, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use crate::action::Actions;
use crate::apply::{ApplyError, Target};
use crate::config::RunConfig;
use crate::exit::{Exit, HekiAbi, RawExit};
use crate::guests::{Guest, GUEST_LOAD_ADDR};
use crate::handlers::{self, RunState};
use crate::plan::{self, CapStep};
use crate::run_loop::{complete_read, ExitSource, Step, WallClock};
use crate::stop::{Instruction, Outcome, Stop, StopCause, VcpuState};

/// GDT: null, 64-bit code (selector 0x08), data (selector 0x10).
const GDT_ADDR: u64 = 0x500;
const GDT: [u64; 3] = [0, 0x00af_9b00_0000_ffff, 0x00cf_9300_0000_ffff];
/// 4-level page tables identity-mapping the first 1 GiB with 2 MiB pages.
const PML4_ADDR: u64 = 0x9000;
pub(crate) const PDPT_ADDR: u64 = 0xa000;
const PD_ADDR: u64 = 0xb000;
/// Initial stack pointer (grows down, below the 512 KiB mark).
pub(crate) const STACK_TOP: u64 = 0x8_0000;

const CR0_PE: u64 = 1 << 0;
const CR0_MP: u64 = 1 << 1;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_WP: u64 = 1 << 16;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const CR4_OSFXSR: u64 = 1 << 9;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// A run configuration this VMM cannot run (bad usage: exit status 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// More than one vCPU for a guest that keeps its state in guest memory.
    #[error(
        "--vcpus {vcpus}: {guest} runs on one vCPU (it keeps its state in guest memory); \
         pio-loop, halt and timer run on several"
    )]
    Vcpus {
        /// `--vcpus`.
        vcpus: u8,
        /// The guest.
        guest: Guest,
    },
    /// Less than 1 MiB of guest memory.
    #[error("--mem-mib must be at least 1")]
    Memory,
    /// The timer guest runs through [`crate::timer::run`] (its own timer
    /// thread, irqchip and xAPIC), not this run loop.
    #[error("the timer guest runs through reference_vmm::timer::run (`run --guest timer`)")]
    TimerGuest,
    /// `--snapshot-every 0`.
    #[error("--snapshot-every must be at least 1")]
    SnapshotEvery,
    /// `--snapshot-every` with more than one vCPU.
    #[error(
        "--snapshot-every with --vcpus {vcpus}: snapshots are taken of one vCPU (the others \
         would run on while it is saved)"
    )]
    SnapshotVcpus {
        /// `--vcpus`.
        vcpus: u8,
    },
}

/// Errors setting up or running a VM on KVM. Only [`VmmError::Config`] is
/// bad usage; everything else is a run that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VmmError {
    /// The configuration cannot run (bad usage).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// /dev/kvm could not be opened.
    #[error("cannot open /dev/kvm")]
    OpenKvm(#[source] vmm_sys_util::errno::Error),
    /// An ioctl failed.
    #[error("{what} failed")]
    Ioctl {
        /// Which ioctl.
        what: &'static str,
        /// errno.
        #[source]
        source: vmm_sys_util::errno::Error,
    },
    /// Guest memory could not be created.
    #[error("guest memory: cannot map {mib} MiB")]
    MapMemory {
        /// Size.
        mib: u32,
        /// vm-memory's error.
        #[source]
        source: vm_memory::mmap::FromRangesError,
    },
    /// Guest memory could not be written (boot structures, guest image).
    #[error("guest memory: cannot write at 0x{addr:x}")]
    WriteMemory {
        /// Guest physical address.
        addr: u64,
        /// vm-memory's error.
        #[source]
        source: vm_memory::GuestMemoryError,
    },
    /// vcpu-events could not enable its caps.
    #[error("vcpu-events: enabling the event caps")]
    EventCaps(#[source] vcpu_events::kvm::KvmError),
    /// The run watchdog could not be armed.
    #[error("the run watchdog")]
    Watchdog(#[source] crate::watchdog::WatchdogError),
    /// The interrupt injector glue failed.
    #[error(transparent)]
    Injector(#[from] crate::events::InjectorError),
    /// KVM returned exit bytes that do not decode.
    #[error("KVM gave exit {exit_reason} that does not decode")]
    Decode {
        /// `kvm_run.exit_reason`.
        exit_reason: u32,
        /// Why.
        #[source]
        source: crate::exit::DecodeError,
    },
    /// A vCPU thread panicked.
    #[error("vCPU {vcpu} thread panicked")]
    VcpuThreadPanicked {
        /// vCPU index.
        vcpu: usize,
    },
    /// A snapshot could not be taken (KVM_GET_* of the vCPU, reading guest memory).
    #[error("taking a snapshot")]
    Capture(#[source] crate::snapshot::CaptureError),
    /// A snapshot (`resume`) could not be restored into a fresh VM.
    #[error("restoring the snapshot")]
    Restore(#[source] crate::snapshot::RestoreError),
}

impl VmmError {
    /// True for bad usage or input (exit status 2): a configuration that
    /// cannot run, or a snapshot the fresh VM refuses; false for a run that
    /// failed (1).
    pub fn is_usage(&self) -> bool {
        match self {
            VmmError::Config(_) => true,
            VmmError::Restore(e) => e.is_refusal(),
            _ => false,
        }
    }
}

pub(crate) fn ioctl(what: &'static str) -> impl FnOnce(vmm_sys_util::errno::Error) -> VmmError {
    move |source| VmmError::Ioctl { what, source }
}

/// What a run on KVM produced.
#[derive(Debug)]
pub struct KvmRun {
    /// Final handler state (counts, guest reports, policies).
    pub state: RunState,
    /// How it ended.
    pub stop: Stop,
    /// `t0` to the first KVM_RUN.
    pub startup: Duration,
    /// First KVM_RUN to the stop.
    pub run_time: Duration,
    /// The KVM_ENABLE_CAP steps and what happened.
    pub caps: Vec<CapStep>,
    /// Warnings (e.g. notify exits unavailable on this host).
    pub warnings: Vec<String>,
    /// The last snapshot taken (`--snapshot-every`), with the VMM's state at
    /// that point: what `--snapshot-file` writes.
    pub last_snapshot: Option<crate::snapshot::Saved>,
}

/// A VM with its vCPUs, its memory and the guest loaded.
pub struct Vm {
    // Field order is drop order: the vCPU and VM fds go before the memory they map.
    pub(crate) vcpu: VcpuFd,
    /// vCPUs 1.. (only for guests that are reentrant: pio-loop and halt).
    more_vcpus: Vec<VcpuFd>,
    _vm: VmFd,
    _kvm: Kvm,
    /// Guest memory: private, so memslot 0 always points at this mapping;
    /// it lives until every vCPU is joined and the VM fd is closed.
    pub(crate) mem: GuestMemoryMmap,
    caps: Vec<CapStep>,
    warnings: Vec<String>,
    pub(crate) event_caps: vcpu_events::kvm::VmEventCaps,
    pub(crate) kvm_ctx: vcpu_events::validate::KvmContext,
    pub(crate) cfg: RunConfig,
    /// The injector a restored snapshot carried (taken by the first run).
    pub(crate) restored_injector: Option<vcpu_events::injector::Injector>,
}

impl Vm {
    /// Creates the VM for `cfg`: enables the caps of [`plan::cap_steps`], maps
    /// memory, loads the guest, creates vCPU 0 in 64-bit mode.
    pub fn new(cfg: &RunConfig) -> Result<Self, VmmError> {
        let vm = Self::create(cfg)?;
        vm.load_guest()?;
        Ok(vm)
    }

    /// The set-up every VM of a run goes through, fresh or restored: checks
    /// `cfg`, creates the VM, enables the caps, maps memory, creates the
    /// vCPUs (CPUID, 64-bit mode). Guest memory is left zero and the
    /// registers are KVM's: [`Vm::load_guest`] or a snapshot fills them.
    pub(crate) fn create(cfg: &RunConfig) -> Result<Self, VmmError> {
        if cfg.guest == Guest::Timer {
            return Err(ConfigError::TimerGuest.into());
        }
        if cfg.vcpus == 0 || (cfg.vcpus > 1 && !cfg.guest.reentrant()) {
            return Err(ConfigError::Vcpus {
                vcpus: cfg.vcpus,
                guest: cfg.guest,
            }
            .into());
        }
        if cfg.mem_mib == 0 {
            return Err(ConfigError::Memory.into());
        }
        match cfg.snapshot_every {
            Some(0) => return Err(ConfigError::SnapshotEvery.into()),
            Some(_) if cfg.vcpus > 1 => {
                return Err(ConfigError::SnapshotVcpus { vcpus: cfg.vcpus }.into())
            }
            _ => {}
        }
        let kvm = Kvm::new().map_err(VmmError::OpenKvm)?;
        let vm = kvm.create_vm().map_err(ioctl("KVM_CREATE_VM"))?;
        let mut warnings = Vec::new();
        let mut caps = plan::cap_steps(&cfg.policy, |c| vm.check_extension_raw(c.into()));

        // Notify VM exits, through notify-exit (only possible before vCPUs exist).
        let mut pre = notify_exit::kvm::PreVcpuVm::from_new_vm(vm);
        if let Some(nc) = plan::notify_config(&cfg.policy) {
            let r = pre.enable_notify_vmexit(&nc, notify_exit::kvm::Requirement::Optional);
            let step = caps
                .iter_mut()
                .find(|s| s.cap == plan::KVM_CAP_X86_NOTIFY_VMEXIT);
            match (r, step) {
                (Ok(notify_exit::kvm::CapOutcome::Enabled), Some(s)) => s.enabled = Some(true),
                (Ok(_), Some(s)) => s.enabled = Some(false),
                (Err(e), Some(s)) => {
                    s.enabled = Some(false);
                    warnings.push(format!("notify-exit: {e}"));
                }
                _ => {}
            }
        }
        let (vm, _notify_setup) = pre.finish();

        // Exception payload and triple-fault event, through vcpu-events.
        let event_caps = vcpu_events::kvm::enable_event_caps(&vm).map_err(VmmError::EventCaps)?;
        let kvm_ctx = event_caps.kvm_context();
        for s in caps.iter_mut() {
            if s.cap == plan::KVM_CAP_EXCEPTION_PAYLOAD {
                s.enabled = Some(kvm_ctx.exception_payload_enabled);
            } else if s.cap == plan::KVM_CAP_X86_TRIPLE_FAULT_EVENT {
                s.enabled = Some(kvm_ctx.triple_fault_event_enabled);
            }
        }
        for s in &caps {
            if s.enabled != Some(true) {
                if let Some(w) = &s.warning {
                    warnings.push(w.clone());
                }
            }
        }

        let mem = map_guest_memory(&vm, cfg.mem_mib)?;

        let cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(ioctl("KVM_GET_SUPPORTED_CPUID"))?;
        let mut vcpus = Vec::with_capacity(usize::from(cfg.vcpus));
        for id in 0..u64::from(cfg.vcpus) {
            let vcpu = vm.create_vcpu(id).map_err(ioctl("KVM_CREATE_VCPU"))?;
            vcpu.set_cpuid2(&cpuid).map_err(ioctl("KVM_SET_CPUID2"))?;
            setup_long_mode(&vcpu)?;
            vcpus.push(vcpu);
        }
        let mut vcpus = vcpus.into_iter();
        let vcpu = vcpus.next().ok_or(ConfigError::Vcpus {
            vcpus: 0,
            guest: cfg.guest,
        })?;
        let more_vcpus: Vec<VcpuFd> = vcpus.collect();
        Ok(Vm {
            vcpu,
            more_vcpus,
            _vm: vm,
            _kvm: kvm,
            mem,
            caps,
            warnings,
            event_caps,
            kvm_ctx,
            cfg: *cfg,
            restored_injector: None,
        })
    }

    /// Writes the boot structures and the guest image, and points every
    /// vCPU at the guest's entry with its arguments and its own stack.
    fn load_guest(&self) -> Result<(), VmmError> {
        write_boot_structures(&self.mem, self.cfg.guest.image())?;
        let (rdi, rsi, rdx) = guest_args(&self.cfg);
        for (id, vcpu) in std::iter::once(&self.vcpu)
            .chain(self.more_vcpus.iter())
            .enumerate()
        {
            let mut regs = vcpu.get_regs().map_err(ioctl("KVM_GET_REGS"))?;
            regs.rip = GUEST_LOAD_ADDR;
            regs.rsp = STACK_TOP - id as u64 * 0x1000; // a 4 KiB stack each
            regs.rflags = 2;
            regs.rdi = rdi;
            regs.rsi = rsi;
            regs.rdx = rdx;
            vcpu.set_regs(&regs).map_err(ioctl("KVM_SET_REGS"))?;
        }
        Ok(())
    }

    /// Guest memory (read-only view; the mapping itself cannot be replaced).
    pub fn mem(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    /// The vCPU (for examples and tests that drive it directly).
    pub fn vcpu_mut(&mut self) -> &mut VcpuFd {
        &mut self.vcpu
    }

    /// Runs the guest to its end. `t0` is the start of the start-up
    /// measurement. vCPUs 1.. run on scoped threads: every one is joined
    /// before this returns (on every path), so no vCPU can run once the
    /// guest memory goes. With `snapshot_every` the one vCPU runs through
    /// the snapshot driver ([`crate::snapshot`]), which replaces the VM at every snapshot.
    pub fn run(mut self, st: RunState, t0: Instant) -> Result<KvmRun, VmmError> {
        let mut st = st;
        st.notify = handlers::NotifyState::new(&st.policy, self.kvm_ctx.triple_fault_event_enabled);
        let caps = std::mem::take(&mut self.caps);
        let warnings = std::mem::take(&mut self.warnings);
        let first = Instant::now();
        let startup = first.duration_since(t0);
        let (st, stop, last_snapshot) = match self.cfg.snapshot_every {
            Some(every) => {
                let timeout = self.cfg.timeout;
                let go = |w: Option<&crate::watchdog::Watchdog>| {
                    crate::snapshot::run(self, &mut st, w, first, every)
                };
                let (stop, last) = match timeout {
                    Some(t) => crate::watchdog::Watchdog::with(t, |w| go(Some(w)))
                        .map_err(VmmError::Watchdog)?,
                    None => go(None),
                }?;
                (st, stop, last)
            }
            None => {
                let (st, stop) = self.run_threads(st, first)?;
                (st, stop, None)
            }
        };
        let run_time = first.elapsed();
        Ok(KvmRun {
            state: st,
            stop,
            startup,
            run_time,
            caps,
            warnings,
            last_snapshot,
        })
    }

    /// vCPU 0 on this thread, vCPUs 1.. on scoped threads.
    fn run_threads(mut self, st: RunState, first: Instant) -> Result<(RunState, Stop), VmmError> {
        let mut st = st;
        let kvm = self.kvm_ctx;
        let timeout = self.cfg.timeout;
        let injector0 = self.restored_injector.take();
        let mem = &self.mem;
        let more = std::mem::take(&mut self.more_vcpus);
        let vcpu0 = &mut self.vcpu;
        std::thread::scope(|scope| {
            // vCPUs 1.. run the same (reentrant) guest on their own threads,
            // each with its own handler state; their counts are merged below.
            let others: Vec<_> = more
                .into_iter()
                .map(|mut vcpu| {
                    let mut st = st.clone();
                    scope.spawn(move || {
                        run_vcpu(&mut vcpu, mem, kvm, timeout, &mut st, first, None)
                            .map(|s| (st, s))
                    })
                })
                .collect();
            let mut stop = run_vcpu(vcpu0, mem, kvm, timeout, &mut st, first, injector0);
            for (i, t) in others.into_iter().enumerate() {
                let joined = t
                    .join()
                    .map_err(|_| VmmError::VcpuThreadPanicked { vcpu: i + 1 });
                let (other, other_stop) = match (joined.and_then(|r| r), &stop) {
                    (Ok(x), _) => x,
                    (Err(e), Ok(_)) => {
                        stop = Err(e);
                        continue;
                    }
                    (Err(_), Err(_)) => continue,
                };
                st.exits.merge(&other.exits);
                st.channel.ticks += other.channel.ticks;
                if let Ok(s) = &mut stop {
                    if s.outcome == Outcome::Halted && other_stop.outcome != Outcome::Halted {
                        *s = other_stop;
                    }
                }
            }
            stop.map(|s| (st, s))
        })
    }
}

/// The injector a vCPU starts with: the one a snapshot carried, else a fresh
/// one for guests that take interrupts.
pub(crate) fn first_injector(
    restored: Option<vcpu_events::injector::Injector>,
    st: &RunState,
) -> Option<crate::events::IrqInjector> {
    restored
        .map(|injector| crate::events::IrqInjector { injector })
        .or_else(|| (st.irq.target != 0).then(crate::events::IrqInjector::default))
}

/// Runs one vCPU through the run loop, with its own watchdog when `timeout`
/// is set; a guest triple fault is reported with where the vCPU stopped.
fn run_vcpu(
    vcpu: &mut VcpuFd,
    mem: &GuestMemoryMmap,
    kvm: vcpu_events::validate::KvmContext,
    timeout: Option<Duration>,
    st: &mut RunState,
    start: Instant,
    restored: Option<vcpu_events::injector::Injector>,
) -> Result<Stop, VmmError> {
    let mut restored = restored;
    let mut go = |watchdog: Option<&crate::watchdog::Watchdog>| {
        let mut source = KvmSource {
            vcpu: &mut *vcpu,
            mem,
            kvm,
            injector: first_injector(restored.take(), st),
            watchdog,
            abi: st.policy.heki_abi,
            pause_at: None,
            paused: None,
        };
        let stop = crate::run_loop::run(&mut source, st, &mut WallClock::new(start))?;
        if let Some(inj) = source.injector.as_ref() {
            st.irq.queued = inj.queued();
        }
        Ok::<Stop, VmmError>(stop)
    };
    let stop = match timeout {
        Some(t) => {
            crate::watchdog::Watchdog::with(t, |w| go(Some(w))).map_err(VmmError::Watchdog)?
        }
        None => go(None),
    }?;
    Ok(with_vcpu_state(stop, vcpu, mem))
}

/// A guest triple fault is reported with where the vCPU stopped.
pub(crate) fn with_vcpu_state(stop: Stop, vcpu: &VcpuFd, mem: &GuestMemoryMmap) -> Stop {
    match stop.cause {
        StopCause::GuestTripleFault { vcpu: None } => Stop::new(StopCause::GuestTripleFault {
            vcpu: vcpu_state(vcpu, mem),
        }),
        _ => stop,
    }
}

/// Where a stopped vCPU stands: RIP, RAX and the instruction there.
pub fn vcpu_state(vcpu: &VcpuFd, mem: &GuestMemoryMmap) -> Option<VcpuState> {
    let regs = vcpu.get_regs().ok()?;
    let mut b = [0u8; 3];
    let instruction = match mem.read_slice(&mut b, GuestAddress(regs.rip)) {
        Ok(()) => Instruction::decode(b),
        Err(_) => Instruction::Unreadable,
    };
    Some(VcpuState {
        rip: regs.rip,
        rax: regs.rax,
        instruction,
    })
}

/// Guest parameters (rdi, rsi, rdx) per guest; see each guests/*.S header.
fn guest_args(cfg: &RunConfig) -> (u64, u64, u64) {
    match cfg.guest {
        Guest::PioLoop => (cfg.count, 0, 0),
        // Safety bound on stretches: ~5 raises per stretch, so 4 * N + 1000 is ample.
        Guest::IrqStorm => (
            cfg.count,
            cfg.count.saturating_mul(4).saturating_add(1000),
            0,
        ),
        Guest::HekiProbe => crate::heki_probe::guest_args(),
        // Safety bound on stretches: at least ~50 raises per 64-exit stretch
        // while raising, then a few stretches to drain the queue.
        Guest::IrqFlood => (0, cfg.count / 16 + 1000, 0),
        _ => (0, 0, 0),
    }
}

/// Maps `mib` MiB of anonymous guest memory and registers it as memslot 0 of `vm` at
/// guest physical 0.
///
/// The caller keeps the returned memory alive for as long as `vm` exists (both VM
/// types here hold it in a field dropped after the VM fd): KVM keeps the slot's host
/// address until the VM goes.
pub(crate) fn map_guest_memory(vm: &VmFd, mib: u32) -> Result<GuestMemoryMmap, VmmError> {
    let size = u64::from(mib) << 20;
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), size as usize)])
        .map_err(|source| VmmError::MapMemory { mib, source })?;
    let host = mem
        .get_host_address(GuestAddress(0))
        .map_err(|source| VmmError::WriteMemory { addr: 0, source })?;
    let region = kvm_userspace_memory_region {
        slot: 0,
        flags: 0,
        guest_phys_addr: 0,
        memory_size: size,
        userspace_addr: host as u64,
    };
    // SAFETY: `region` describes exactly the mapping owned by `mem`, which is
    // returned to the caller; both callers (`Vm::new`, `timer::vm::build`) store it
    // in the VM struct, whose field order drops it after the VM fd.
    #[allow(unsafe_code)]
    unsafe { vm.set_user_memory_region(region) }.map_err(ioctl("KVM_SET_USER_MEMORY_REGION"))?;
    Ok(mem)
}

/// Writes the GDT, the identity page tables and the guest image.
pub fn write_boot_structures(mem: &GuestMemoryMmap, image: &[u8]) -> Result<(), VmmError> {
    let w = |addr: u64, v: u64| {
        mem.write_obj(v, GuestAddress(addr))
            .map_err(|source| VmmError::WriteMemory { addr, source })
    };
    for (i, d) in GDT.iter().enumerate() {
        w(GDT_ADDR + 8 * i as u64, *d)?;
    }
    w(PML4_ADDR, PDPT_ADDR | 0x3)?; // present, writable
    w(PDPT_ADDR, PD_ADDR | 0x3)?;
    for i in 0..512u64 {
        w(PD_ADDR + 8 * i, (i << 21) | 0x83)?; // present, writable, 2 MiB page
    }
    mem.write_slice(image, GuestAddress(GUEST_LOAD_ADDR))
        .map_err(|source| VmmError::WriteMemory {
            addr: GUEST_LOAD_ADDR,
            source,
        })
}

/// Puts the vCPU in 64-bit long mode, CPL 0, paging on, with the VMM's GDT.
pub fn setup_long_mode(vcpu: &VcpuFd) -> Result<(), VmmError> {
    let mut sregs = vcpu.get_sregs().map_err(ioctl("KVM_GET_SREGS"))?;
    let code = kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: 0x08,
        type_: 0xb, // execute/read, accessed
        present: 1,
        dpl: 0,
        db: 0,
        s: 1,
        l: 1,
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    };
    let data = kvm_segment {
        selector: 0x10,
        type_: 0x3, // read/write, accessed
        db: 1,
        l: 0,
        ..code
    };
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.gdt.base = GDT_ADDR;
    sregs.gdt.limit = (GDT.len() * 8 - 1) as u16;
    sregs.cr3 = PML4_ADDR;
    sregs.cr4 = CR4_PAE | CR4_OSFXSR;
    sregs.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
    sregs.efer = EFER_LME | EFER_LMA;
    vcpu.set_sregs(&sregs).map_err(ioctl("KVM_SET_SREGS"))
}

/// A real vCPU as an exit source and action target: the injector decides
/// before each `KVM_RUN`, exits are decoded once into [`Exit`], and every
/// injection goes through vcpu-events (validated, then KVM_SET_VCPU_EVENTS).
pub struct KvmSource<'a> {
    /// The vCPU.
    pub vcpu: &'a mut VcpuFd,
    /// Guest memory (to name the instruction a stuck vCPU sits at).
    pub mem: &'a GuestMemoryMmap,
    /// What the VM has enabled (for validation).
    pub kvm: vcpu_events::validate::KvmContext,
    /// The userspace-irqchip injector (guests that take interrupts).
    pub injector: Option<crate::events::IrqInjector>,
    /// The run's watchdog, if armed.
    pub watchdog: Option<&'a crate::watchdog::Watchdog>,
    /// How exits 39..=41 are read.
    pub abi: HekiAbi,
    /// Pause for a snapshot once this many exits were handled: right before
    /// the next `KVM_RUN`, after the injector's decision was applied (see
    /// [`crate::snapshot`]).
    pub pause_at: Option<u64>,
    /// The snapshot taken at the pause ([`Step::Pause`]), for the driver.
    pub paused: Option<Box<crate::snapshot::Snapshot>>,
}

impl Target for KvmSource<'_> {
    fn inject(&mut self, event: vcpu_events::Event) -> Result<(), ApplyError> {
        crate::events::inject(self.vcpu, event, &self.kvm)
    }

    fn synthesize_triple_fault(&mut self) -> Result<(), ApplyError> {
        crate::events::inject(self.vcpu, vcpu_events::Event::TripleFault, &self.kvm)
    }
}

impl ExitSource for KvmSource<'_> {
    type Error = VmmError;

    fn next_exit<D>(&mut self, st: &mut RunState, decide: D) -> Result<Step, VmmError>
    where
        D: FnOnce(&Exit, Option<u64>, &mut RunState) -> Actions,
    {
        let reason = loop {
            if let Some(inj) = self.injector.as_mut() {
                inj.before_run(self.vcpu, &mut st.irq)?;
            }
            if self.pause_at.is_some_and(|n| st.exits.total() >= n) {
                // Everything the next KVM_RUN would enter with is in place:
                // the injected vector in KVM's slot, the queue, the window.
                let snap = crate::snapshot::Snapshot::capture(
                    self.vcpu,
                    self.mem,
                    self.injector.as_ref().map(|i| &i.injector),
                    st.exits.total(),
                )
                .map_err(VmmError::Capture)?;
                self.paused = Some(Box::new(snap));
                return Ok(Step::Pause);
            }
            match self.vcpu.run() {
                Ok(VcpuExit::IoIn(port, data)) => {
                    let exit = Exit::IoIn {
                        port,
                        size: data.len().min(8) as u8,
                        count: 1,
                    };
                    if let Some(inj) = self.injector.as_mut() {
                        inj.after_exit(false);
                    }
                    let actions = decide(&exit, None, st);
                    complete_read(&actions, data);
                    return Ok(Step::Decided(actions));
                }
                Ok(VcpuExit::MmioRead(addr, data)) => {
                    let exit = Exit::Mmio {
                        addr,
                        is_write: false,
                    };
                    if let Some(inj) = self.injector.as_mut() {
                        inj.after_exit(false);
                    }
                    let actions = decide(&exit, None, st);
                    complete_read(&actions, data);
                    return Ok(Step::Decided(actions));
                }
                Ok(ve) => match decode_vcpu_exit(ve) {
                    Decoded::Exit(exit) => {
                        if let Some(inj) = self.injector.as_mut() {
                            inj.after_exit(exit == Exit::IrqWindowOpen);
                        }
                        return Ok(Step::Decided(decide(&exit, None, st)));
                    }
                    Decoded::FromUnion(reason) => break reason,
                    Decoded::FromKvmRun => break self.vcpu.get_kvm_run().exit_reason,
                },
                Err(e) if e.errno() == EINTR => {
                    if let Some(w) = self.watchdog.filter(|w| w.fired()) {
                        return Ok(Step::Stop(StopCause::Timeout {
                            after_ms: w.timeout().as_millis() as u64,
                            vcpu: vcpu_state(self.vcpu, self.mem),
                        }));
                    }
                }
                Err(e) => {
                    return Err(VmmError::Ioctl {
                        what: "KVM_RUN",
                        source: e,
                    })
                }
            }
        };
        // Everything kvm-ioctls does not decode (notably KVM_EXIT_NOTIFY = 37,
        // Heki exits, internal errors) is decoded from the raw union bytes,
        // like a trace line.
        let raw = raw_exit(self.vcpu, reason);
        let exit = Exit::decode(&raw, self.abi).map_err(|source| VmmError::Decode {
            exit_reason: reason,
            source,
        })?;
        if let Some(inj) = self.injector.as_mut() {
            inj.after_exit(false);
        }
        Ok(Step::Decided(decide(&exit, None, st)))
    }
}

/// Reads the exit union of kvm_run after `KVM_RUN` returned `reason` (through
/// [`x86_kvm_base::kvm_run::KvmRunExit`], the one reader of the union).
fn raw_exit(vcpu: &mut VcpuFd, reason: u32) -> RawExit {
    let exit = x86_kvm_base::kvm_run::KvmRunExit::from_kvm_run(vcpu.get_kvm_run());
    RawExit::new(reason).with_union(exit.union())
}

/// What `VcpuFd::run` returned, decoded without the exit's data borrow.
enum Decoded {
    /// Decoded.
    Exit(Exit),
    /// kvm-ioctls does not decode it: read the union for this exit reason.
    FromUnion(u32),
    /// kvm-ioctls decodes it into a variant this VMM does not read: take the
    /// reason from kvm_run and decode the union.
    FromKvmRun,
}

/// Decodes what `VcpuFd::run` returned (reads are handled by the caller,
/// which answers them while their data is borrowed). No allocation.
#[inline]
fn decode_vcpu_exit(ve: VcpuExit<'_>) -> Decoded {
    Decoded::Exit(match ve {
        VcpuExit::IoOut(port, data) => {
            let mut b = [0u8; 8];
            let n = data.len().min(8);
            b[..n].copy_from_slice(&data[..n]);
            Exit::IoOut {
                port,
                size: n as u8,
                count: 1,
                data: u64::from_le_bytes(b),
            }
        }
        VcpuExit::Hlt => Exit::Hlt,
        VcpuExit::IrqWindowOpen => Exit::IrqWindowOpen,
        VcpuExit::Shutdown => Exit::Shutdown,
        VcpuExit::Intr => Exit::Intr,
        VcpuExit::FailEntry(reason, cpu) => Exit::FailEntry {
            hardware_entry_failure_reason: reason,
            cpu,
        },
        VcpuExit::MmioWrite(addr, _) => Exit::Mmio {
            addr,
            is_write: true,
        },
        VcpuExit::InternalError => return Decoded::FromUnion(crate::exit::KVM_EXIT_INTERNAL_ERROR),
        VcpuExit::Unsupported(r) => return Decoded::FromUnion(r),
        VcpuExit::SystemEvent(..) => return Decoded::FromUnion(crate::exit::KVM_EXIT_SYSTEM_EVENT),
        _ => return Decoded::FromKvmRun,
    })
}

const EINTR: i32 = 4;

/// Convenience: set up and run `cfg`, timing start-up from `t0`.
pub fn run(cfg: &RunConfig, t0: Instant) -> Result<KvmRun, VmmError> {
    let vm = Vm::new(cfg)?;
    vm.run(RunState::new(cfg), t0)
}

/// True if /dev/kvm can be opened.
pub fn kvm_available() -> bool {
    Kvm::new().is_ok()
}
