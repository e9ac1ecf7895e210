// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The command line: `demo`, `run`, `replay`, `plan`, `caps`, `guests`,
//! `gen-trace`, `resume`.
//!
//! Exit status (also in `--help` and the README): 0 success; 1 a run,
//! check or write that failed (a run ending in timeout, failed entry,
//! unhandled exit, internal error, exit budget, a refused injection or a
//! failed restore; a failed or impossible `--snapshot-file` write; a
//! failed demo scenario; a failed ioctl; a failed write to stdout or
//! stderr); 2 bad usage or input (bad flag or value, unknown guest,
//! unreadable or malformed trace, a flag replay cannot honour, a snapshot
//! file `resume` refuses). Every error
//! is one line on stderr, control characters escaped. A closed stdout pipe
//! (EPIPE) ends the process quietly.

#![deny(unsafe_code)]

use std::io::{BufReader, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand, ValueEnum};
use vmxcap::output::{self, Terminal, WriteFailed};

use crate::config::{HekiDenialAction, HekiExits, NotifyMode, NotifySemantics, Policy, RunConfig};
use crate::exit::HekiAbi;
use crate::guests::Guest;
use crate::hostile::MemProbe;
use crate::report::Report;

/// The exit statuses, as `--help` prints them.
pub const EXIT_STATUS_HELP: &str = "Exit status:
  0  success (a run that halted or shut down as asked, a replayed trace, every demo scenario passed)
  1  a run, check or write failed: timeout, failed entry, unhandled exit, internal error,
     a guest's own triple fault (but self-triple-fault's), a halted guest whose own
     counters contradict the VMM's (an interrupt lost, doubled or taken while masked,
     other exception values), exit budget used up, refused injection, failed restore of a snapshot, a failed demo
     scenario, an ioctl error, a failed write to stdout, stderr or --snapshot-file
  2  bad usage or input: bad flag or value, unknown guest, unreadable or malformed trace,
     a flag replay cannot honour, a snapshot file resume refuses (truncated, another
     version, inconsistent)";

/// Default `--timeout` of a run with `--snapshot-every`.
pub const SNAPSHOT_RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// Status: success (`vmxcap::output::EXIT_OK`).
pub const EXIT_OK: i32 = output::EXIT_OK as i32;
/// Status: a run, check or write failed (`vmxcap::output::EXIT_FAILED`).
pub const EXIT_FAILED: i32 = output::EXIT_FAILED as i32;
/// Status: bad usage or input (`vmxcap::output::EXIT_USAGE`).
pub const EXIT_USAGE: i32 = output::EXIT_USAGE as i32;

pub use crate::report::Format;

