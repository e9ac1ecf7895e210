//! The reference VMM's decision table, restated independently of its decoder and
//! handlers; `vmm_exits` and `trace_replay` check every decision against it.
//!
//! The table reads the raw exit: the `kvm_run.exit_reason` number and the exit union's
//! bytes at the offsets of Linux's `include/uapi/linux/kvm.h` (`struct kvm_run`), not
//! reference-vmm's decoded `Exit`, so a decoding mistake shows up as a wrong decision.
//!
//! | exit | decision |
//! | --- | --- |
//! | `KVM_EXIT_HLT` (5) | stop: `halted` |
//! | `KVM_EXIT_SHUTDOWN` (8) | stop: `shutdown`, caused by the triple fault the VMM synthesized (if any), else the guest's own |
//! | `KVM_EXIT_FAIL_ENTRY` (9) | stop: `fail-entry` with `hardware_entry_failure_reason` (u64 at 0) and `cpu` (u32 at 8) |
//! | `KVM_EXIT_INTERNAL_ERROR` (17) | stop: `internal-error` with `suberror` (u32 at 0) |
//! | `KVM_EXIT_IRQ_WINDOW_OPEN` (7), `KVM_EXIT_INTR` (10) | resume |
//! | `KVM_EXIT_IO` (2), size not 1/2/4 or direction not 0/1 | malformed: a typed error, never handled |
//! | `KVM_EXIT_IO` in | resume; the guest reads the device's value (status port: the irq-flood "all delivered" flag; any other port 0) |
//! | `KVM_EXIT_IO` out, tick port | resume; the irq guests may raise interrupts (their vectors only) |
//! | `KVM_EXIT_IO` out, sync port | the step the guest asks for: #GP / #PF (the plan's error code and CR2) / NMI / a triple fault; another code: resume, counted as unknown |
//! | `KVM_EXIT_IO` out, report port + k (k < 16) | resume; field k = the bytes written |
//! | `KVM_EXIT_IO` out, another port | resume, counted as unknown |
//! | `KVM_EXIT_NOTIFY` (37), valid context | `--notify-semantics qemu-7.2` and `internal-error`: stop: `internal-error`; otherwise resume |
//! | `KVM_EXIT_NOTIFY`, `KVM_NOTIFY_CONTEXT_INVALID` | `run`: a triple fault (then `shutdown`) under `seed`, stop: `internal-error` under `qemu-7.2`; `internal-error`, `disable`: stop: `internal-error` |
//! | Heki configure (the selected ABI's number) | resume (pins mirrored) |
//! | Heki denial | `--heki-denial shutdown`: a triple fault (then `shutdown`); `gp`, `audit`: resume (KVM injects #GP) |
//! | anything else (MMIO 6, SYSTEM_EVENT 24, 39..=41 that no selected ABI claims, any other number) | stop: `unhandled-exit` naming that number |
//! | any decision but a stop, at or past the exit budget | stop: `exit-limit` caused by the budget (`StopCause::ExitBudget`), not an unhandled exit |
//!
//! The notify rows restate both named semantics: the seed QEMU patch's (an invalid
//! context in `run` mode is a triple fault, a valid context resumes in every mode) and
//! merged QEMU 7.2's (target/i386/kvm/kvm.c `kvm_arch_handle_exit`, case
//! `KVM_EXIT_NOTIFY`: `ctx_invalid || mode == internal-error` -> internal error).
//!
//! The table speaks the VMM's vocabulary (`Outcome`, `StopCause`, `TripleFaultReason`,
//! vcpu-events' `Event`) so the comparison is direct; the decisions themselves are
//! restated here.

use notify_exit::{NotifySemantics, StopReason};
use reference_vmm::action::Outcome;
use reference_vmm::config::{HekiDenialAction, NotifyMode};
use reference_vmm::exit::HekiAbi;
use reference_vmm::guests;
use reference_vmm::stop::{StopCause, TripleFaultReason};
use vcpu_events::{Event, ExceptionPayload, HardwareException};

/// The configuration the table depends on.
#[derive(Clone, Copy, Debug)]
pub(super) struct Setting {
    /// `--notify-vmexit`.
    pub notify: NotifyMode,
    /// `--notify-semantics`.
    pub semantics: NotifySemantics,
    /// The Heki ABI in force.
    pub heki_abi: HekiAbi,
    /// `--heki-denial`.
    pub heki_denial: HekiDenialAction,
    /// The exceptions the scenario injects: #GP error code, #PF error code, #PF CR2.
    pub plan: (u32, u32, u64),
}

