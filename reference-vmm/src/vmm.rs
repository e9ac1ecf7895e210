// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The VMM on /dev/kvm: VM and vCPU set-up, guest memory, and the run loop.
//!
//! Shape: decode -> decide -> apply. Each `KVM_RUN` return is decoded once into
//! an [`Exit`], the pure [`handlers`] decide, and
//! [`apply`] performs the actions on [`KvmTarget`]. Before
//! each `KVM_RUN` the injector decides whether to inject one queued interrupt
//! (only when KVM says the guest can take it) or to request an interrupt window.
//! The per-exit path does not allocate.

use std::time::{Duration, Instant};

use kvm_bindings::{kvm_segment, kvm_userspace_memory_region, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use crate::apply::{apply, ApplyError, Stop, Target};
use crate::config::RunConfig;
use crate::exit::{Exit, RawExit};
use crate::guests::{Guest, GUEST_LOAD_ADDR};
use crate::handlers::{self, RunState};
use crate::plan::{self, CapStep};

/// GDT: null, 64-bit code (selector 0x08), data (selector 0x10).
const GDT_ADDR: u64 = 0x500;
const GDT: [u64; 3] = [0, 0x00af_9b00_0000_ffff, 0x00cf_9300_0000_ffff];
/// 4-level page tables identity-mapping the first 1 GiB with 2 MiB pages.
const PML4_ADDR: u64 = 0x9000;
const PDPT_ADDR: u64 = 0xa000;
const PD_ADDR: u64 = 0xb000;
/// Initial stack pointer (grows down, below the 512 KiB mark).
const STACK_TOP: u64 = 0x8_0000;

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

/// Errors setting up or running a VM.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VmmError {
    /// /dev/kvm could not be opened.
    #[error("cannot open /dev/kvm: {0}")]
    OpenKvm(vmm_sys_util::errno::Error),
    /// An ioctl failed.
    #[error("{what} failed: {source}")]
    Ioctl {
        /// Which ioctl.
        what: &'static str,
        /// errno.
        source: vmm_sys_util::errno::Error,
    },
    /// Guest memory could not be created or written.
    #[error("guest memory: {0}")]
    Memory(String),
    /// A configuration this VMM does not support.
    #[error("{0}")]
    Config(String),
}

fn ioctl(what: &'static str) -> impl FnOnce(vmm_sys_util::errno::Error) -> VmmError {
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
}

/// A VM with its vCPUs, its memory and the guest loaded.
pub struct Vm {
    // Field order is drop order: the vCPU and VM fds go before the memory they map.
    vcpu: VcpuFd,
    /// vCPUs 1.. (only for guests that are reentrant: pio-loop and halt).
    more_vcpus: Vec<VcpuFd>,
    _vm: VmFd,
    _kvm: Kvm,
    /// Guest memory (kept alive for the VM's lifetime).
    pub mem: GuestMemoryMmap,
    caps: Vec<CapStep>,
    warnings: Vec<String>,
    kvm_ctx: vcpu_events::validate::KvmContext,
    timeout: Option<Duration>,
}

