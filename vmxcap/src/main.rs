// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `vmxcap`: what can this CPU's VMX do? A typed, checked successor of QEMU's
//! `scripts/kvm/vmxcap`, built on the `vmx-caps` crate (all logic lives there).
//!
//! ```text
//! vmxcap [--dump FILE | --host [--cpu N] | --kvm] [--format text|qemu|qemu-2024|json]
//! vmxcap check    (--dump FILE | --host [--cpu N] | --kvm) [--format text|json]
//! vmxcap diff A (B | --kvm) [--format text|json]
//! vmxcap baseline [--nested] A B ... [--out FILE]
//! vmxcap config   (--dump FILE... | --host) [--on-inconsistent error|sanitize] [--format text|json]
//! vmxcap nested   (--dump FILE | --host [--cpu N] | --kvm) [--format text|qemu|json] [--l1]
//!                 [--ept 0|1 ... --host-shstk 0|1 ...]
//! ```
//!
//! Exit status: 0 success (check: no violation; diff: no difference), 1 check found a
//! violation / diff found a difference / config: the VMCS configuration fails or CPUs are
//! inconsistent / nested: KVM would not load (no nested view) or L1's KVM would not / a
//! write to stdout, stderr or `--out` failed, 2 bad usage, unreadable or malformed input,
//! or no VMX. Errors are one line, with input's control characters escaped.
//!
//! Adding a subcommand: one `Command` variant and one function called from `run`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::builder::BoolishValueParser;
use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};
use vmx_caps::baseline;
use vmx_caps::check::{self, Severity};
use vmx_caps::diff;
use vmx_caps::error::message_chain;
use vmx_caps::report::{self, Format};
use vmx_caps::{CapsError, Dump, VmxCaps};
use vmx_controls::nested::{self, NestedAssumptions, NestedError, NestedView};

use vmxcap::output::{clip, escape, Terminal, WriteFailed, EXIT_FAILED, EXIT_USAGE};

/// The terminal contract (vmxcap's library, shared with reference-vmm), with this
/// program's error prefix.
const TERM: Terminal = Terminal::new("vmxcap: error: ");

/// The exit statuses, shown by `--help`.
const EXIT_HELP: &str = "Exit status:
  0  success (check: no violation; diff: no difference)
  1  a check or write that failed: violations, differences, a VMCS configuration or
     CPUs KVM refuses, KVM not loading (nested), or stdout/stderr/--out not writable
  2  bad usage or input: unknown or missing arguments, unreadable or malformed dumps, no VMX";

#[derive(Parser, Debug)]
#[command(
    name = "vmxcap",
    version,
    about = "Report, check, compare and intersect Intel VMX capabilities (MSRs 0x480-0x493)",
    args_conflicts_with_subcommands = true,
    after_help = EXIT_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    show: ShowArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the capability report (the default when no subcommand is given).
    Show(ShowArgs),
    /// Check the architectural invariants; exit 1 when one is violated.
    Check(CheckArgs),
    /// Show what one capability set has that the other lacks; exit 1 when they differ.
    Diff(DiffArgs),
    /// Intersect capability sets (the common VMX baseline of a fleet) into a dump.
    Baseline(BaselineArgs),
    /// Compute the VMCS configuration KVM's setup_vmcs_config would use (vmx-controls);
    /// exit 1 when it fails. Several dumps (one per logical CPU) or --host: also what
    /// vmx_check_processor_compat says; exit 1 when the CPUs are inconsistent.
    Config(ConfigArgs),
    /// Predict the VMX capability MSRs KVM gives an L1 guest on this CPU (Linux v6.18
    /// nested_vmx_setup_ctls_msrs); exit 1 when KVM would not load.
    Nested(NestedArgs),
}

/// Where the capability MSRs come from.
#[derive(Args, Debug, Clone)]
struct Source {
    /// Read a JSON dump (the fixtures' format).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["host", "kvm"])]
    dump: Option<PathBuf>,
    /// Read this host's MSRs from /dev/cpu/N/msr (needs root and the msr module).
    #[arg(long, conflicts_with = "kvm")]
    host: bool,
    /// Logical CPU for --host.
    #[arg(long, value_name = "N", requires = "host")]
    cpu: Option<u32>,
    /// Read the VMX MSRs KVM offers nested guests (KVM feature MSRs on /dev/kvm).
    #[arg(long)]
    kvm: bool,
}