/// reference-vmm: a small, real VMM on /dev/kvm composing vmx-caps, vmx-controls,
/// notify-exit, heki-policy and vcpu-events.
#[derive(Parser, Debug)]
#[command(name = "reference-vmm", version, about, after_help = EXIT_STATUS_HELP)]
pub struct Cli {
    /// The command.
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// Commands.
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Host section, then every built-in scenario on /dev/kvm and every replayed one, with PASS/FAIL.
    Demo {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Timeout of every guest run on /dev/kvm, seconds (default: each scenario's own).
        #[arg(long, value_parser = parse_seconds)]
        timeout: Option<Duration>,
    },
    /// Run one built-in guest on /dev/kvm.
    Run(RunArgs),
    /// Feed a trace's exits through the same handlers with a vCPU stand-in.
    Replay(ReplayArgs),
    /// Print the KVM set-up a run would do (each KVM_ENABLE_CAP), without creating a VM.
    Plan(PlanArgs),
    /// Host capabilities: KVM caps, VMX capabilities and the VMCS configuration.
    Caps {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// List the built-in guests.
    Guests {
        /// Also print each guest's assembler source.
        #[arg(long)]
        source: bool,
    },
    /// Write a generated hostile trace to stdout (pipe it into `replay -`).
    GenTrace(GenTraceArgs),
    /// Continue a snapshot file (`run --snapshot-file`) in this process, on a fresh VM.
    Resume(ResumeArgs),
}

/// `resume` flags.
#[derive(Args, Debug, Clone)]
pub struct ResumeArgs {
    /// The snapshot file written by `run --snapshot-every N --snapshot-file PATH`.
    pub snapshot: PathBuf,
    /// Stop the resumed run after this many seconds (default: the guest's, 60 with
    /// --snapshot-every).
    #[arg(long, value_parser = parse_seconds)]
    pub timeout: Option<Duration>,
    /// Go on taking snapshots after every N-th exit (counted over the whole run).
    #[arg(long, value_parser = parse_snapshot_every)]
    pub snapshot_every: Option<u64>,
    /// Write the resumed run's last snapshot to PATH (needs --snapshot-every), so a
    /// resumed run can be resumed again.
    #[arg(long, value_name = "PATH")]
    pub snapshot_file: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// Which trace `gen-trace` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TraceKind {
    /// N valid-context notify exits, then hlt (default N = 1000000).
    NotifyStorm,
    /// Heki RFC v2: pin CR0.WP and CR4.SMEP|SMAP, then N denials, then hlt (default N = 100000).
    HekiDenialStorm,
    /// N lines of deterministic garbage from --seed (default N = 10000).
    Garbage,
}

/// `gen-trace` flags.
#[derive(Args, Debug, Clone)]
pub struct GenTraceArgs {
    /// The trace.
    #[arg(value_enum)]
    pub kind: TraceKind,
    /// Exits (storms) or lines (garbage).
    #[arg(long, value_parser = parse_u64)]
    pub count: Option<u64>,
    /// Seed of the garbage generator (decimal or 0x-hex; default: the demo's, 0x5eed0008).
    #[arg(long, default_value = "0x5eed0008", value_parser = parse_u64)]
    pub seed: u64,
}

/// Seconds: a decimal number without sign, more than 0 and at most a day.
fn parse_seconds(s: &str) -> Result<Duration, String> {
    let ok = !s.is_empty()
        && s.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && s.bytes().filter(|&b| b == b'.').count() <= 1;
    let v: f64 = match ok.then(|| s.parse::<f64>()) {
        Some(Ok(v)) => v,
        _ => return Err(format!("{s:?} is not a number of seconds (like 10 or 0.5)")),
    };
    if !(v > 0.0 && v <= 86_400.0) {
        return Err(format!(
            "{s:?}: must be more than 0 and at most 86400 seconds"
        ));
    }
    Ok(Duration::from_secs_f64(v))
}

/// A u64 in decimal or `0x` hex, without sign.
fn parse_u64(s: &str) -> Result<u64, String> {
    if s.starts_with(['+', '-']) {
        return Err(format!("{s:?}: numbers take no sign"));
    }
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) if !h.starts_with(['+', '-']) => u64::from_str_radix(h, 16),
        Some(_) => return Err(format!("{s:?}: numbers take no sign")),
        None => s.parse(),
    };
    r.map_err(|e| format!("{s:?}: {e}"))
}

/// A u64 in `lo..=hi`, strict as [`parse_u64`] (clap's ranged parsers
/// accept a leading `+`).
fn parse_in(s: &str, lo: u64, hi: u64) -> Result<u64, String> {
    let v = parse_u64(s)?;
    if (lo..=hi).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{s:?}: must be {lo}..={hi}"))
    }
}

/// `--snapshot-every`: at least 1.
fn parse_snapshot_every(s: &str) -> Result<u64, String> {
    parse_in(s, 1, u64::MAX)
}

/// `--vcpus`: 1..=64.
fn parse_vcpus(s: &str) -> Result<u8, String> {
    parse_in(s, 1, 64).map(|v| v as u8)
}

/// `--mem-mib`: 1..=4096.
fn parse_mem_mib(s: &str) -> Result<u32, String> {
    parse_in(s, 1, 4096).map(|v| v as u32)
}

