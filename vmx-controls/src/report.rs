// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Reports of a computed configuration, for tools such as `vmxcap config`.
//!
//! # JSON shape (stable)
//!
//! Success ([`VmcsConfigReport`]): one object with exactly these keys — the seven
//! control words as zero-padded lowercase hex strings (8 digits for the 32-bit words,
//! 16 for the 64-bit `tertiary` and `secondary_exit`), and `diagnostics`, an array of
//! `{ "kind", "severity", "message" }` objects in the order they arose:
//!
//! ```json
//! {
//!   "pin_based": "0x000000ff",
//!   "primary": "0xfff9fffe",
//!   "secondary": "0x02193fff",
//!   "tertiary": "0x0000000000000000",
//!   "exit": "0x01ffffff",
//!   "secondary_exit": "0x0000000000000000",
//!   "entry": "0x0003f3ff",
//!   "diagnostics": []
//! }
//! ```
//!
//! `kind` is [`Diagnostic::kind`] (e.g. `"inconsistent_pair"`), `severity` is `"info"`
//! or `"warning"`, `message` is the KVM-like text ([`Diagnostic`]'s `Display`).
//!
//! Failure ([`ErrorReport`]): `{ "error": { "kind", "message" } }` where `kind` is
//! [`SetupError::kind`] for a configuration that fails, or `"unusable_input"`.
//!
//! # Exit status
//!
//! A tool should exit with [`ConfigError::exit_status`] / [`EXIT_SUCCESS`]:
//! `0` the configuration was computed (diagnostics may be present), `1` the
//! configuration fails (KVM would refuse to load; the error names what failed), `2` the
//! input is unusable (unreadable or malformed dump, missing required MSR).

use std::fmt::Write as _;
#[cfg(feature = "json")]
use std::path::Path;

use vmx_caps::error::message_chain;
use vmx_caps::CapsError;
#[cfg(feature = "json")]
use vmx_caps::Dump;

use crate::controls::ControlField;
#[cfg(feature = "json")]
use crate::policy::VmcsPolicy;
#[cfg(feature = "json")]
use crate::setup::setup_vmcs_config;
use crate::setup::{Diagnostic, SetupError, Severity, VmcsSetup};

/// Exit status: configuration computed.
pub const EXIT_SUCCESS: i32 = 0;
/// Exit status: the configuration fails (a [`SetupError`]).
pub const EXIT_CONFIG_FAILED: i32 = 1;
/// Exit status: the input cannot be used (a [`CapsError`]).
pub const EXIT_UNUSABLE_INPUT: i32 = 2;

/// One diagnostic in the JSON report.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct DiagnosticReport {
    /// [`Diagnostic::kind`].
    pub kind: String,
    /// [`Diagnostic::severity`].
    pub severity: Severity,
    /// The message ([`Diagnostic`]'s `Display`).
    pub message: String,
}

impl From<&Diagnostic> for DiagnosticReport {
    fn from(d: &Diagnostic) -> Self {
        Self {
            kind: d.kind().to_owned(),
            severity: d.severity(),
            message: d.to_string(),
        }
    }
}

/// The JSON report of a computed configuration (see the module docs for the shape).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct VmcsConfigReport {
    /// Pin-based controls, `0x%08x`.
    pub pin_based: String,
    /// Primary processor-based controls, `0x%08x`.
    pub primary: String,
    /// Secondary processor-based controls, `0x%08x`.
    pub secondary: String,
    /// Tertiary processor-based controls, `0x%016x`.
    pub tertiary: String,
    /// Primary VM-exit controls, `0x%08x`.
    pub exit: String,
    /// Secondary VM-exit controls, `0x%016x`.
    pub secondary_exit: String,
    /// VM-entry controls, `0x%08x`.
    pub entry: String,
    /// Diagnostics, in the order they arose.
    pub diagnostics: Vec<DiagnosticReport>,
}