impl Vm {
    /// Creates the VM for `cfg`: enables the caps of [`plan::cap_steps`], maps
    /// memory, loads the guest, creates vCPU 0 in 64-bit mode.
    pub fn new(cfg: &RunConfig) -> Result<Self, VmmError> {
        if cfg.vcpus == 0 || (cfg.vcpus > 1 && !cfg.guest.reentrant()) {
            return Err(VmmError::Config(format!(
                "--vcpus {}: {} runs on one vCPU (it keeps its state in guest memory); \
                 pio-loop and halt run on several",
                cfg.vcpus, cfg.guest
            )));
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
        let ev = vcpu_events::kvm::enable_event_caps(&vm)
            .map_err(|e| VmmError::Config(format!("vcpu-events: {e}")))?;
        let kvm_ctx = ev.kvm_context();
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

        let mem_size = u64::from(cfg.mem_mib) << 20;
        if mem_size < 1 << 20 {
            return Err(VmmError::Config("--mem-mib must be at least 1".into()));
        }
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), mem_size as usize)])
            .map_err(|e| VmmError::Memory(e.to_string()))?;
        let host = mem
            .get_host_address(GuestAddress(0))
            .map_err(|e| VmmError::Memory(e.to_string()))?;
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: mem_size,
            userspace_addr: host as u64,
        };
        // SAFETY: `region` describes exactly the mapping owned by `mem`, which
        // lives in the returned `Vm` and is dropped after the VM fd.
        #[allow(unsafe_code)]
        unsafe { vm.set_user_memory_region(region) }
            .map_err(ioctl("KVM_SET_USER_MEMORY_REGION"))?;
        write_boot_structures(&mem, cfg.guest.image())?;

        let cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(ioctl("KVM_GET_SUPPORTED_CPUID"))?;
        let (rdi, rsi, rdx) = guest_args(cfg);
        let mut vcpus = Vec::with_capacity(usize::from(cfg.vcpus));
        for id in 0..u64::from(cfg.vcpus) {
            let vcpu = vm.create_vcpu(id).map_err(ioctl("KVM_CREATE_VCPU"))?;
            vcpu.set_cpuid2(&cpuid).map_err(ioctl("KVM_SET_CPUID2"))?;
            setup_long_mode(&vcpu)?;
            let mut regs = vcpu.get_regs().map_err(ioctl("KVM_GET_REGS"))?;
            regs.rip = GUEST_LOAD_ADDR;
            regs.rsp = STACK_TOP - id * 0x1000; // a 4 KiB stack each
            regs.rflags = 2;
            regs.rdi = rdi;
            regs.rsi = rsi;
            regs.rdx = rdx;
            vcpu.set_regs(&regs).map_err(ioctl("KVM_SET_REGS"))?;
            vcpus.push(vcpu);
        }
        let mut vcpus = vcpus.into_iter();
        let vcpu = vcpus
            .next()
            .ok_or_else(|| VmmError::Config("no vCPU".into()))?;
        let more_vcpus: Vec<VcpuFd> = vcpus.collect();
        Ok(Vm {
            vcpu,
            more_vcpus,
            _vm: vm,
            _kvm: kvm,
            mem,
            caps,
            warnings,
            kvm_ctx,
            timeout: cfg.timeout,
        })
    }

    /// The vCPU (for examples and tests that drive it directly).
    pub fn vcpu_mut(&mut self) -> &mut VcpuFd {
        &mut self.vcpu
    }

    /// Runs the guest to its end. `t0` is the start of the start-up measurement.
    pub fn run(mut self, st: RunState, t0: Instant) -> Result<KvmRun, VmmError> {
        let mut st = st;
        st.notify = handlers::NotifyState::new(
            st.policy.notify_mode,
            self.kvm_ctx.triple_fault_event_enabled,
        );
        let watchdog = self
            .timeout
            .map(crate::watchdog::Watchdog::arm)
            .transpose()?;
        let kvm = self.kvm_ctx;
        let first = Instant::now();
        let startup = first.duration_since(t0);
        // vCPUs 1.. run the same (reentrant) guest on their own threads, each
        // with its own handler state; their counts are merged below.
        let others: Vec<_> = self
            .more_vcpus
            .drain(..)
            .map(|mut vcpu| {
                let mut st = st.clone();
                std::thread::spawn(move || {
                    let mut target = KvmTarget {
                        vcpu: &mut vcpu,
                        kvm,
                    };
                    run_loop(&mut target, &mut st, None, first).map(|stop| (st, stop))
                })
            })
            .collect();
        let mut target = KvmTarget {
            vcpu: &mut self.vcpu,
            kvm,
        };
        let mut stop = run_loop(&mut target, &mut st, watchdog.as_ref(), first)?;
        for t in others {
            let (other, other_stop) = t
                .join()
                .map_err(|_| VmmError::Config("a vCPU thread panicked".into()))??;
            st.exits.merge(&other.exits);
            st.channel.ticks += other.channel.ticks;
            if stop.outcome == crate::action::Outcome::Halted
                && other_stop.outcome != crate::action::Outcome::Halted
            {
                stop = other_stop;
            }
        }
        let run_time = first.elapsed();
        drop(watchdog);
        if stop.outcome == crate::action::Outcome::Timeout {
            stop.reason.push_str(&stuck_at(&self.vcpu, &self.mem));
        }
        if stop.outcome == crate::action::Outcome::Shutdown
            && stop.reason == crate::action::Cause::GuestTripleFault.to_string()
        {
            stop.reason.push_str(&faulted_at(&self.vcpu, &self.mem));
        }
        Ok(KvmRun {
            state: st,
            stop,
            startup,
            run_time,
            caps: self.caps,
            warnings: self.warnings,
        })
    }
}