/// `--rate`: 1..=1000000.
fn parse_rate(s: &str) -> Result<u32, String> {
    parse_in(s, 1, 1_000_000).map(|v| v as u32)
}

/// A u32 in decimal or `0x` hex, without sign.
fn parse_u32(s: &str) -> Result<u32, String> {
    let v = parse_u64(s)?;
    u32::try_from(v).map_err(|_| format!("{s:?}: more than {}", u32::MAX))
}

/// `--notify-semantics`: notify-exit's names (`seed`, `qemu-7.2`).
fn parse_notify_semantics(s: &str) -> Result<NotifySemantics, String> {
    NotifySemantics::ALL
        .into_iter()
        .find(|n| n.name() == s)
        .ok_or_else(|| format!("{s:?}: not a notify semantics (seed, qemu-7.2)"))
}

/// Policy flags shared by run, replay and plan.
#[derive(Args, Debug, Clone, Copy)]
pub struct PolicyArgs {
    /// Notify VM exits: run (resume valid context; invalid context: a triple fault with
    /// seed semantics, an internal error with qemu-7.2), internal-error (invalid context
    /// stops as a KVM internal error; valid context resumes with seed, stops with
    /// qemu-7.2), disable (not enabled; run only).
    #[arg(long, value_enum, default_value_t = NotifyMode::Run)]
    pub notify_vmexit: NotifyMode,
    /// Notify semantics: seed (the seed QEMU patch: invalid context -> triple fault in
    /// run mode, valid context resumes in every mode) or qemu-7.2 (merged QEMU 7.2: an
    /// invalid context or internal-error mode -> internal error; never a triple fault).
    #[arg(long, default_value = "seed", value_parser = parse_notify_semantics)]
    pub notify_semantics: NotifySemantics,
    /// Notify window in crystal-clock cycles (u32; 0 is safe).
    #[arg(long, default_value_t = 0, value_parser = parse_u32)]
    pub notify_window: u32,
    /// Heki RFC ABI revision used to read exits 39..=41 (replay default: the trace's abi line).
    #[arg(long, value_enum)]
    pub heki_abi: Option<HekiAbi>,
    /// Heki exits to ask KVM for (default all; run and plan only).
    #[arg(long, value_enum)]
    pub heki_exits: Option<HekiExits>,
    /// What a Heki denial leads to.
    #[arg(long, value_enum, default_value_t = HekiDenialAction::Gp)]
    pub heki_denial: HekiDenialAction,
}

impl PolicyArgs {
    /// The policy (Heki ABI `none` unless given).
    pub fn policy(&self) -> Policy {
        Policy {
            notify_mode: self.notify_vmexit,
            notify_semantics: self.notify_semantics,
            notify_window: self.notify_window,
            heki_abi: self.heki_abi.unwrap_or(HekiAbi::None),
            heki_exits: self.heki_exits.unwrap_or(HekiExits::All),
            heki_denial: self.heki_denial,
        }
    }
}

