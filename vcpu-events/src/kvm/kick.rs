// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The kick (feature `kvm`): getting a vCPU thread out of KVM_RUN so that an
//! interrupt raised from another thread through a
//! [`RaiseHandle`](crate::raise::RaiseHandle) is injected now.
//!
//! * [`KickSignal::install`] registers (through vmm-sys-util) a real-time
//!   signal handler that sets `kvm_run.immediate_exit` of the vCPU running on
//!   the signalled thread, as QEMU's `kvm_ipi_signal` -> `kvm_cpu_kick` does
//!   (QEMU `accel/kvm/kvm-all.c`) and as kvm-ioctls documents for
//!   `VcpuFd::set_kvm_immediate_exit`. A signal that arrives inside KVM_RUN
//!   makes it return -EINTR; one that arrives just before leaves
//!   `immediate_exit = 1`, so the KVM_RUN returns -EINTR at once (api.rst,
//!   `kvm_run`: "immediate_exit ... polled once when KVM_RUN starts").
//! * [`run_with_kicks`] checks that the vCPU has no in-kernel irqchip (with
//!   KVM_CREATE_IRQCHIP, KVM_INTERRUPT answers -ENXIO: Linux
//!   `arch/x86/kvm/x86.c` `kvm_vcpu_ioctl_interrupt`), that the signal is not
//!   blocked on this thread, then registers this thread as the vCPU's kick
//!   target for the duration of a closure, in which [`KickedVcpu::run`] does
//!   one protocol round: decide and apply under the injector's lock, enter,
//!   KVM_RUN, exit (see [`crate::raise`]).

use std::io;
use std::os::raw::{c_int, c_void};
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering::SeqCst};

use kvm_ioctls::{VcpuExit, VcpuFd};
use vmm_sys_util::errno;
use vmm_sys_util::signal::{get_blocked_signals, register_signal_handler, SIGRTMIN};

use super::{before_run, exit_kind, KvmError};
use crate::injector::ExitKind;
use crate::raise::{Entry, Kick, SkipReason, VcpuInterrupts};

thread_local! {
    /// `&kvm_run.immediate_exit` of the vCPU this thread is running inside
    /// [`run_with_kicks`], else null. Const-initialised and without a
    /// destructor, so the signal handler can read it.
    static IMMEDIATE_EXIT: AtomicPtr<u8> = const { AtomicPtr::new(ptr::null_mut()) };
}

extern "C" fn on_kick(_: c_int, _: *mut libc::siginfo_t, _: *mut c_void) {
    // Async-signal-safe: one thread-local load and one byte store.
    let _ = IMMEDIATE_EXIT.try_with(|p| {
        let p = p.load(SeqCst);
        if !p.is_null() {
            // SAFETY: a non-null pointer was stored by `run_with_kicks` on
            // this thread and points to `immediate_exit` inside the vCPU's
            // mmap'd `kvm_run`, which stays mapped while that function runs
            // (it holds `&mut VcpuFd`); it is reset to the previous value
            // before it returns. The handler runs on this same thread, so the
            // store cannot race another thread; KVM reads the byte when
            // KVM_RUN starts (api.rst), so it is written volatile.
            unsafe { p.write_volatile(1) };
        }
    });
}