#[derive(Args, Debug)]
struct ShowArgs {
    #[command(flatten)]
    source: Source,
    /// Output format: text (every known bit named), qemu (exactly QEMU's vmxcap),
    /// qemu-2024 (QEMU's vmxcap after the 2024 FRED additions), json.
    #[arg(long, value_enum, default_value_t = ShowFormat::Text)]
    format: ShowFormat,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum ShowFormat {
    Text,
    Qemu,
    #[value(name = "qemu-2024")]
    Qemu2024,
    Json,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum OutFormat {
    Text,
    Json,
}

#[derive(Args, Debug)]
struct CheckArgs {
    #[command(flatten)]
    source: Source,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutFormat::Text)]
    format: OutFormat,
}

#[derive(Args, Debug)]
struct DiffArgs {
    /// First dump.
    a: PathBuf,
    /// Second dump.
    #[arg(required_unless_present = "kvm")]
    b: Option<PathBuf>,
    /// Compare with what KVM offers nested guests on this host (its feature MSRs on
    /// /dev/kvm) instead of a second dump, e.g. a predicted `vmxcap nested` view against
    /// the real one.
    #[arg(long, conflicts_with = "b")]
    kvm: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutFormat::Text)]
    format: OutFormat,
}

#[derive(Args, Debug)]
struct BaselineArgs {
    /// Dumps to intersect.
    #[arg(required = true, num_args = 1..)]
    dumps: Vec<PathBuf>,
    /// Write the baseline dump here (default: standard output).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Intersect the predicted L1 views (vmxcap nested) of the dumps instead: the VMX an
    /// L1 hypervisor can count on anywhere in the fleet.
    #[arg(long)]
    nested: bool,
    #[command(flatten)]
    assume: AssumeArgs,
}

#[derive(Args, Debug)]
struct ConfigArgs {
    /// The dump to configure from; several (one per logical CPU, the first is the boot
    /// CPU) also run vmx_check_processor_compat.
    #[arg(long, value_name = "FILE", num_args = 1.., required_unless_present = "host", conflicts_with = "host")]
    dump: Vec<PathBuf>,
    /// Every logical CPU of this host (/dev/cpu/N/msr, needs root and the msr module),
    /// checked like vmx_check_processor_compat.
    #[arg(long)]
    host: bool,
    /// What an inconsistent VM-entry/VM-exit control pair does: fail, like KVM's
    /// error_on_inconsistent_vmcs_config=1 (the default), or clear both sides.
    #[arg(long, value_enum, default_value_t = OnInconsistentArg::Error)]
    on_inconsistent: OnInconsistentArg,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutFormat::Text)]
    format: OutFormat,
}