/// `run` flags.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// The guest (see `guests`).
    #[arg(long, value_enum)]
    pub guest: Guest,
    /// Guest-specific count (pio-loop: `out` exits; irq-storm: interrupts).
    #[arg(long, value_parser = parse_u64)]
    pub count: Option<u64>,
    /// vCPUs (pio-loop, halt and timer run on several; the other guests on one).
    #[arg(long, default_value_t = 1, value_parser = parse_vcpus)]
    pub vcpus: u8,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 2, value_parser = parse_mem_mib)]
    pub mem_mib: u32,
    /// Stop the run after this many seconds (outcome `timeout`, with where the vCPU is;
    /// default 10, or 60 for pio-loop and halt and for runs with --snapshot-every).
    #[arg(long, value_parser = parse_seconds)]
    pub timeout: Option<Duration>,
    /// Policy flags.
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// timer: raises per second per vCPU (default 1000).
    #[arg(long, value_parser = parse_rate)]
    pub rate: Option<u32>,
    /// timer: how long the host timer raises, in seconds (default 1).
    #[arg(long, value_parser = parse_seconds)]
    pub seconds: Option<Duration>,
    /// timer: who delivers: `user` (vcpu-events raise + kick, the VMM answers
    /// the xAPIC) or `kernel` (KVM's in-kernel irqchip, KVM_SIGNAL_MSI).
    #[arg(long, value_enum)]
    pub irqchip: Option<crate::timer::Irqchip>,
    /// After every N-th exit: snapshot the vCPU (vcpu-events) and guest memory,
    /// destroy the VM, restore into a fresh VM and go on (one vCPU; timer: every
    /// vCPU, exits counted over all, either irqchip, no --snapshot-file).
    #[arg(long, value_parser = parse_snapshot_every)]
    pub snapshot_every: Option<u64>,
    /// Write the last snapshot (with the run's parameters and the VMM's state) to
    /// PATH atomically; `resume PATH` continues it in a new process.
    #[arg(long, requires = "snapshot_every")]
    pub snapshot_file: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

impl RunArgs {
    /// The timer configuration (`--guest timer`).
    pub fn timer_config(&self) -> crate::timer::TimerConfig {
        let mut cfg =
            crate::timer::TimerConfig::new(self.irqchip.unwrap_or(crate::timer::Irqchip::User));
        cfg.vcpus = self.vcpus;
        if let Some(r) = self.rate {
            cfg.rate_hz = r;
        }
        if let Some(d) = self.seconds {
            cfg.duration = d;
        }
        cfg.snapshot_every = self.snapshot_every;
        cfg
    }

    /// The run configuration.
    pub fn config(&self) -> RunConfig {
        let mut cfg = RunConfig::new(self.guest);
        if let Some(c) = self.count {
            cfg.count = c;
        }
        cfg.vcpus = self.vcpus;
        cfg.mem_mib = self.mem_mib;
        cfg.policy = self.policy.policy();
        cfg.snapshot_every = self.snapshot_every;
        if cfg.snapshot_every.is_some() {
            // Every snapshot destroys and creates a VM (milliseconds each).
            cfg.timeout = Some(SNAPSHOT_RUN_TIMEOUT);
        }
        if let Some(t) = self.timeout {
            cfg.timeout = Some(t);
        }
        cfg
    }
}

/// `replay` flags.
#[derive(Args, Debug, Clone)]
pub struct ReplayArgs {
    /// The trace (JSON Lines); `-` reads standard input.
    pub trace: PathBuf,
    /// Policy flags.
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// `plan` flags (the run flags; the guest is optional).
#[derive(Args, Debug, Clone)]
pub struct PlanArgs {
    /// The guest.
    #[arg(long, value_enum)]
    pub guest: Option<Guest>,
    /// Guest-specific count.
    #[arg(long, value_parser = parse_u64)]
    pub count: Option<u64>,
    /// vCPUs.
    #[arg(long, default_value_t = 1, value_parser = parse_vcpus)]
    pub vcpus: u8,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 2, value_parser = parse_mem_mib)]
    pub mem_mib: u32,
    /// Policy flags.
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    pub format: Format,
}

/// A report as `format`.
pub fn render_report(r: &Report, format: Format) -> String {
    match format {
        Format::Text => r.to_text(),
        Format::Json => r.to_json() + "\n",
    }
}

/// The terminal contract, one home for both command lines: `vmxcap::output`
/// (escaping, EPIPE-quiet writes, one-line errors), with this program's prefix.
const TERM: Terminal = Terminal::new("error: ");

/// The status type of this command line (`std::process::exit`) from the
/// contract's `u8`.
fn status(s: u8) -> i32 {
    i32::from(s)
}

/// Writes `text` to stdout. A failed write gives [`EXIT_FAILED`] and one line
/// on stderr; a closed pipe (EPIPE) gives [`EXIT_FAILED`] quietly (the
/// binary restores SIGPIPE's default, so it normally ends before that).
pub fn emit(text: &str) -> Result<(), i32> {
    TERM.emit(text).map_err(|WriteFailed| EXIT_FAILED)
}