/// A failure of the kick set-up or of a kicked run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KickError {
    /// Registering the signal handler failed (vmm-sys-util
    /// `register_signal_handler`: -EINVAL for a number outside
    /// SIGRTMIN..=SIGRTMAX or a standard signal, or sigaction's errno).
    #[error("registering the kick handler for signal {signum} failed")]
    RegisterHandler {
        /// The signal number.
        signum: c_int,
        /// errno.
        #[source]
        source: errno::Error,
    },
    /// The vCPU has an in-kernel local APIC: with KVM_CREATE_IRQCHIP,
    /// KVM_INTERRUPT answers -ENXIO; with KVM_CAP_SPLIT_IRQCHIP it only takes
    /// PIC ExtINT vectors. Raise through KVM_IRQ_LINE, KVM_SIGNAL_MSI or an
    /// irqfd instead.
    #[error(
        "the vCPU has KVM's in-kernel irqchip: KVM_INTERRUPT would fail with -ENXIO \
         (use KVM_IRQ_LINE / KVM_SIGNAL_MSI / irqfd)"
    )]
    InKernelIrqchip,
    /// KVM_GET_LAPIC, used to probe for an in-kernel irqchip, failed in an
    /// unexpected way.
    #[error("probing for an in-kernel irqchip (KVM_GET_LAPIC) failed")]
    IrqchipProbe(#[source] errno::Error),
    /// The kick signal is blocked on the vCPU thread: kicks would never
    /// arrive.
    #[error("signal {0} is blocked on the vCPU thread")]
    SignalBlocked(c_int),
    /// Reading the thread's signal mask failed.
    #[error("reading the thread's signal mask failed: {0}")]
    SignalMask(vmm_sys_util::signal::Error),
    /// KVM_RUN failed (other than -EINTR).
    #[error("KVM_RUN failed")]
    Run(#[source] errno::Error),
    /// Applying the injector's decision failed (the vector stays queued).
    #[error(transparent)]
    Kvm(#[from] KvmError),
}

/// The signal that kicks vCPU threads, with its handler installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KickSignal {
    signum: c_int,
}

impl KickSignal {
    /// Installs the kick handler for `SIGRTMIN() + offset` (process-wide;
    /// installing it again is harmless). Pick an offset nothing else in the
    /// process uses: the handler replaces any previous one. It is installed
    /// without `SA_RESTART` (vmm-sys-util), which is what makes KVM_RUN
    /// return -EINTR; other blocking system calls on a vCPU thread may return
    /// -EINTR too when a kick arrives.
    ///
    /// ```
    /// use vcpu_events::kvm::kick::{KickError, KickSignal};
    /// let sig = KickSignal::install(0).unwrap();
    /// assert_eq!(sig.signum(), vmm_sys_util::signal::SIGRTMIN());
    /// // Past SIGRTMAX: a typed error, nothing installed.
    /// assert!(matches!(KickSignal::install(1000), Err(KickError::RegisterHandler { .. })));
    /// ```
    pub fn install(offset: c_int) -> Result<Self, KickError> {
        let signum = SIGRTMIN().saturating_add(offset);
        register_signal_handler(signum, on_kick)
            .map_err(|source| KickError::RegisterHandler { signum, source })?;
        Ok(Self { signum })
    }

    /// The signal number.
    pub fn signum(&self) -> c_int {
        self.signum
    }
}

/// Fails with [`KickError::InKernelIrqchip`] if the vCPU has KVM's in-kernel
/// local APIC (KVM_GET_LAPIC succeeds only then: Linux `arch/x86/kvm/x86.c`,
/// `kvm_arch_vcpu_ioctl`, which answers -EINVAL without one). Run before the
/// first KVM_INTERRUPT, so a VM set up with KVM_CREATE_IRQCHIP is refused at
/// set-up rather than at the first interrupt.
///
/// ```no_run
/// use kvm_ioctls::Kvm;
/// use vcpu_events::kvm::kick::{check_userspace_irqchip, KickError};
///
/// let kvm = Kvm::new().unwrap();
/// let vm = kvm.create_vm().unwrap();
/// vm.create_irq_chip().unwrap(); // KVM_CREATE_IRQCHIP
/// let vcpu = vm.create_vcpu(0).unwrap();
/// assert!(matches!(check_userspace_irqchip(&vcpu), Err(KickError::InKernelIrqchip)));
/// ```
pub fn check_userspace_irqchip(vcpu: &VcpuFd) -> Result<(), KickError> {
    match vcpu.get_lapic() {
        Ok(_) => Err(KickError::InKernelIrqchip),
        Err(e) if e.errno() == libc::EINVAL => Ok(()),
        Err(e) => Err(KickError::IrqchipProbe(e)),
    }
}

/// The kick target: the vCPU thread and the signal.
struct ThreadKick {
    thread: libc::pthread_t,
    signum: c_int,
}

impl Kick for ThreadKick {
    fn kick(&self) -> io::Result<()> {
        // SAFETY: `thread` is the calling thread of `run_with_kicks`, which
        // registers this target only for the duration of
        // `VcpuInterrupts::with_kick_target` inside it; kicks run under the
        // registration lock and the target is unregistered before that
        // returns, so the thread is alive whenever this runs. `signum` had its
        // handler installed by `KickSignal::install`. pthread_kill returns an
        // error number, checked below.
        let ret = unsafe { libc::pthread_kill(self.thread, self.signum) };
        if ret == 0 {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(ret))
        }
    }
}

/// What one [`KickedVcpu::run`] returned.
#[derive(Debug)]
#[non_exhaustive]
pub enum KickedRun<'a> {
    /// KVM_RUN returned an exit: handle it (report deliveries through
    /// [`KickedVcpu::interrupts`]).
    Exit(VcpuExit<'a>),
    /// KVM_RUN returned -EINTR: a kick (or another signal).
    Interrupted,
    /// KVM_RUN was not entered: decide again first.
    Skipped(SkipReason),
}

/// A vCPU inside [`run_with_kicks`]. Not `Send`: it runs on the thread
/// registered as the kick target.
///
/// ```compile_fail
/// fn send<T: Send>() {}
/// send::<vcpu_events::kvm::kick::KickedVcpu<'static>>();
/// ```
#[derive(Debug)]
pub struct KickedVcpu<'a> {
    vcpu: &'a mut VcpuFd,
    interrupts: &'a VcpuInterrupts,
    immediate_exit: *mut u8,
}

impl<'a> KickedVcpu<'a> {
    /// The vCPU (registers, events, ...).
    pub fn vcpu(&mut self) -> &mut VcpuFd {
        self.vcpu
    }