#[derive(Args, Debug)]
struct NestedArgs {
    #[command(flatten)]
    source: Source,
    /// text: every control bit marked passed/emulated/masked and why; qemu: what QEMU's
    /// vmxcap prints inside that L1; json: a dump in the fixtures' format.
    #[arg(long, value_enum, default_value_t = NestedFormat::Text)]
    format: NestedFormat,
    /// Run L1's own KVM on the nested view: does it load, with which VMCS configuration,
    /// and what its L2 gets (qemu: L2's view; json: L1's configuration and L2's dump).
    #[arg(long)]
    l1: bool,
    #[command(flatten)]
    assume: AssumeArgs,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum NestedFormat {
    Text,
    Qemu,
    Json,
}

/// Assumptions of the nested model (upstream defaults): kvm_intel module parameters
/// and host CPUID features.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "KVM assumptions (0|1)")]
struct AssumeArgs {
    /// kvm_intel.nested.
    #[arg(long = "kvm-nested", value_name = "0|1", value_parser = BoolishValueParser::new(), default_value = "1", action = ArgAction::Set)]
    kvm_nested: bool,
    /// kvm_intel.ept.
    #[arg(long, value_name = "0|1", value_parser = BoolishValueParser::new(), default_value = "1", action = ArgAction::Set)]
    ept: bool,
    /// kvm_intel.vpid.
    #[arg(long, value_name = "0|1", value_parser = BoolishValueParser::new(), default_value = "1", action = ArgAction::Set)]
    vpid: bool,
    /// kvm_intel.unrestricted_guest.
    #[arg(long, value_name = "0|1", value_parser = BoolishValueParser::new(), default_value = "1", action = ArgAction::Set)]
    unrestricted_guest: bool,
    /// kvm_intel.flexpriority.
    #[arg(long, value_name = "0|1", value_parser = BoolishValueParser::new(), default_value = "1", action = ArgAction::Set)]
    flexpriority: bool,
    /// kvm_intel.eptad.
    #[arg(long, value_name = "0|1", value_parser = BoolishValueParser::new(), default_value = "1", action = ArgAction::Set)]
    eptad: bool,
    /// kvm_intel.enable_apicv.
    #[arg(long, value_name = "0|1", value_parser = BoolishValueParser::new(), default_value = "1", action = ArgAction::Set)]
    enable_apicv: bool,
    /// kvm_intel.sgx.
    #[arg(long, value_name = "0|1", value_parser = BoolishValueParser::new(), default_value = "1", action = ArgAction::Set)]
    sgx: bool,
    /// Host UMIP (default: inferred from IA32_VMX_CR4_FIXED1 bit 11).
    #[arg(long, value_name = "0|1", value_parser = BoolishValueParser::new())]
    host_umip: Option<bool>,
    /// Host CET shadow stacks (default: assumed present).
    #[arg(long, value_name = "0|1", value_parser = BoolishValueParser::new(), default_value = "1", action = ArgAction::Set)]
    host_shstk: bool,
    /// Host CET indirect-branch tracking (default: assumed present).
    #[arg(long, value_name = "0|1", value_parser = BoolishValueParser::new(), default_value = "1", action = ArgAction::Set)]
    host_ibt: bool,
    /// Host SGX (default: assumed present).
    #[arg(long, value_name = "0|1", value_parser = BoolishValueParser::new(), default_value = "1", action = ArgAction::Set)]
    host_sgx: bool,
}

impl AssumeArgs {
    fn assumptions(&self) -> NestedAssumptions {
        NestedAssumptions {
            nested: self.kvm_nested,
            ept: self.ept,
            vpid: self.vpid,
            unrestricted_guest: self.unrestricted_guest,
            flexpriority: self.flexpriority,
            eptad: self.eptad,
            enable_apicv: self.enable_apicv,
            sgx: self.sgx,
            host_umip: self.host_umip,
            host_shstk: self.host_shstk,
            host_ibt: self.host_ibt,
            host_sgx: self.host_sgx,
        }
    }
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum OnInconsistentArg {
    Error,
    Sanitize,
}

/// A failure that ends the program with status 2.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Caps(#[from] CapsError),
    #[error("no source: give --dump FILE, --host [--cpu N] or --kvm")]
    NoSource,
    #[error("no CPU listed in /proc/cpuinfo")]
    NoCpus,
    #[error("{path}")]
    Context {
        path: String,
        #[source]
        source: CapsError,
    },
    /// `--out FILE` could not be written: status 1.
    #[error("writing {path}")]
    WriteFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A write to stdout or stderr failed, already reported: status 1.
    #[error("output failed")]
    Output(WriteFailed),
}

impl From<WriteFailed> for CliError {
    fn from(w: WriteFailed) -> Self {
        Self::Output(w)
    }
}

impl CliError {
    /// 1 for a failed write, 2 for bad input.
    fn status(&self) -> u8 {
        match self {
            Self::WriteFile { .. } | Self::Output(_) => EXIT_FAILED,
            _ => EXIT_USAGE,
        }
    }
}

/// Prefixes the path, unless the error already names it (I/O errors do).
fn with_path(path: &std::path::Path) -> impl FnOnce(CapsError) -> CliError + '_ {
    move |source| {
        let path = path.display().to_string();
        if source.to_string().starts_with(&path) {
            CliError::Caps(source)
        } else {
            CliError::Context { path, source }
        }
    }
}