/// One decision of the table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Decision {
    /// Not an exit KVM produces: a typed decode error, nothing handled.
    Malformed,
    /// Resume, nothing else.
    Resume,
    /// An `in` from `port`: resume, the guest reads the device.
    Read {
        /// Port.
        port: u16,
    },
    /// A tick: resume; the irq guests may raise interrupts.
    Tick,
    /// A report field: resume, field `field` = `value`.
    Report {
        /// Field index.
        field: usize,
        /// The bytes written, zero-extended.
        value: u32,
    },
    /// An `out` nobody owns (or an unknown sync code): resume, counted as unknown.
    UnknownPort,
    /// Inject a hardware exception or an NMI.
    Inject(Event),
    /// Synthesize a triple fault; the next exit, `KVM_EXIT_SHUTDOWN`, ends the run.
    TripleFault(TripleFaultReason),
    /// Stop the run now, with this outcome and cause.
    Stop(Outcome, StopCause),
}

impl Decision {
    /// True when the guest just resumes (no action, no stop).
    pub fn resumes(&self) -> bool {
        matches!(
            self,
            Decision::Resume
                | Decision::Read { .. }
                | Decision::Tick
                | Decision::Report { .. }
                | Decision::UnknownPort
        )
    }
}

fn u16_at(u: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([u[at], u[at + 1]])
}

fn u32_at(u: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([u[at], u[at + 1], u[at + 2], u[at + 3]])
}

fn u64_at(u: &[u8], at: usize) -> u64 {
    u64::from(u32_at(u, at)) | u64::from(u32_at(u, at + 4)) << 32
}

/// Heki (configure, denial) exit numbers of the ABI in force, from heki-policy's uapi.
fn heki_numbers(abi: HekiAbi) -> Option<(u32, u32)> {
    let policy_abi = match abi {
        HekiAbi::RfcV2 => heki_policy::HekiAbi::RfcV2,
        HekiAbi::RfcV3 => heki_policy::HekiAbi::RfcV3,
        _ => return None,
    };
    let uapi = policy_abi.uapi()?;
    Some((uapi.exit_configure(), uapi.exit_denial()))
}

/// The report's name of the exit's kind (`Err(())`: malformed). `union` is the whole
/// 256-byte exit union.
pub(super) fn kind(reason: u32, union: &[u8], abi: HekiAbi) -> Result<&'static str, ()> {
    if let Some((configure, denial)) = heki_numbers(abi) {
        if reason == configure {
            return Ok("heki_configure");
        }
        if reason == denial {
            return Ok("heki_denial");
        }
    }
    Ok(match reason {
        2 => match (union[0], union[1]) {
            (_, size) if !matches!(size, 1 | 2 | 4) => return Err(()),
            (0, _) => "io_in",
            (1, _) => "io_out",
            _ => return Err(()),
        },
        5 => "hlt",
        6 => "mmio",
        7 => "irq_window_open",
        8 => "shutdown",
        9 => "fail_entry",
        10 => "intr",
        17 => "internal_error",
        24 => "system_event",
        37 => "notify",
        39 => "memory_fault",
        _ => "other",
    })
}