    /// The interrupt side: deliveries, accounting, handles. Not tied to a
    /// borrow of `self`, so it can be used while an exit is being handled.
    pub fn interrupts(&self) -> &'a VcpuInterrupts {
        self.interrupts
    }

    /// One round: decide and apply (KVM_INTERRUPT, `request_interrupt_window`)
    /// under the injector's lock, announce the run (or skip it if a vector
    /// or a stop request arrived meanwhile), KVM_RUN, then reset
    /// `immediate_exit` and record the exit. On an error nothing queued is
    /// lost.
    pub fn run(&mut self) -> Result<KickedRun<'_>, KickError> {
        let vcpu = &mut *self.vcpu;
        let decision = self.interrupts.decide(|inj| before_run(inj, vcpu))?;
        if let Entry::Skip(reason) = self.interrupts.enter(decision.request_interrupt_window()) {
            return Ok(KickedRun::Skipped(reason));
        }
        let result = self.vcpu.run();
        // SAFETY: `immediate_exit` points into this vCPU's `kvm_run`, mapped
        // while `self.vcpu` is borrowed; this thread is the only writer
        // besides its own signal handler (see `on_kick`).
        unsafe { self.immediate_exit.write_volatile(0) };
        let kind = match &result {
            Ok(exit) => exit_kind(exit),
            Err(_) => ExitKind::Other,
        };
        self.interrupts.exited(kind);
        match result {
            Ok(exit) => Ok(KickedRun::Exit(exit)),
            Err(e) if e.errno() == libc::EINTR => Ok(KickedRun::Interrupted),
            Err(e) => Err(KickError::Run(e)),
        }
    }
}

/// Runs `f` with this thread registered as `vcpu`'s kick target: raises
/// through `interrupts`' handles that find the vCPU inside KVM_RUN signal
/// this thread. Fails at set-up, before `f` runs, if the vCPU has an in-kernel
/// irqchip ([`check_userspace_irqchip`]) or `signal` is blocked here.
///
/// ```no_run
/// use kvm_ioctls::{Kvm, VcpuExit};
/// use vcpu_events::injector::Injector;
/// use vcpu_events::kvm::kick::{run_with_kicks, KickSignal, KickedRun};
/// use vcpu_events::raise::VcpuInterrupts;
///
/// let kvm = Kvm::new().unwrap();
/// let vm = kvm.create_vm().unwrap();
/// let mut vcpu = vm.create_vcpu(0).unwrap();
/// // ... guest memory, registers ...
/// let signal = KickSignal::install(0).unwrap();
/// let mut interrupts = VcpuInterrupts::new(Injector::new());
/// let device = interrupts.handle();
/// std::thread::spawn(move || device.raise(0x20));
/// run_with_kicks(&mut vcpu, &mut interrupts, signal, |kv| loop {
///     let ints = kv.interrupts();
///     match kv.run().unwrap() {
///         // The guest's handler reports each vector on port 0x21.
///         KickedRun::Exit(VcpuExit::IoOut(0x21, data)) => ints.on_delivered(data[0]).unwrap(),
///         KickedRun::Exit(VcpuExit::Hlt) => break,
///         _ => {}
///     }
/// })
/// .unwrap();
/// assert!(interrupts.accounting().is_balanced());
/// ```
pub fn run_with_kicks<R>(
    vcpu: &mut VcpuFd,
    interrupts: &mut VcpuInterrupts,
    signal: KickSignal,
    f: impl FnOnce(&mut KickedVcpu<'_>) -> R,
) -> Result<R, KickError> {
    check_userspace_irqchip(vcpu)?;
    if get_blocked_signals()
        .map_err(KickError::SignalMask)?
        .contains(&signal.signum)
    {
        return Err(KickError::SignalBlocked(signal.signum));
    }
    let immediate_exit: *mut u8 = &mut vcpu.get_kvm_run().immediate_exit;
    vcpu.set_kvm_immediate_exit(0);
    // SAFETY: pthread_self has no preconditions and cannot fail.
    let thread = unsafe { libc::pthread_self() };

    /// Puts back the previous thread-local pointer (also on unwind).
    struct Restore(*mut u8);
    impl Drop for Restore {
        fn drop(&mut self) {
            let _ = IMMEDIATE_EXIT.try_with(|p| p.store(self.0, SeqCst));
        }
    }
    let _restore = Restore(IMMEDIATE_EXIT.with(|p| p.swap(immediate_exit, SeqCst)));
    let target = ThreadKick {
        thread,
        signum: signal.signum,
    };
    // The target is unregistered when `with_kick_target` returns, before
    // `_restore` resets the thread-local pointer.
    Ok(interrupts.with_kick_target(target, |interrupts| {
        let mut kv = KickedVcpu {
            vcpu,
            interrupts,
            immediate_exit,
        };
        f(&mut kv)
    }))
}