/// Prints `error: {msg}` as one line on stderr and returns `status`. If
/// stderr cannot be written (and is not a closed pipe), the line goes to
/// stdout instead and the status is at least [`EXIT_FAILED`].
pub fn fail(msg: &str, status: i32) -> i32 {
    let s = u8::try_from(status).unwrap_or(output::EXIT_FAILED);
    self::status(TERM.fail(msg, s))
}

/// The status of a KVM run of `guest`: as its outcome, except that a
/// guest's own triple fault (`KVM_EXIT_SHUTDOWN` the VMM did not
/// synthesize) is the end only `self-triple-fault` asks for; for any other
/// guest it is a failure (e.g. a resumed snapshot whose memory or registers
/// were edited).
fn run_status(guest: Guest, stop: &crate::stop::Stop) -> i32 {
    let own = matches!(stop.cause, crate::stop::StopCause::GuestTripleFault { .. });
    if own && guest != Guest::SelfTripleFault {
        EXIT_FAILED
    } else {
        status_of(stop.outcome)
    }
}

fn status_of(outcome: crate::stop::Outcome) -> i32 {
    if outcome.is_failure() {
        EXIT_FAILED
    } else {
        EXIT_OK
    }
}

/// Parses `args` and runs the command; returns the exit status.
pub fn main_with_args<I, T>(args: I, t0: Instant) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => return usage_error(&e),
    };
    let r = match cli.cmd {
        Cmd::Demo { format, timeout } => {
            let (text, passed) = crate::demo::render_with_timeout(format, timeout);
            emit(&text).map(|()| if passed { EXIT_OK } else { EXIT_FAILED })
        }
        Cmd::Run(args) => run_cmd(&args, t0),
        Cmd::Resume(args) => resume_cmd(&args, t0),
        Cmd::Replay(args) => replay_cmd(&args),
        Cmd::Plan(args) => emit(&plan_text(&args)).map(|()| EXIT_OK),
        Cmd::Caps { format } => crate::host::caps_text(format)
            .map_err(|e| fail(&format!("caps: {e}"), EXIT_FAILED))
            .and_then(|t| emit(&t).map(|()| EXIT_OK)),
        Cmd::GenTrace(args) => {
            use crate::hostile::{garbage_trace, heki_denial_storm, notify_storm};
            let mut t = match args.kind {
                TraceKind::NotifyStorm => notify_storm(args.count.unwrap_or(1_000_000)),
                TraceKind::HekiDenialStorm => heki_denial_storm(args.count.unwrap_or(100_000)),
                TraceKind::Garbage => garbage_trace(args.seed, args.count.unwrap_or(10_000)),
            };
            let mut out = std::io::stdout().lock();
            match std::io::copy(&mut t, &mut out).and_then(|_| out.flush()) {
                Ok(()) => Ok(EXIT_OK),
                Err(e) => {
                    drop(out);
                    let WriteFailed = TERM.write_failed("the trace", &e);
                    Err(EXIT_FAILED)
                }
            }
        }
        Cmd::Guests { source } => {
            let mut text = String::new();
            for g in Guest::ALL {
                text.push_str(&format!("{:<17} {}\n", g.name(), g.description()));
                if source {
                    text.push_str(g.source());
                    text.push('\n');
                }
            }
            emit(&text).map(|()| EXIT_OK)
        }
    };
    r.unwrap_or_else(|status| status)
}

/// clap's error as one line (the one naming what is wrong), status 2; help
/// and version go to stdout with status 0.
fn usage_error(e: &clap::Error) -> i32 {
    status(TERM.usage_error(e))
}