/// The decision for the `nth` exit of the run (1-based), given `pending`, why the VMM
/// synthesized a triple fault KVM has not delivered yet.
pub(super) fn decide(
    reason: u32,
    union: &[u8],
    io_data: u64,
    nth: u64,
    setting: &Setting,
    pending: Option<TripleFaultReason>,
) -> Decision {
    let Ok(kind) = kind(reason, union, setting.heki_abi) else {
        return Decision::Malformed;
    };
    let unhandled = Decision::Stop(
        Outcome::UnhandledExit,
        StopCause::UnhandledExit {
            exit_reason: reason,
        },
    );
    match kind {
        "hlt" => Decision::Stop(Outcome::Halted, StopCause::Halted),
        "shutdown" => Decision::Stop(
            Outcome::Shutdown,
            match pending {
                Some(why) => StopCause::SynthesizedTripleFault { why },
                None => StopCause::GuestTripleFault { vcpu: None },
            },
        ),
        // struct kvm_run's fail_entry: u64 hardware_entry_failure_reason, u32 cpu.
        "fail_entry" => Decision::Stop(
            Outcome::FailEntry,
            StopCause::FailEntry {
                hardware_entry_failure_reason: u64_at(union, 0),
                cpu: u32_at(union, 8),
            },
        ),
        "internal_error" => Decision::Stop(
            Outcome::InternalError,
            StopCause::KvmInternalError {
                suberror: u32_at(union, 0),
            },
        ),
        "irq_window_open" | "intr" => Decision::Resume,
        "io_in" => Decision::Read {
            port: u16_at(union, 2),
        },
        "io_out" => port_out(u16_at(union, 2), union[1], io_data, setting),
        "notify" => notify(u32_at(union, 0), nth, setting),
        "heki_configure" => Decision::Resume,
        "heki_denial" => match setting.heki_denial {
            HekiDenialAction::Shutdown => Decision::TripleFault(TripleFaultReason::HekiDenial {
                nth,
                cr: u64_at(union, 0),
                cr_value: u64_at(union, 8),
            }),
            _ => Decision::Resume,
        },
        _ => unhandled,
    }
}

/// An `out` of `size` bytes (`io_data`, little-endian) to `port`: the guests' channel.
fn port_out(port: u16, size: u8, io_data: u64, setting: &Setting) -> Decision {
    let written = io_data & (u64::MAX >> (64 - 8 * u32::from(size)));
    match port {
        guests::PORT_TICK => Decision::Tick,
        guests::PORT_SYNC => {
            let (gp_error_code, pf_error_code, cr2) = setting.plan;
            match written as u8 {
                // #GP (SDM 6.15, vector 13) pushes an error code; #PF (vector 14) also
                // has CR2 as its payload (KVM_CAP_EXCEPTION_PAYLOAD).
                guests::SYNC_INJECT_GP => {
                    Decision::Inject(Event::HardwareException(HardwareException {
                        vector: 13,
                        error_code: Some(gp_error_code),
                        payload: None,
                    }))
                }
                guests::SYNC_INJECT_PF => {
                    Decision::Inject(Event::HardwareException(HardwareException {
                        vector: 14,
                        error_code: Some(pf_error_code),
                        payload: Some(ExceptionPayload::Cr2(cr2)),
                    }))
                }
                guests::SYNC_INJECT_NMI => Decision::Inject(Event::Nmi),
                guests::SYNC_TRIPLE_FAULT => Decision::TripleFault(TripleFaultReason::GuestRequest),
                _ => Decision::UnknownPort,
            }
        }
        p if p >= guests::PORT_REPORT
            && usize::from(p - guests::PORT_REPORT) < guests::REPORT_FIELDS =>
        {
            Decision::Report {
                field: usize::from(p - guests::PORT_REPORT),
                value: written as u32,
            }
        }
        _ => Decision::UnknownPort,
    }
}

/// `KVM_EXIT_NOTIFY` with `flags` (bit 0: `KVM_NOTIFY_CONTEXT_INVALID`).
fn notify(flags: u32, nth: u64, setting: &Setting) -> Decision {
    let invalid = flags & 1 != 0;
    let qemu_7_2 = setting.semantics == NotifySemantics::Qemu72;
    let reason = match (invalid, setting.notify) {
        // QEMU 7.2: `ctx_invalid || notify_vmexit == NOTIFY_VMEXIT_OPTION_INTERNAL_ERROR`.
        (false, NotifyMode::InternalError) if qemu_7_2 => StopReason::InternalErrorMode,
        (false, _) => return Decision::Resume,
        (true, NotifyMode::Run) if qemu_7_2 => StopReason::ContextInvalidInRunMode,
        // Seed patch; KVM_CAP_X86_TRIPLE_FAULT_EVENT is enabled on every VM the VMM makes.
        (true, NotifyMode::Run) => {
            return Decision::TripleFault(TripleFaultReason::NotifyInvalidContext { nth })
        }
        (true, NotifyMode::InternalError) => StopReason::ContextInvalid,
        (true, NotifyMode::Disable) => StopReason::UnexpectedWhileDisabled,
    };
    Decision::Stop(
        Outcome::InternalError,
        StopCause::NotifyInternalError { nth, flags, reason },
    )
}