impl VmcsConfigReport {
    /// Build the report of a computed configuration.
    pub fn new(setup: &VmcsSetup) -> Self {
        let c = &setup.config;
        let hex = |f: ControlField| f.hex(c.field(f));
        Self {
            pin_based: hex(ControlField::PinBased),
            primary: hex(ControlField::Primary),
            secondary: hex(ControlField::Secondary),
            tertiary: hex(ControlField::Tertiary),
            exit: hex(ControlField::Exit),
            secondary_exit: hex(ControlField::SecondaryExit),
            entry: hex(ControlField::Entry),
            diagnostics: setup
                .diagnostics
                .iter()
                .map(DiagnosticReport::from)
                .collect(),
        }
    }

    /// As a JSON value (keys as in the module docs).
    #[cfg(feature = "json")]
    #[cfg_attr(docsrs, doc(cfg(feature = "json")))]
    pub fn to_json_value(&self) -> serde_json::Value {
        // Plain strings and enums: serialization cannot fail.
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// Pretty-printed JSON text, ending in a newline.
    #[cfg(feature = "json")]
    #[cfg_attr(docsrs, doc(cfg(feature = "json")))]
    pub fn to_json_string(&self) -> String {
        // Field order as declared: the seven words, then diagnostics.
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }
}

impl VmcsSetup {
    /// The JSON report ([`VmcsConfigReport`]).
    pub fn report(&self) -> VmcsConfigReport {
        VmcsConfigReport::new(self)
    }

    /// The JSON report as a JSON value.
    #[cfg(feature = "json")]
    #[cfg_attr(docsrs, doc(cfg(feature = "json")))]
    pub fn to_json_value(&self) -> serde_json::Value {
        self.report().to_json_value()
    }

    /// Human-readable rendering: one line per control word (hex value and the names of
    /// its set bits), the EPT/VPID capabilities kept, then the diagnostics.
    pub fn render_text(&self) -> String {
        let c = &self.config;
        let mut out = String::new();
        out.push_str("VMCS configuration (KVM setup_vmcs_config)\n");
        for f in ControlField::ALL {
            let v = c.field(f);
            let _ = writeln!(
                out,
                "  {:<36} {:<18} {}",
                f.name(),
                f.hex(v),
                f.describe_bits(v)
            );
        }
        let _ = writeln!(out, "  {:<36} {:#010x}", "EPT capabilities", c.ept_cap);
        let _ = writeln!(out, "  {:<36} {:#010x}", "VPID capabilities", c.vpid_cap);
        if self.diagnostics.is_empty() {
            out.push_str("diagnostics: none\n");
        } else {
            out.push_str("diagnostics:\n");
            for d in &self.diagnostics {
                let sev = match d.severity() {
                    Severity::Info => "info",
                    Severity::Warning => "warning",
                };
                let _ = writeln!(out, "  {sev}: {d}");
            }
        }
        out
    }
}

/// Everything that can go wrong between a dump and a configuration.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The dump cannot be read or parsed, or lacks a required MSR (the
    /// [`CapsError`] is the source).
    #[error("unusable input")]
    UnusableInput(#[from] CapsError),
    /// The configuration fails (what KVM would refuse to load with; the [`SetupError`]
    /// is the source).
    #[error("configuration fails")]
    Setup(#[from] SetupError),
}

impl ConfigError {
    /// Exit status for a tool: [`EXIT_CONFIG_FAILED`] or [`EXIT_UNUSABLE_INPUT`].
    pub const fn exit_status(&self) -> i32 {
        match self {
            ConfigError::UnusableInput(_) => EXIT_UNUSABLE_INPUT,
            ConfigError::Setup(_) => EXIT_CONFIG_FAILED,
        }
    }

    /// Stable snake_case identifier: [`SetupError::kind`] or `"unusable_input"`.
    pub const fn kind(&self) -> &'static str {
        match self {
            ConfigError::UnusableInput(_) => "unusable_input",
            ConfigError::Setup(e) => e.kind(),
        }
    }

    /// The JSON error report ([`ErrorReport`]).
    pub fn report(&self) -> ErrorReport {
        ErrorReport {
            error: ErrorBody {
                kind: self.kind().to_owned(),
                message: message_chain(self),
            },
        }
    }
}

/// The JSON report of a failure: `{ "error": { "kind", "message" } }`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct ErrorReport {
    /// What failed.
    pub error: ErrorBody,
}