fn run_cmd(args: &RunArgs, t0: Instant) -> Result<i32, i32> {
    if args.guest == Guest::Timer && args.snapshot_file.is_some() {
        return Err(fail(
            "--snapshot-file does not apply to --guest timer: its snapshots live in the \
             run (its timer thread and injectors cannot be resumed in another process)",
            EXIT_USAGE,
        ));
    }
    if args.guest == Guest::Timer {
        return timer_cmd(args);
    }
    if args.rate.is_some() || args.seconds.is_some() || args.irqchip.is_some() {
        return Err(fail(
            "--rate, --seconds and --irqchip apply to --guest timer only",
            EXIT_USAGE,
        ));
    }
    let cfg = args.config();
    let probe = MemProbe::start();
    let run = crate::vmm::run(&cfg, t0).map_err(vmm_failure)?;
    let mut status = run_status(cfg.guest, &run.stop);
    if let Some(path) = &args.snapshot_file {
        status = status.max(write_snapshot_file(&cfg, &run, path));
    }
    let mut r = crate::demo::kvm_report(&cfg, run);
    r.memory = probe.finish();
    if r.outcome == crate::stop::Outcome::Halted && !r.guest_counters_hold() {
        status = status.max(EXIT_FAILED);
    }
    emit(&render_report(&r, args.format)).map(|()| status)
}

/// One line for a failed set-up or run: status 2 for bad usage or input, else 1.
fn vmm_failure(e: crate::vmm::VmmError) -> i32 {
    let status = if e.is_usage() {
        EXIT_USAGE
    } else {
        EXIT_FAILED
    };
    fail(&crate::error::chain(&e), status)
}

/// `--snapshot-file`: writes the run's last snapshot; the status is 0, or 1
/// (with one line on stderr) if there is none or it cannot be written.
fn write_snapshot_file(cfg: &RunConfig, run: &crate::vmm::KvmRun, path: &std::path::Path) -> i32 {
    use crate::snapshot::document::SnapshotFile;
    let Some(saved) = &run.last_snapshot else {
        return fail(
            &format!(
                "--snapshot-file {}: no snapshot was taken (the run ended after {} exits)",
                path.display(),
                run.state.exits.total()
            ),
            EXIT_FAILED,
        );
    };
    match SnapshotFile::from_saved(cfg, saved).and_then(|f| f.write_atomic(path)) {
        Ok(()) => EXIT_OK,
        Err(e) => fail(
            &format!(
                "--snapshot-file {}: {}",
                path.display(),
                crate::error::chain(&e)
            ),
            EXIT_FAILED,
        ),
    }
}

/// `resume PATH`: a file that does not read or that the fresh VM refuses is
/// bad input (status 2); the resumed run's status as for `run`.
fn resume_cmd(args: &ResumeArgs, t0: Instant) -> Result<i32, i32> {
    use crate::snapshot::document::SnapshotFile;
    let name = args.snapshot.display().to_string();
    let file = SnapshotFile::read(&args.snapshot)
        .map_err(|e| fail(&format!("{name}: {}", crate::error::chain(&e)), EXIT_USAGE))?;
    let mut cfg = file.config;
    cfg.snapshot_every = args.snapshot_every;
    if cfg.snapshot_every.is_some() {
        cfg.timeout = Some(SNAPSHOT_RUN_TIMEOUT);
    }
    if let Some(t) = args.timeout {
        cfg.timeout = Some(t);
    }
    let probe = MemProbe::start();
    let run =
        crate::snapshot::resume(&cfg, file.state.clone(), &file.snapshot(), t0).map_err(|e| {
            let status = if e.is_usage() {
                EXIT_USAGE
            } else {
                EXIT_FAILED
            };
            fail(&format!("{name}: {}", crate::error::chain(&e)), status)
        })?;
    let mut status = run_status(cfg.guest, &run.stop);
    if let Some(path) = &args.snapshot_file {
        status = status.max(write_snapshot_file(&cfg, &run, path));
    }
    let mut r = crate::demo::kvm_report(&cfg, run);
    r.memory = probe.finish();
    if r.outcome == crate::stop::Outcome::Halted && !r.guest_counters_hold() {
        status = EXIT_FAILED;
    }
    if r.run_seconds > 0.0 {
        // The exits before the snapshot were taken by another process.
        r.exits_per_second = r.exits_total.saturating_sub(file.at_exit) as f64 / r.run_seconds;
    }
    emit(&render_report(&r, args.format)).map(|()| status)
}

