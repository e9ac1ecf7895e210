// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Run configuration: which guest, how much, and the policy flags shared by
//! `run`, `replay` and `plan`.

#![deny(unsafe_code)]

use serde::Serialize;

use crate::exit::HekiAbiSelection;
use crate::guests::Guest;

/// `--notify-vmexit`: what to do with notify VM exits (QEMU's accelerator property).
/// What each mode does with an exit depends on [`Policy::notify_semantics`]
/// (notify-exit's `policy` module has both tables).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum NotifyMode {
    /// Enable notify exits; valid-context exits resume; an invalid context shuts the VM
    /// down through a triple fault (seed) or stops it as an internal error (qemu-7.2).
    Run,
    /// Enable notify exits; an invalid context stops the VM as a KVM internal error;
    /// a valid context resumes (seed) or stops it too (qemu-7.2).
    InternalError,
    /// Do not enable notify exits (an exit that comes anyway: valid resumes, invalid stops).
    Disable,
}

/// `--notify-semantics`: notify-exit's [`NotifySemantics`], by its name (`seed`,
/// `qemu-7.2`).
pub use notify_exit::NotifySemantics;

/// `--heki-exits`: which Heki exits to ask KVM for (`KVM_CAP_HEKI_CONFIGURE` / `_DENIAL`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum HekiExits {
    /// Neither.
    None,
    /// Configure exits only.
    Configure,
    /// Denial exits only.
    Denial,
    /// Both.
    All,
}

/// `--heki-denial`: what a Heki denial exit leads to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum HekiDenialAction {
    /// Resume: KVM injects #GP(0) on the next KVM_RUN (the RFC's behaviour).
    Gp,
    /// Shut the VM down through a synthesized triple fault.
    Shutdown,
    /// Log, count and resume (KVM still injects #GP(0)).
    Audit,
}

/// Policy flags of `run`, `replay` and `plan`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Policy {
    /// `--notify-vmexit`.
    pub notify_mode: NotifyMode,
    /// `--notify-semantics`.
    pub notify_semantics: NotifySemantics,
    /// `--notify-window` (crystal clock cycles; 0 is safe, hardware adds a threshold).
    pub notify_window: u32,
    /// `--heki-abi`: a selection of heki-policy's `HekiAbi` (`none`, `rfc-v2`, `rfc-v3`).
    pub heki_abi: HekiAbiSelection,
    /// `--heki-exits`.
    pub heki_exits: HekiExits,
    /// `--heki-denial`.
    pub heki_denial: HekiDenialAction,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            notify_mode: NotifyMode::Run,
            notify_semantics: NotifySemantics::SeedPatch,
            notify_window: 0,
            heki_abi: HekiAbiSelection::None,
            heki_exits: HekiExits::All,
            heki_denial: HekiDenialAction::Gp,
        }
    }
}

/// Everything `run` needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct RunConfig {
    /// The guest.
    pub guest: Guest,
    /// `--count` (meaning depends on the guest).
    pub count: u64,
    /// `--vcpus`.
    pub vcpus: u8,
    /// `--mem-mib`.
    pub mem_mib: u32,
    /// Policy flags.
    pub policy: Policy,
    /// Stop with [`crate::action::Outcome::ExitLimit`] after this many exits.
    pub max_exits: u64,
    /// Stop with [`crate::action::Outcome::Timeout`] if the run takes longer.
    pub timeout: Option<std::time::Duration>,
    /// `--snapshot-every N`: after every N-th exit, snapshot the vCPU and guest
    /// memory, destroy the VM, restore into a fresh one and go on
    /// ([`crate::snapshot`]). One vCPU only.
    pub snapshot_every: Option<u64>,
}

impl RunConfig {
    /// Defaults for `guest`.
    pub fn new(guest: Guest) -> Self {
        RunConfig {
            guest,
            count: guest.default_count(),
            vcpus: 1,
            mem_mib: 2,
            policy: Policy::default(),
            max_exits: 50_000_000,
            // Every guest has a bound; pio-loop and halt measure throughput
            // and may be given large counts, so theirs is longer.
            timeout: Some(std::time::Duration::from_secs(match guest {
                Guest::PioLoop | Guest::Halt => 60,
                _ => 10,
            })),
            snapshot_every: None,
        }
    }
}