fn load_dump(path: &std::path::Path) -> Result<(Dump, VmxCaps), CliError> {
    let dump = Dump::read(path).map_err(with_path(path))?;
    let caps = dump.caps().map_err(with_path(path))?;
    Ok((dump, caps))
}

fn load(source: &Source) -> Result<(Dump, VmxCaps), CliError> {
    let dump = if let Some(p) = &source.dump {
        return load_dump(p);
    } else if source.host {
        vmx_caps::source::read_host(source.cpu.unwrap_or(0))?
    } else if source.kvm {
        vmx_caps::kvm::read_kvm()?
    } else {
        return Err(CliError::NoSource);
    };
    let caps = dump.caps()?;
    Ok((dump, caps))
}

fn show(args: &ShowArgs) -> Result<ExitCode, CliError> {
    let (_, caps) = load(&args.source)?;
    let format = match args.format {
        ShowFormat::Text => Format::Text,
        ShowFormat::Qemu => Format::Qemu,
        ShowFormat::Qemu2024 => Format::Qemu2024,
        ShowFormat::Json => Format::Json,
    };
    TERM.emit(&report::render(&caps, format))?;
    Ok(ExitCode::SUCCESS)
}

fn check(args: &CheckArgs) -> Result<ExitCode, CliError> {
    let (dump, caps) = load(&args.source)?;
    let r = check::check(&caps);
    match args.format {
        OutFormat::Json => {
            let mut s = serde_json::to_string_pretty(&r).unwrap_or_default();
            s.push('\n');
            TERM.emit(&s)?;
        }
        OutFormat::Text => {
            let mut s = String::new();
            for f in &r.findings {
                s.push_str(&f.to_string());
                s.push('\n');
            }
            let count = |sev| r.with_severity(sev).count();
            s.push_str(&format!(
                "{}: {} ({} violations, {} warnings, {} info)\n",
                if dump.cpu.is_empty() {
                    "capabilities".to_owned()
                } else {
                    escape(&dump.cpu)
                },
                if r.is_violated() { "VIOLATED" } else { "clean" },
                count(Severity::Violation),
                count(Severity::Warning),
                count(Severity::Info),
            ));
            TERM.emit(&s)?;
        }
    }
    Ok(if r.is_violated() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn diff_cmd(args: &DiffArgs) -> Result<ExitCode, CliError> {
    let (da, a) = load_dump(&args.a)?;
    let label = |d: &Dump, p: &std::path::Path| {
        escape(&if d.cpu.is_empty() {
            p.display().to_string()
        } else {
            format!("{} ({})", d.cpu, p.display())
        })
    };
    let (lb, b) = match &args.b {
        Some(path) => {
            let (db, b) = load_dump(path)?;
            (label(&db, path), b)
        }
        None => {
            let db = vmx_caps::kvm::read_kvm()?;
            (
                "KVM feature MSRs on this host (/dev/kvm)".to_owned(),
                db.caps()?,
            )
        }
    };
    let d = diff::diff(&a, &b);
    match args.format {
        OutFormat::Text => TERM.emit(&d.render_text(&label(&da, &args.a), &lb))?,
        OutFormat::Json => {
            let mut s = serde_json::to_string_pretty(&d).unwrap_or_default();
            s.push('\n');
            TERM.emit(&s)?;
        }
    }
    Ok(if d.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// How many input names a baseline's `cpu` text lists; the rest are counted.
const NAMES_KEPT: usize = 16;
/// How many characters of one input name a baseline keeps.
const NAME_CHARS: usize = 120;

/// One input's name, clipped to [`NAME_CHARS`] characters (`...` marks a clip).
fn clip_name(name: &str) -> String {
    clip(name, NAME_CHARS)
}

/// The inputs' names a baseline records: the first [`NAMES_KEPT`], then a count, so
/// memory and the written dump stay small whatever the number and size of the inputs
/// (and the dump stays under vmx-caps' `MAX_DUMP_BYTES`, readable by vmxcap).
#[derive(Default)]
struct Names {
    kept: Vec<String>,
    total: usize,
}

impl Names {
    fn push(&mut self, name: String) {
        self.total += 1;
        if self.kept.len() < NAMES_KEPT {
            self.kept.push(name);
        }
    }

    fn joined(&self) -> String {
        let mut s = self.kept.join("; ");
        let more = self.total - self.kept.len();
        if more > 0 {
            s.push_str(&format!("; and {more} more"));
        }
        s
    }
}

fn baseline_cmd(args: &BaselineArgs) -> Result<ExitCode, CliError> {
    // One dump at a time: only the running intersection and the clipped names stay.
    let mut sets = baseline::Intersection::new();
    let mut names = Names::default();
    let assume = args.assume.assumptions();
    for p in &args.dumps {
        let (d, c) = load_dump(p)?;
        let name = clip_name(&if d.cpu.is_empty() {
            p.display().to_string()
        } else {
            d.cpu
        });
        if args.nested {
            match nested::nested_view(&c, &assume) {
                Ok(v) => sets.add(&v.caps)?,
                Err(e) => return nested_refused(&format!("{} ({})", name, p.display()), &e),
            }
            names.push(format!("L1 on {name}"));
        } else {
            sets.add(&c)?;
            names.push(name);
        }
    }
    let count = sets.len();
    let base = sets.finish()?;
    let source = if args.nested {
        format!(
            "vmxcap baseline --nested (intersection of predicted L1 views, {} model; {})",
            nested::LINUX_VERSION,
            args_summary(&assume)
        )
    } else {
        "vmxcap baseline (intersection of capability sets)".to_owned()
    };
    let dump = Dump::from_caps(
        &base.caps,
        format!("baseline of: {}", names.joined()),
        source,
    );
    match &args.out {
        Some(path) => {
            dump.write(path).map_err(|e| match e {
                CapsError::Io { context, source } => CliError::WriteFile {
                    path: context,
                    source,
                },
                other => CliError::Caps(other),
            })?;
            let mut s = format!(
                "baseline of {} capability sets written to {}\n",
                count,
                escape(&path.display().to_string())
            );
            for n in &base.notes {
                s.push_str(&format!("note: {n}\n"));
            }
            TERM.emit(&s)?;
        }
        None => {
            for n in &base.notes {
                TERM.emit_err(&format!("note: {n}\n"))?;
            }
            TERM.emit(&dump.to_json())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn config_cmd(args: &ConfigArgs) -> Result<ExitCode, CliError> {
    use vmx_controls::report::{config_from_dump_file, render_outcome, Format as ConfigFormat};
    use vmx_controls::{OnInconsistent, VmcsPolicy};

    if args.host || args.dump.len() > 1 {
        return config_cpus(args);
    }
    let policy = VmcsPolicy::linux().with_on_inconsistent(match args.on_inconsistent {
        OnInconsistentArg::Error => OnInconsistent::Error,
        OnInconsistentArg::Sanitize => OnInconsistent::Sanitize,
    });
    let format = match args.format {
        OutFormat::Text => ConfigFormat::Text,
        OutFormat::Json => ConfigFormat::Json,
    };
    let Some(path) = args.dump.first() else {
        return Err(CliError::NoSource);
    };
    let outcome = config_from_dump_file(path, &policy);
    let rendered = render_outcome(&outcome, format);
    if outcome.is_err() && matches!(args.format, OutFormat::Text) {
        // One line, whatever the path or the dump's text holds.
        let line = rendered
            .output
            .strip_suffix('\n')
            .unwrap_or(&rendered.output);
        TERM.emit_err(&format!("{}\n", escape(line)))?;
    } else {
        TERM.emit(&rendered.output)?;
    }
    // render_outcome's statuses are 0 (computed), 1 (configuration fails), 2 (unusable input).
    Ok(ExitCode::from(
        u8::try_from(rendered.exit_status).unwrap_or(2),
    ))
}

/// Logical CPUs listed in /proc/cpuinfo ("processor : N" lines).
fn host_cpus() -> Result<Vec<u32>, CliError> {
    let text =
        std::fs::read_to_string("/proc/cpuinfo").map_err(|e| CapsError::io("/proc/cpuinfo", e))?;
    let cpus: Vec<u32> = text
        .lines()
        .filter_map(|l| l.strip_prefix("processor"))
        .filter_map(|l| l.trim_start_matches([' ', '\t', ':']).trim().parse().ok())
        .collect();
    if cpus.is_empty() {
        return Err(CliError::NoCpus);
    }
    Ok(cpus)
}

/// `config` over several CPUs: the boot CPU's configuration, then what
/// vmx_check_processor_compat says about every other CPU (host SGX assumed, as by
/// `vmxcap nested`).
fn config_cpus(args: &ConfigArgs) -> Result<ExitCode, CliError> {
    let mut sets = Vec::new();
    if args.host {
        for cpu in host_cpus()? {
            sets.push(vmx_caps::source::read_host(cpu)?.caps()?);
        }
    } else {
        for p in &args.dump {
            sets.push(load_dump(p)?.1);
        }
    }
    let assume = NestedAssumptions::default();
    let policy = assume
        .l0_policy()
        .with_on_inconsistent(match args.on_inconsistent {
            OnInconsistentArg::Error => vmx_controls::OnInconsistent::Error,
            OnInconsistentArg::Sanitize => vmx_controls::OnInconsistent::Sanitize,
        });
    let first = sets.first().ok_or(CliError::NoSource)?;
    let boot = match vmx_controls::setup_vmcs_config(first, &policy) {
        Ok(b) => b,
        Err(e) => {
            TERM.emit_err(&format!(
                "error: configuration fails on the boot CPU: {}\n",
                escape(&e.to_string())
            ))?;
            return Ok(ExitCode::from(1));
        }
    };
    let report = match nested::check_processor_compat_with(&sets, &assume, &policy) {
        Ok(r) => r,
        Err(e) => {
            TERM.emit_err(&format!("error: {}\n", escape(&message_chain(&e))))?;
            return Ok(ExitCode::from(1));
        }
    };
    match args.format {
        OutFormat::Text => {
            let mut s = boot.render_text();
            s.push_str(&format!(
                "vmx_check_processor_compat over {} CPUs (CPU 0 is the boot CPU; nested=1):\n",
                sets.len()
            ));
            for c in &report.cpus {
                s.push_str(&format!("  {c}\n"));
            }
            s.push_str(if report.loads() {
                "kvm_intel loads: every CPU matches the boot CPU\n"
            } else {
                "kvm_intel refuses to load (-EIO)\n"
            });
            TERM.emit(&s)?;
        }
        OutFormat::Json => {
            let v = serde_json::json!({
                "config": boot.report().to_json_value(),
                "processor_compat": report,
                "loads": report.loads(),
            });
            let mut s = serde_json::to_string_pretty(&v).unwrap_or_default();
            s.push('\n');
            TERM.emit(&s)?;
        }
    }
    Ok(if report.loads() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// One line on stderr and status 1: KVM would not load, so there is no nested view.
fn nested_refused(what: &str, e: &NestedError) -> Result<ExitCode, CliError> {
    TERM.emit_err(&format!(
        "vmxcap: nested: {}: no nested view: {}\n",
        escape(what),
        escape(&message_chain(e))
    ))?;
    Ok(ExitCode::from(1))
}

/// The assumptions as flags, for dump provenance (UMIP is inferred per CPU).
fn args_summary(a: &NestedAssumptions) -> String {
    let b = |v: bool| u8::from(v);
    format!(
        "ept={} vpid={} unrestricted_guest={} flexpriority={} eptad={} enable_apicv={} sgx={} host: umip={} shstk={} ibt={} sgx={}",
        b(a.ept),
        b(a.vpid),
        b(a.unrestricted_guest),
        b(a.flexpriority),
        b(a.eptad),
        b(a.enable_apicv),
        b(a.sgx),
        a.host_umip.map_or("inferred".to_owned(), |v| b(v).to_string()),
        b(a.host_shstk),
        b(a.host_ibt),
        b(a.host_sgx),
    )
}

fn nested_cmd(args: &NestedArgs) -> Result<ExitCode, CliError> {
    let (dump, caps) = load(&args.source)?;
    let cpu = if dump.cpu.is_empty() {
        "this CPU".to_owned()
    } else {
        escape(&dump.cpu)
    };
    let view = match nested::nested_view(&caps, &args.assume.assumptions()) {
        Ok(v) => v,
        Err(e) => return nested_refused(&cpu, &e),
    };
    if args.l1 {
        return l1_cmd(args, &view, &cpu);
    }
    match args.format {
        NestedFormat::Json => TERM.emit(&view.to_dump(&dump.cpu).to_json())?,
        NestedFormat::Qemu => TERM.emit(&report::render(&view.caps, Format::Qemu))?,
        NestedFormat::Text => TERM.emit(&nested::render_text(&view, &cpu))?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `nested --l1`: L1's KVM on the nested view, and what its L2 gets.
fn l1_cmd(args: &NestedArgs, view: &NestedView, cpu: &str) -> Result<ExitCode, CliError> {
    let l1 = nested::l1_config(view);
    let setup = match &l1.setup {
        Ok(s) => s,
        Err(e) => {
            TERM.emit_err(&format!(
                "vmxcap: nested --l1: kvm_intel in L1 on {cpu} refuses to load: {}\n",
                escape(&e.to_string())
            ))?;
            return Ok(ExitCode::from(1));
        }
    };
    let l2 = match &l1.l2 {
        Some(Ok(v)) => v,
        Some(Err(e)) => return nested_refused(&format!("L1 on {cpu}"), e),
        None => return Ok(ExitCode::from(1)),
    };
    match args.format {
        NestedFormat::Qemu => TERM.emit(&report::render(&l2.caps, Format::Qemu))?,
        NestedFormat::Json => {
            let l2_dump: serde_json::Value =
                serde_json::from_str(&l2.to_dump(&format!("the L1 hypervisor on {cpu}")).to_json())
                    .unwrap_or_default();
            let v = serde_json::json!({
                "l1_loads": true,
                "l1_config": setup.report().to_json_value(),
                "l2": l2_dump,
            });
            let mut s = serde_json::to_string_pretty(&v).unwrap_or_default();
            s.push('\n');
            TERM.emit(&s)?;
        }
        NestedFormat::Text => {
            let mut s = format!(
                "L1 on {cpu}: kvm_intel loads on the nested view ({} model)\n",
                nested::LINUX_VERSION
            );
            s.push_str(&setup.render_text());
            let d = diff::diff(&view.caps, &l2.caps);
            if d.is_empty() {
                s.push_str(
                    "L2 gets the same VMX capabilities as L1 (the nested view is a fixed point)\n",
                );
            } else {
                s.push_str("L2 gets less than L1:\n");
                s.push_str(&d.render_text("L1", "L2"));
            }
            TERM.emit(&s)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn run(cli: &Cli) -> Result<ExitCode, CliError> {
    match &cli.command {
        None => show(&cli.show),
        Some(Command::Show(a)) => show(a),
        Some(Command::Check(a)) => check(a),
        Some(Command::Diff(a)) => diff_cmd(a),
        Some(Command::Baseline(a)) => baseline_cmd(a),
        Some(Command::Config(a)) => config_cmd(a),
        Some(Command::Nested(a)) => nested_cmd(a),
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => return ExitCode::from(TERM.usage_error(&e)),
    };
    match run(&cli) {
        Ok(code) => code,
        // Already reported (or a closed pipe).
        Err(CliError::Output(WriteFailed)) => ExitCode::from(EXIT_FAILED),
        // One escaped line, whatever the error.
        Err(e) => ExitCode::from(TERM.fail(&message_chain(&e), e.status())),
    }
}