/// `run --guest timer`: status 0 when the accounting holds, 1 when not.
fn timer_cmd(args: &RunArgs) -> Result<i32, i32> {
    match crate::timer::run(&args.timer_config()) {
        Ok(r) => {
            let text = match args.format {
                Format::Json => r.json(),
                _ => r.text(),
            };
            let status = if r.passed { 0 } else { EXIT_FAILED };
            emit(&text).map(|()| status)
        }
        Err(e) => {
            let status = if e.is_usage() {
                EXIT_USAGE
            } else {
                EXIT_FAILED
            };
            Err(fail(&crate::error::chain(&e), status))
        }
    }
}

/// Flags `replay` cannot honour: a trace's exits were already taken, so
/// which exits KVM is asked for does not apply.
fn replay_refusal(p: &PolicyArgs) -> Option<&'static str> {
    if p.heki_exits.is_some() {
        return Some(
            "replay cannot honour --heki-exits: it selects which Heki exits KVM produces, \
             and a trace's exits are already recorded",
        );
    }
    if p.notify_vmexit == NotifyMode::Disable {
        return Some(
            "replay cannot honour --notify-vmexit disable: it keeps KVM from producing notify \
             exits, and a trace's exits are already recorded",
        );
    }
    None
}

fn replay_cmd(args: &ReplayArgs) -> Result<i32, i32> {
    if let Some(why) = replay_refusal(&args.policy) {
        return Err(fail(why, EXIT_USAGE));
    }
    let probe = MemProbe::start();
    let policy = args.policy.policy();
    let abi = args.policy.heki_abi;
    let (name, result) = if args.trace.as_os_str() == "-" {
        let name = "stdin".to_string();
        let r = crate::replay::replay(&name, std::io::stdin().lock(), policy, abi);
        (name, r)
    } else {
        let name = args.trace.display().to_string();
        let file = std::fs::File::open(&args.trace)
            .map_err(|e| fail(&format!("cannot read trace {name}: {e}"), EXIT_USAGE))?;
        let r = crate::replay::replay(&name, BufReader::new(file), policy, abi);
        (name, r)
    };
    match result {
        Ok(mut r) => {
            r.report.memory = probe.finish();
            let status = status_of(r.report.outcome);
            emit(&render_report(&r.report, args.format)).map(|()| status)
        }
        Err(e) => Err(fail(
            &format!("{name}: {}", crate::error::chain(&e)),
            EXIT_USAGE,
        )),
    }
}

fn plan_text(args: &PlanArgs) -> String {
    let policy = args.policy.policy();
    let steps = crate::host::plan_on_host(&policy);
    match args.format {
        Format::Json => {
            let out = serde_json::json!({
                "guest": args.guest.map(|g| g.name()),
                "count": args.count.or(args.guest.map(|g| g.default_count())),
                "vcpus": args.vcpus,
                "mem_mib": args.mem_mib,
                "policy": policy,
                "enable_caps": steps,
            });
            serde_json::to_string_pretty(&out).unwrap_or_default() + "\n"
        }
        Format::Text => {
            let mut s = String::new();
            for st in &steps {
                s.push_str(&format!(
                    "KVM_ENABLE_CAP {:>3} {:<32} arg 0x{:<12x} supported={} enable={}{}\n",
                    st.cap,
                    st.name,
                    st.arg,
                    st.supported,
                    st.enable,
                    st.warning
                        .as_deref()
                        .map(|w| format!("  ({w})"))
                        .unwrap_or_default()
                ));
            }
            s
        }
    }
}

/// `main` of the binary: parses the process arguments.
pub fn main(t0: Instant) -> i32 {
    main_with_args(std::env::args_os(), t0)
}
