// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `vmx_check_processor_compat` (arch/x86/kvm/vmx/vmx.c) over several CPUs: each CPU
//! re-runs `setup_vmcs_config` (and, with `nested=1`, `nested_vmx_setup_ctls_msrs`)
//! and its `vmcs_config` must equal the boot CPU's, else kvm_intel refuses to load
//! ("Inconsistent VMCS config on CPU %d").

use core::fmt;

use vmx_caps::VmxCaps;

use super::assumptions::NestedAssumptions;
use super::view::{nested_view_with, NestedError};
use crate::controls::ControlField;
use crate::policy::VmcsPolicy;
use crate::setup::{setup_vmcs_config, SetupError, VmcsConfig};

/// The boot CPU (index 0) cannot be configured: kvm_intel does not load at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CompatError {
    /// No capability set was given.
    #[error("no CPU given")]
    NoCpu,
    /// The boot CPU's `setup_vmcs_config` fails.
    /// The [`SetupError`] is the source.
    #[error("kvm_intel refuses to load: setup_vmcs_config fails on the boot CPU")]
    BootCpu(#[from] SetupError),
}

/// What `vmx_check_processor_compat` says about one secondary CPU.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(tag = "status", rename_all = "snake_case"))]
#[non_exhaustive]
pub enum CpuCompat {
    /// Same `vmcs_config` as the boot CPU.
    Consistent {
        /// CPU index.
        cpu: usize,
    },
    /// `setup_vmcs_config` fails on this CPU ("Failed to setup VMCS config on CPU %d").
    SetupFailed {
        /// CPU index.
        cpu: usize,
        /// Why.
        reason: String,
    },
    /// The configuration differs ("Inconsistent VMCS config on CPU %d").
    Inconsistent {
        /// CPU index.
        cpu: usize,
        /// The `vmcs_config` members that differ, `name: boot -> this`.
        differences: Vec<String>,
    },
}

impl fmt::Display for CpuCompat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CpuCompat::Consistent { cpu } => write!(f, "CPU {cpu}: consistent"),
            CpuCompat::SetupFailed { cpu, reason } => {
                write!(f, "Failed to setup VMCS config on CPU {cpu}: {reason}")
            }
            CpuCompat::Inconsistent { cpu, differences } => write!(
                f,
                "Inconsistent VMCS config on CPU {cpu} ({})",
                differences.join("; ")
            ),
        }
    }
}

/// The result over every CPU.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct CompatReport {
    /// One entry per CPU after the boot CPU, in order.
    pub cpus: Vec<CpuCompat>,
}

impl CompatReport {
    /// Whether kvm_intel loads (every CPU consistent with the boot CPU).
    pub fn loads(&self) -> bool {
        self.cpus
            .iter()
            .all(|c| matches!(c, CpuCompat::Consistent { .. }))
    }
}

// The members of `struct vmcs_config` that vmx_check_processor_compat memcmp()s
// (`vmx_capability` is not part of it; the nested MSRs are).
fn config_fields(c: &VmcsConfig) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = ControlField::ALL
        .iter()
        .map(|f| (f.json_key().to_owned(), c.field(*f)))
        .collect();
    v.push(("basic".into(), c.basic));
    v.push(("misc".into(), c.misc));
    v
}

fn snapshot(
    caps: &VmxCaps,
    a: &NestedAssumptions,
    policy: &VmcsPolicy,
) -> Result<Vec<(String, u64)>, SetupError> {
    let setup = setup_vmcs_config(caps, policy)?;
    let mut v = config_fields(&setup.config);
    if a.nested {
        match nested_view_with(caps, a, policy) {
            Ok(n) => v.extend(
                n.caps
                    .raw()
                    .iter()
                    .map(|(i, x)| (format!("nested {i:#x}"), x)),
            ),
            Err(NestedError::L0Refuses(e)) => return Err(e),
            Err(_) => {}
        }
    }
    Ok(v)
}

/// Runs `vmx_check_processor_compat` for CPUs 1.. against CPU 0 (the boot CPU).
pub fn check_processor_compat(
    cpus: &[VmxCaps],
    a: &NestedAssumptions,
) -> Result<CompatReport, CompatError> {
    check_processor_compat_with(cpus, a, &a.l0_policy())
}

/// [`check_processor_compat`] with `setup_vmcs_config` run under `policy`.
pub fn check_processor_compat_with(
    cpus: &[VmxCaps],
    a: &NestedAssumptions,
    policy: &VmcsPolicy,
) -> Result<CompatReport, CompatError> {
    let (boot, rest) = cpus.split_first().ok_or(CompatError::NoCpu)?;
    let reference = snapshot(boot, a, policy)?;
    let cpus = rest
        .iter()
        .enumerate()
        .map(|(i, caps)| {
            let cpu = i + 1;
            match snapshot(caps, a, policy) {
                Err(e) => CpuCompat::SetupFailed {
                    cpu,
                    reason: e.to_string(),
                },
                Ok(this) if this == reference => CpuCompat::Consistent { cpu },
                Ok(this) => CpuCompat::Inconsistent {
                    cpu,
                    differences: differences(&reference, &this),
                },
            }
        })
        .collect();
    Ok(CompatReport { cpus })
}

fn differences(a: &[(String, u64)], b: &[(String, u64)]) -> Vec<String> {
    let mut out = Vec::new();
    for (name, x) in a {
        match b.iter().find(|(n, _)| n == name) {
            Some((_, y)) if y == x => {}
            Some((_, y)) => out.push(format!("{name}: {x:#x} -> {y:#x}")),
            None => out.push(format!("{name}: {x:#x} -> absent")),
        }
    }
    for (name, y) in b {
        if !a.iter().any(|(n, _)| n == name) {
            out.push(format!("{name}: absent -> {y:#x}"));
        }
    }
    out
}
