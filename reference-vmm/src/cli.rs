// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The command line: `demo`, `run`, `replay`, `plan`, `caps`, `guests`,
//! `gen-trace`.
//!
//! Exit status: 0 success, 1 a run or scenario failed, 2 invalid usage
//! (bad flag or value, unknown guest, unreadable or malformed trace) with a
//! one-line error on stderr.

#![deny(unsafe_code)]

use std::io::BufReader;
use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{HekiDenialAction, HekiExits, NotifyMode, Policy, RunConfig};
use crate::exit::HekiAbi;
use crate::guests::Guest;
use crate::hostile::MemProbe;
use crate::report::Report;

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Human-readable text.
    Text,
    /// JSON.
    Json,
}

/// reference-vmm: a small, real VMM on /dev/kvm composing vmx-caps, vmx-controls,
/// notify-exit, heki-policy and vcpu-events.
#[derive(Parser, Debug)]
#[command(name = "reference-vmm", version, about)]
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
    #[arg(long)]
    pub count: Option<u64>,
    /// Seed of the garbage generator (decimal or 0x-hex; default: the demo's, 0x5eed0008).
    #[arg(long, default_value = "0x5eed0008", value_parser = parse_u64)]
    pub seed: u64,
}

/// A u64 in decimal or `0x` hex.
fn parse_u64(s: &str) -> Result<u64, String> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    };
    r.map_err(|e| format!("{s:?}: {e}"))
}

/// Policy flags shared by run, replay and plan.
#[derive(Args, Debug, Clone, Copy)]
pub struct PolicyArgs {
    /// Notify VM exits: run (resume valid, shut down on invalid context), internal-error, disable.
    #[arg(long, value_enum, default_value_t = NotifyMode::Run)]
    pub notify_vmexit: NotifyMode,
    /// Notify window in crystal-clock cycles (u32; 0 is safe).
    #[arg(long, default_value_t = 0)]
    pub notify_window: u32,
    /// Heki RFC ABI revision used to read exits 39..=41 (replay default: the trace's abi line).
    #[arg(long, value_enum)]
    pub heki_abi: Option<HekiAbi>,
    /// Heki exits to ask for.
    #[arg(long, value_enum, default_value_t = HekiExits::All)]
    pub heki_exits: HekiExits,
    /// What a Heki denial leads to.
    #[arg(long, value_enum, default_value_t = HekiDenialAction::Gp)]
    pub heki_denial: HekiDenialAction,
}