/// Names the instruction a stuck vCPU sits at (for timeout reasons).
fn stuck_at(vcpu: &VcpuFd, mem: &GuestMemoryMmap) -> String {
    let Ok(regs) = vcpu.get_regs() else {
        return String::new();
    };
    let mut b = [0u8; 3];
    if mem.read_slice(&mut b, GuestAddress(regs.rip)).is_err() {
        return String::new();
    }
    match b {
        [0x0f, 0x01, 0xc1] => format!(
            "; it is a `vmcall` (rax = 0x{:x}) that never completes: this host's KVM did not return from the hypercall",
            regs.rax
        ),
        [0xf4, ..] => "; it is a `hlt`".into(),
        _ => format!("; bytes there: {b:02x?}"),
    }
}

/// Names where a vCPU that triple-faulted on its own stopped (for shutdown reasons).
fn faulted_at(vcpu: &VcpuFd, mem: &GuestMemoryMmap) -> String {
    let Ok(regs) = vcpu.get_regs() else {
        return String::new();
    };
    let mut b = [0u8; 2];
    let what = match mem.read_slice(&mut b, GuestAddress(regs.rip)) {
        Ok(()) => match b {
            [0x0f, 0x0b] => " (`ud2`)".to_string(),
            [0xcc, _] => " (`int3`)".to_string(),
            _ => format!(" (bytes {b:02x?})"),
        },
        Err(_) => String::new(),
    };
    format!("; the vCPU stopped at rip 0x{:x}{what}", regs.rip)
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

/// Writes the GDT, the identity page tables and the guest image.
pub fn write_boot_structures(mem: &GuestMemoryMmap, image: &[u8]) -> Result<(), VmmError> {
    let w = |addr: u64, v: u64| {
        mem.write_obj(v, GuestAddress(addr))
            .map_err(|e| VmmError::Memory(e.to_string()))
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
        .map_err(|e| VmmError::Memory(e.to_string()))
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

/// The real vCPU as an action target: every injection goes through
/// vcpu-events (validated, then KVM_SET_VCPU_EVENTS).
pub struct KvmTarget<'a> {
    /// The vCPU.
    pub vcpu: &'a mut VcpuFd,
    /// What the VM has enabled (for validation).
    pub kvm: vcpu_events::validate::KvmContext,
}

impl Target for KvmTarget<'_> {
    fn inject_exception(
        &mut self,
        vector: u8,
        error_code: Option<u32>,
        payload: Option<u64>,
    ) -> Result<(), ApplyError> {
        let (status, event) =
            crate::events::exception_event(vector, error_code, payload, &self.kvm);
        crate::events::inject(self.vcpu, status, event, &self.kvm)
    }

    fn inject_nmi(&mut self) -> Result<(), ApplyError> {
        crate::events::inject(
            self.vcpu,
            vcpu_events::EventStatus::Pending,
            vcpu_events::Event::Nmi,
            &self.kvm,
        )
    }

    fn synthesize_triple_fault(&mut self) -> Result<(), ApplyError> {
        crate::events::inject(
            self.vcpu,
            vcpu_events::EventStatus::Pending,
            vcpu_events::Event::TripleFault,
            &self.kvm,
        )
    }
}

/// Reads the exit union of kvm_run after `KVM_RUN` returned `reason` (through
/// [`x86_kvm_base::kvm_run::KvmRunExit`], the one reader of the union).
fn raw_exit(vcpu: &mut VcpuFd, reason: u32) -> RawExit {
    let exit = x86_kvm_base::kvm_run::KvmRunExit::from_kvm_run(vcpu.get_kvm_run());
    RawExit::new(reason).with_union(exit.union())
}

/// Decodes what `VcpuFd::run` returned into an [`Exit`] (no allocation). An
/// `in` reads what [`handlers::pio::in_value`] says for the port.
#[inline]
fn decode_vcpu_exit(ve: VcpuExit<'_>, st: &RunState) -> Result<Exit, u32> {
    Ok(match ve {
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
        VcpuExit::IoIn(port, data) => {
            let v = handlers::pio::in_value(port, st).to_le_bytes();
            for (i, b) in data.iter_mut().enumerate() {
                *b = v.get(i).copied().unwrap_or(0);
            }
            Exit::IoIn {
                port,
                size: data.len().min(8) as u8,
                count: 1,
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
        VcpuExit::MmioRead(addr, data) => {
            data.fill(0xff);
            Exit::Mmio {
                addr,
                is_write: false,
            }
        }
        VcpuExit::MmioWrite(addr, _) => Exit::Mmio {
            addr,
            is_write: true,
        },
        // Everything else (notably KVM_EXIT_NOTIFY = 37, Heki exits, internal
        // errors) is decoded from the raw union bytes, like a trace line.
        VcpuExit::InternalError => return Err(crate::exit::KVM_EXIT_INTERNAL_ERROR),
        VcpuExit::Unsupported(r) => return Err(r),
        VcpuExit::SystemEvent(..) => return Err(crate::exit::KVM_EXIT_SYSTEM_EVENT),
        _ => return Err(u32::MAX),
    })
}

/// The loop: inject (if due), KVM_RUN, decode, handle, apply.
pub fn run_loop(
    target: &mut KvmTarget<'_>,
    st: &mut RunState,
    watchdog: Option<&crate::watchdog::Watchdog>,
    start: Instant,
) -> Result<Stop, VmmError> {
    let abi = st.policy.heki_abi;
    let mut injector = (st.irq.target != 0).then(crate::events::IrqInjector::default);
    let stop = loop {
        if let Some(inj) = injector.as_mut() {
            inj.before_run(target.vcpu, &mut st.irq)?;
        }
        let exit = match target.vcpu.run() {
            Ok(ve) => decode_vcpu_exit(ve, st),
            Err(e) if e.errno() == EINTR => {
                if let Some(w) = watchdog.filter(|w| w.fired()) {
                    break w.stop(target.vcpu);
                }
                continue;
            }
            Err(e) => {
                return Err(VmmError::Ioctl {
                    what: "KVM_RUN",
                    source: e,
                })
            }
        };
        let exit = match exit {
            Ok(x) => x,
            Err(reason) => {
                let reason = if reason == u32::MAX {
                    target.vcpu.get_kvm_run().exit_reason
                } else {
                    reason
                };
                let raw = raw_exit(target.vcpu, reason);
                Exit::decode(&raw, abi).map_err(|e| {
                    VmmError::Config(format!("KVM gave an exit that does not decode: {e}"))
                })?
            }
        };
        if let Some(inj) = injector.as_mut() {
            inj.after_exit(exit == Exit::IrqWindowOpen);
        }
        if matches!(exit, Exit::Notify(_) | Exit::Heki(_)) {
            st.now_ns = start.elapsed().as_nanos() as u64;
        }
        let actions = handlers::handle(&exit, st);
        if actions.is_empty() {
            continue;
        }
        if let Some(stop) = apply(&actions, st, target) {
            break stop;
        }
    };
    if let Some(inj) = injector.as_ref() {
        st.irq.queued = inj.queued();
    }
    Ok(stop)
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
