// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `vmxcap`: what can this CPU's VMX do? A typed, checked successor of QEMU's
//! `scripts/kvm/vmxcap`, built on the `vmx-caps` crate (all logic lives there).
//!
//! ```text
//! vmxcap [--dump FILE | --host [--cpu N] | --kvm] [--format text|qemu|qemu-2024|json]
//! vmxcap check    (--dump FILE | --host [--cpu N] | --kvm) [--format text|json]
//! vmxcap diff A B [--format text|json]
//! vmxcap baseline A B ... [--out FILE]
//! vmxcap config   --dump FILE [--on-inconsistent error|sanitize] [--format text|json]
//! ```
//!
//! Exit status: 0 success (check: no violation; diff: no difference), 1 check found a
//! violation / diff found a difference / config: the VMCS configuration fails, 2 unreadable
//! or malformed input, or no VMX.
//!
//! Adding a subcommand: one `Command` variant and one function called from `run`.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use vmx_caps::baseline;
use vmx_caps::check::{self, Severity};
use vmx_caps::diff;
use vmx_caps::report::{self, Format};
use vmx_caps::{CapsError, Dump, VmxCaps};

#[derive(Parser, Debug)]
#[command(
    name = "vmxcap",
    version,
    about = "Report, check, compare and intersect Intel VMX capabilities (MSRs 0x480-0x493)",
    args_conflicts_with_subcommands = true
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
    /// exit 1 when it fails.
    Config(ConfigArgs),
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
    b: PathBuf,
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
}

#[derive(Args, Debug)]
struct ConfigArgs {
    /// The dump to configure from.
    #[arg(long, value_name = "FILE")]
    dump: PathBuf,
    /// What an inconsistent VM-entry/VM-exit control pair does: fail, like KVM's
    /// error_on_inconsistent_vmcs_config=1 (the default), or clear both sides.
    #[arg(long, value_enum, default_value_t = OnInconsistentArg::Error)]
    on_inconsistent: OnInconsistentArg,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutFormat::Text)]
    format: OutFormat,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum OnInconsistentArg {
    Error,
    Sanitize,
}

/// A failure that ends the program with status 2.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("{0}")]
    Caps(#[from] CapsError),
    #[error("no source: give --dump FILE, --host [--cpu N] or --kvm")]
    NoSource,
    #[error("{path}: {source}")]
    Context {
        path: String,
        #[source]
        source: CapsError,
    },
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

/// Writes to stdout, ignoring a closed pipe (`vmxcap | head`) instead of panicking.
fn emit(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// Writes to stderr, ignoring a closed pipe (`eprintln!` would panic on EPIPE).
fn emit_err(text: &str) {
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
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
    emit(&report::render(&caps, format));
    Ok(ExitCode::SUCCESS)
}

fn check(args: &CheckArgs) -> Result<ExitCode, CliError> {
    let (dump, caps) = load(&args.source)?;
    let r = check::check(&caps);
    match args.format {
        OutFormat::Json => {
            let mut s = serde_json::to_string_pretty(&r).unwrap_or_default();
            s.push('\n');
            emit(&s);
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
                    "capabilities"
                } else {
                    &dump.cpu
                },
                if r.is_violated() { "VIOLATED" } else { "clean" },
                count(Severity::Violation),
                count(Severity::Warning),
                count(Severity::Info),
            ));
            emit(&s);
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
    let (db, b) = load_dump(&args.b)?;
    let d = diff::diff(&a, &b);
    let label = |d: &Dump, p: &std::path::Path| {
        if d.cpu.is_empty() {
            p.display().to_string()
        } else {
            format!("{} ({})", d.cpu, p.display())
        }
    };
    match args.format {
        OutFormat::Text => emit(&d.render_text(&label(&da, &args.a), &label(&db, &args.b))),
        OutFormat::Json => {
            let mut s = serde_json::to_string_pretty(&d).unwrap_or_default();
            s.push('\n');
            emit(&s);
        }
    }
    Ok(if d.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn baseline_cmd(args: &BaselineArgs) -> Result<ExitCode, CliError> {
    let mut sets = Vec::with_capacity(args.dumps.len());
    let mut names = Vec::with_capacity(args.dumps.len());
    for p in &args.dumps {
        let (d, c) = load_dump(p)?;
        names.push(if d.cpu.is_empty() {
            p.display().to_string()
        } else {
            d.cpu
        });
        sets.push(c);
    }
    let base = baseline::intersect(&sets)?;
    let dump = Dump::from_caps(
        &base.caps,
        format!("baseline of: {}", names.join("; ")),
        "vmxcap baseline (intersection of capability sets)",
    );
    match &args.out {
        Some(path) => {
            dump.write(path).map_err(with_path(path))?;
            let mut s = format!(
                "baseline of {} capability sets written to {}\n",
                sets.len(),
                path.display()
            );
            for n in &base.notes {
                s.push_str(&format!("note: {n}\n"));
            }
            emit(&s);
        }
        None => {
            for n in &base.notes {
                emit_err(&format!("note: {n}\n"));
            }
            emit(&dump.to_json());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn config_cmd(args: &ConfigArgs) -> Result<ExitCode, CliError> {
    use vmx_controls::report::{config_from_dump_file, render_outcome, Format as ConfigFormat};
    use vmx_controls::{OnInconsistent, VmcsPolicy};

    let policy = VmcsPolicy::linux().with_on_inconsistent(match args.on_inconsistent {
        OnInconsistentArg::Error => OnInconsistent::Error,
        OnInconsistentArg::Sanitize => OnInconsistent::Sanitize,
    });
    let format = match args.format {
        OutFormat::Text => ConfigFormat::Text,
        OutFormat::Json => ConfigFormat::Json,
    };
    let outcome = config_from_dump_file(&args.dump, &policy);
    let rendered = render_outcome(&outcome, format);
    if outcome.is_err() && matches!(args.format, OutFormat::Text) {
        emit_err(&rendered.output);
    } else {
        emit(&rendered.output);
    }
    // render_outcome's statuses are 0 (computed), 1 (configuration fails), 2 (unusable input).
    Ok(ExitCode::from(
        u8::try_from(rendered.exit_status).unwrap_or(2),
    ))
}

fn run(cli: &Cli) -> Result<ExitCode, CliError> {
    match &cli.command {
        None => show(&cli.show),
        Some(Command::Show(a)) => show(a),
        Some(Command::Check(a)) => check(a),
        Some(Command::Diff(a)) => diff_cmd(a),
        Some(Command::Baseline(a)) => baseline_cmd(a),
        Some(Command::Config(a)) => config_cmd(a),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => code,
        Err(e) => {
            // One line, whatever the error.
            let msg = e.to_string().replace('\n', " ");
            emit_err(&format!("vmxcap: error: {msg}\n"));
            ExitCode::from(2)
        }
    }
}