impl PolicyArgs {
    /// The policy (Heki ABI `none` unless given).
    pub fn policy(&self) -> Policy {
        Policy {
            notify_mode: self.notify_vmexit,
            notify_window: self.notify_window,
            heki_abi: self.heki_abi.unwrap_or(HekiAbi::None),
            heki_exits: self.heki_exits,
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
    #[arg(long)]
    pub count: Option<u64>,
    /// vCPUs (pio-loop and halt run on several; the other guests on one).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=64))]
    pub vcpus: u8,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub mem_mib: u32,
    /// Policy flags.
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

impl RunArgs {
    /// The run configuration.
    pub fn config(&self) -> RunConfig {
        let mut cfg = RunConfig::new(self.guest);
        if let Some(c) = self.count {
            cfg.count = c;
        }
        cfg.vcpus = self.vcpus;
        cfg.mem_mib = self.mem_mib;
        cfg.policy = self.policy.policy();
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
    #[arg(long)]
    pub count: Option<u64>,
    /// vCPUs.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=64))]
    pub vcpus: u8,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub mem_mib: u32,
    /// Policy flags.
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    pub format: Format,
}

/// Prints a report.
pub fn print_report(r: &Report, format: Format) {
    match format {
        Format::Text => print!("{}", r.to_text()),
        Format::Json => println!("{}", r.to_json()),
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
        Err(e) => {
            use clap::error::ErrorKind;
            match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                    let _ = e.print();
                    return 0;
                }
                _ => {
                    let text = e.render().to_string();
                    let first = text
                        .lines()
                        .find(|l| !l.trim().is_empty())
                        .unwrap_or("error: invalid usage");
                    eprintln!("{first}");
                    return 2;
                }
            }
        }
    };
    match cli.cmd {
        Cmd::Demo { format } => crate::demo::main(format),
        Cmd::Run(args) => {
            let cfg = args.config();
            let probe = MemProbe::start();
            match crate::vmm::run(&cfg, t0) {
                Ok(run) => {
                    let mut r = crate::demo::kvm_report(&cfg, run);
                    r.memory = probe.finish();
                    print_report(&r, args.format);
                    0
                }
                Err(e @ crate::vmm::VmmError::Config(_)) => {
                    eprintln!("error: {e}");
                    2
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    1
                }
            }
        }
        Cmd::Replay(args) => {
            let probe = MemProbe::start();
            let policy = args.policy.policy();
            let abi = args.policy.heki_abi;
            let (name, result) = if args.trace.as_os_str() == "-" {
                let name = "stdin".to_string();
                let r = crate::replay::replay(&name, std::io::stdin().lock(), policy, abi);
                (name, r)
            } else {
                let file = match std::fs::File::open(&args.trace) {
                    Ok(f) => f,
                    Err(e) => {
                        eprintln!("error: cannot read trace {}: {e}", args.trace.display());
                        return 2;
                    }
                };
                let name = args.trace.display().to_string();
                let r = crate::replay::replay(&name, BufReader::new(file), policy, abi);
                (name, r)
            };
            match result {
                Ok(mut r) => {
                    r.report.memory = probe.finish();
                    print_report(&r.report, args.format);
                    0
                }
                Err(e) => {
                    eprintln!("error: {name}: {e}");
                    2
                }
            }
        }
        Cmd::Plan(args) => {
            let policy = args.policy.policy();
            let steps = crate::host::plan_on_host(&policy);
            let out = serde_json::json!({
                "guest": args.guest.map(|g| g.name()),
                "count": args.count.or(args.guest.map(|g| g.default_count())),
                "vcpus": args.vcpus,
                "mem_mib": args.mem_mib,
                "policy": policy,
                "enable_caps": steps,
            });
            match args.format {
                Format::Json => {
                    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default())
                }
                Format::Text => {
                    for s in &steps {
                        println!(
                            "KVM_ENABLE_CAP {:>3} {:<32} arg 0x{:<12x} supported={} enable={}{}",
                            s.cap,
                            s.name,
                            s.arg,
                            s.supported,
                            s.enable,
                            s.warning
                                .as_deref()
                                .map(|w| format!("  ({w})"))
                                .unwrap_or_default()
                        );
                    }
                }
            }
            0
        }
        Cmd::Caps { format } => crate::host::caps_main(format),
        Cmd::GenTrace(args) => {
            use crate::hostile::{garbage_trace, heki_denial_storm, notify_storm};
            let mut t = match args.kind {
                TraceKind::NotifyStorm => notify_storm(args.count.unwrap_or(1_000_000)),
                TraceKind::HekiDenialStorm => heki_denial_storm(args.count.unwrap_or(100_000)),
                TraceKind::Garbage => garbage_trace(args.seed, args.count.unwrap_or(10_000)),
            };
            match std::io::copy(&mut t, &mut std::io::stdout().lock()) {
                Ok(_) => 0,
                Err(e) => {
                    eprintln!("error: writing the trace: {e}");
                    1
                }
            }
        }
        Cmd::Guests { source } => {
            for g in Guest::ALL {
                println!("{:<17} {}", g.name(), g.description());
                if source {
                    println!("{}", g.source());
                }
            }
            0
        }
    }
}

/// `main` of the binary: parses the process arguments.
pub fn main(t0: Instant) -> i32 {
    main_with_args(std::env::args_os(), t0)
}