/// Body of [`ErrorReport`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct ErrorBody {
    /// [`ConfigError::kind`].
    pub kind: String,
    /// Human-readable reason: the error and its causes, `": "`-joined
    /// ([`message_chain`]).
    pub message: String,
}

impl ErrorReport {
    /// As a JSON value.
    #[cfg(feature = "json")]
    #[cfg_attr(docsrs, doc(cfg(feature = "json")))]
    pub fn to_json_value(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

/// Compute the configuration from the JSON text of a capability dump (the format of
/// `vmx_caps::dump`).
///
/// ```
/// use vmx_controls::report::{config_from_dump_json, render_outcome, Format};
/// use vmx_controls::{VmcsPolicy, EXIT_UNUSABLE_INPUT};
///
/// // A dump without IA32_VMX_PINBASED_CTLS: the input is unusable (exit status 2).
/// let outcome = config_from_dump_json(
///     r#"{"msrs": {"0x480": "0x00da040000000004"}}"#,
///     &VmcsPolicy::linux(),
/// );
/// let out = render_outcome(&outcome, Format::Json);
/// assert_eq!(out.exit_status, EXIT_UNUSABLE_INPUT);
/// let report: serde_json::Value = serde_json::from_str(&out.output).unwrap();
/// assert_eq!(report["error"]["kind"], "unusable_input");
/// ```
#[cfg(feature = "json")]
#[cfg_attr(docsrs, doc(cfg(feature = "json")))]
pub fn config_from_dump_json(text: &str, policy: &VmcsPolicy) -> Result<VmcsSetup, ConfigError> {
    let caps = Dump::from_json(text)?.caps()?;
    Ok(setup_vmcs_config(&caps, policy)?)
}

/// Compute the configuration from a dump file.
#[cfg(feature = "json")]
#[cfg_attr(docsrs, doc(cfg(feature = "json")))]
pub fn config_from_dump_file(path: &Path, policy: &VmcsPolicy) -> Result<VmcsSetup, ConfigError> {
    let caps = Dump::read(path)?.caps()?;
    Ok(setup_vmcs_config(&caps, policy)?)
}

/// Output format of [`render_outcome`].
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Format {
    /// [`VmcsSetup::render_text`], or `error: <message>` on failure.
    #[default]
    Text,
    /// [`VmcsConfigReport`] or [`ErrorReport`], pretty-printed (feature `json`).
    #[cfg(feature = "json")]
    #[cfg_attr(docsrs, doc(cfg(feature = "json")))]
    Json,
}

impl core::str::FromStr for Format {
    type Err = crate::pairs::ParseChoiceError;

    /// `text` or `json`, the spellings of `vmxcap config --format`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(Format::Text),
            #[cfg(feature = "json")]
            "json" => Ok(Format::Json),
            _ => Err(crate::pairs::ParseChoiceError::new(s, "text, json")),
        }
    }
}

/// What a tool prints and how it exits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedOutcome {
    /// The text to print (stdout on success; on failure stdout for JSON, stderr for text).
    pub output: String,
    /// The process exit status (0, 1 or 2; see the module docs).
    pub exit_status: i32,
}

/// Render the outcome of `config_from_dump_json` / `config_from_dump_file` (feature
/// `json`) the way `vmxcap config` prints it.
pub fn render_outcome(outcome: &Result<VmcsSetup, ConfigError>, format: Format) -> RenderedOutcome {
    match (outcome, format) {
        #[cfg(feature = "json")]
        (Ok(setup), Format::Json) => RenderedOutcome {
            output: setup.report().to_json_string(),
            exit_status: EXIT_SUCCESS,
        },
        (Ok(setup), _) => RenderedOutcome {
            output: setup.render_text(),
            exit_status: EXIT_SUCCESS,
        },
        #[cfg(feature = "json")]
        (Err(e), Format::Json) => {
            let mut output = serde_json::to_string_pretty(&e.report()).unwrap_or_default();
            output.push('\n');
            RenderedOutcome {
                output,
                exit_status: e.exit_status(),
            }
        }
        (Err(e), _) => RenderedOutcome {
            output: format!("error: {}\n", message_chain(e)),
            exit_status: e.exit_status(),
        },
    }
}
