// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! VM-entry / VM-exit control pairs and KVM's sanitizing rule.
//!
//! KVM never switches an MSR in one direction only: for each pair in
//! `vmcs_entry_exit_pairs` (and, with the FRED series, `vmcs_entry_exit2_pairs`), the
//! entry control and the exit control must be both set or both clear. This is KVM
//! policy, not an SDM rule (the SDM has no such check, Bochs does not check pairs).
//!
//! On a mismatch KVM warns ("Inconsistent VM-Entry/VM-Exit pair, ...") and then either
//! refuses to load (`error_on_inconsistent_vmcs_config`, default on:
//! [`OnInconsistent::Error`]) or clears both sides ([`OnInconsistent::Sanitize`]). Like
//! the 2025 form of the check, every pair is examined and reported, not only the first.

use core::fmt;

use crate::controls::{EntryControls, ExitControls, SecondaryExitControls};

/// Which entry/exit pair.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum PairId {
    /// Load IA32_PERF_GLOBAL_CTRL: entry bit 13 / exit bit 12.
    PerfGlobalCtrl,
    /// Load IA32_PAT: entry bit 14 / exit bit 19.
    Pat,
    /// Load IA32_EFER: entry bit 15 / exit bit 21.
    Efer,
    /// Load / clear IA32_BNDCFGS: entry bit 16 / exit bit 23.
    Bndcfgs,
    /// Load / clear IA32_RTIT_CTL: entry bit 18 / exit bit 25.
    RtitCtl,
    /// Load CET state: entry bit 20 / exit bit 28 (KVM CET series).
    Cet,
    /// Load FRED MSRs: entry bit 23 / secondary exit bits 0 and 1 (KVM FRED series).
    Fred,
}

impl PairId {
    /// Short name of the MSR (or state) the pair switches.
    pub const fn name(self) -> &'static str {
        match self {
            PairId::PerfGlobalCtrl => "IA32_PERF_GLOBAL_CTRL",
            PairId::Pat => "IA32_PAT",
            PairId::Efer => "IA32_EFER",
            PairId::Bndcfgs => "IA32_BNDCFGS",
            PairId::RtitCtl => "IA32_RTIT_CTL",
            PairId::Cet => "CET state",
            PairId::Fred => "FRED MSRs",
        }
    }
}

impl fmt::Display for PairId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The exit side of a pair: a mask of the primary or of the secondary VM-exit controls.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExitSide {
    /// A mask of the primary VM-exit controls.
    Primary(ExitControls),
    /// A mask of the secondary VM-exit controls ("set" = any bit of the mask set).
    Secondary(SecondaryExitControls),
}

impl ExitSide {
    /// The mask as a raw 64-bit value.
    pub const fn mask(self) -> u64 {
        match self {
            ExitSide::Primary(m) => m.bits() as u64,
            ExitSide::Secondary(m) => m.bits(),
        }
    }
}

/// One row of the pair table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EntryExitPair {
    /// Which pair.
    pub id: PairId,
    /// Entry-control mask.
    pub entry: EntryControls,
    /// Exit-control mask (primary or secondary exit controls).
    pub exit: ExitSide,
}

impl EntryExitPair {
    /// Whether the entry side is set in `entry` (any bit of the mask).
    pub const fn entry_set(&self, entry: EntryControls) -> bool {
        entry.bits() & self.entry.bits() != 0
    }

    /// Whether the exit side is set in `exit` / `secondary_exit` (any bit of the mask).
    pub const fn exit_set(
        &self,
        exit: ExitControls,
        secondary_exit: SecondaryExitControls,
    ) -> bool {
        match self.exit {
            ExitSide::Primary(m) => exit.bits() & m.bits() != 0,
            ExitSide::Secondary(m) => secondary_exit.bits() & m.bits() != 0,
        }
    }

    /// KVM's rule: consistent when both sides are set or both are clear.
    pub const fn is_consistent(
        &self,
        entry: EntryControls,
        exit: ExitControls,
        secondary_exit: SecondaryExitControls,
    ) -> bool {
        self.entry_set(entry) == self.exit_set(exit, secondary_exit)
    }
}

/// Linux `vmcs_entry_exit_pairs`, in table order (including the CET pair).
pub const VMCS_ENTRY_EXIT_PAIRS: [EntryExitPair; 6] = [
    EntryExitPair {
        id: PairId::PerfGlobalCtrl,
        entry: EntryControls::LOAD_IA32_PERF_GLOBAL_CTRL,
        exit: ExitSide::Primary(ExitControls::LOAD_IA32_PERF_GLOBAL_CTRL),
    },
    EntryExitPair {
        id: PairId::Pat,
        entry: EntryControls::LOAD_IA32_PAT,
        exit: ExitSide::Primary(ExitControls::LOAD_IA32_PAT),
    },
    EntryExitPair {
        id: PairId::Efer,
        entry: EntryControls::LOAD_IA32_EFER,
        exit: ExitSide::Primary(ExitControls::LOAD_IA32_EFER),
    },
    EntryExitPair {
        id: PairId::Bndcfgs,
        entry: EntryControls::LOAD_BNDCFGS,
        exit: ExitSide::Primary(ExitControls::CLEAR_BNDCFGS),
    },
    EntryExitPair {
        id: PairId::RtitCtl,
        entry: EntryControls::LOAD_IA32_RTIT_CTL,
        exit: ExitSide::Primary(ExitControls::CLEAR_IA32_RTIT_CTL),
    },
    EntryExitPair {
        id: PairId::Cet,
        entry: EntryControls::LOAD_CET_STATE,
        exit: ExitSide::Primary(ExitControls::LOAD_CET_STATE),
    },
];

/// Linux `vmcs_entry_exit2_pairs` (FRED series): entry LOAD_IA32_FRED against the
/// secondary exit controls SAVE_IA32_FRED | LOAD_IA32_FRED.
pub const VMCS_ENTRY_EXIT2_PAIRS: [EntryExitPair; 1] = [EntryExitPair {
    id: PairId::Fred,
    entry: EntryControls::LOAD_IA32_FRED,
    exit: ExitSide::Secondary(
        SecondaryExitControls::SAVE_IA32_FRED.union(SecondaryExitControls::LOAD_IA32_FRED),
    ),
}];

/// Both tables, primary pairs first: what a FRED-enabled KVM checks.
pub const ALL_ENTRY_EXIT_PAIRS: [EntryExitPair; 7] = [
    VMCS_ENTRY_EXIT_PAIRS[0],
    VMCS_ENTRY_EXIT_PAIRS[1],
    VMCS_ENTRY_EXIT_PAIRS[2],
    VMCS_ENTRY_EXIT_PAIRS[3],
    VMCS_ENTRY_EXIT_PAIRS[4],
    VMCS_ENTRY_EXIT_PAIRS[5],
    VMCS_ENTRY_EXIT2_PAIRS[0],
];

/// What to do with an inconsistent pair (KVM module parameter
/// `error_on_inconsistent_vmcs_config`).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum OnInconsistent {
    /// Fail (`error_on_inconsistent_vmcs_config=1`, KVM's default): kvm_intel refuses
    /// to load. Also governs the EPT/VPID-caps check of the VMCS configuration.
    #[default]
    Error,
    /// Clear both sides of each inconsistent pair (and zero stray EPT/VPID caps) and go on
    /// (`error_on_inconsistent_vmcs_config=0`).
    Sanitize,
}

/// A string that is not a known [`OnInconsistent`] / report format spelling.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown value {value:?} (expected one of: {expected})")]
pub struct ParseChoiceError {
    /// The text given (truncated to 40 characters).
    pub value: String,
    /// The accepted spellings.
    pub expected: &'static str,
}

impl ParseChoiceError {
    pub(crate) fn new(value: &str, expected: &'static str) -> Self {
        Self {
            value: value.chars().take(40).collect(),
            expected,
        }
    }
}

impl core::str::FromStr for OnInconsistent {
    type Err = ParseChoiceError;

    /// `error` or `sanitize`, the spellings of `vmxcap config --on-inconsistent`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "error" => Ok(OnInconsistent::Error),
            "sanitize" => Ok(OnInconsistent::Sanitize),
            _ => Err(ParseChoiceError::new(s, "error, sanitize")),
        }
    }
}

/// One inconsistent pair: which, and the values seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct InconsistentPair {
    /// Which pair.
    pub pair: PairId,
    /// The whole VM-entry controls value that was checked.
    pub entry: u32,
    /// The pair's entry mask.
    pub entry_mask: u32,
    /// The whole exit value that was checked: the primary VM-exit controls, or for the
    /// FRED pair the secondary VM-exit controls.
    pub exit: u64,
    /// The pair's exit mask.
    pub exit_mask: u64,
    /// Whether the exit side lives in the secondary VM-exit controls.
    pub secondary_exit: bool,
}

impl InconsistentPair {
    /// Whether the entry side was the one set (else the exit side was).
    pub const fn entry_side_set(&self) -> bool {
        self.entry & self.entry_mask != 0
    }
}

impl fmt::Display for InconsistentPair {
    /// KVM's message (2025 `vmx_check_entry_exit_pairs` form), which prints each side
    /// as `value & mask` followed by the mask, e.g. `entry = 2000 (2000), exit = 0 (1000)`;
    /// then the pair and the side that is set. The whole words are in the fields.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Inconsistent VM-Entry/VM-Exit pair, entry = {:x} ({:x}), exit = {:x} ({:x}) [{}: only the {} side is set]",
            self.entry & self.entry_mask,
            self.entry_mask,
            self.exit & self.exit_mask,
            self.exit_mask,
            self.pair,
            if self.entry_side_set() { "entry" } else { "exit" },
        )
    }
}

/// Inconsistent pairs in [`OnInconsistent::Error`] mode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} inconsistent VM-Entry/VM-Exit pair(s): {}", .pairs.len(), join_pairs(.pairs))]
pub struct InconsistentPairsError {
    /// Every inconsistent pair, in table order.
    pub pairs: Vec<InconsistentPair>,
}

fn join_pairs(pairs: &[InconsistentPair]) -> String {
    pairs
        .iter()
        .map(|p| p.pair.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The three words the pair check touches, after sanitizing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SanitizedPairs {
    /// VM-entry controls, with both sides of inconsistent pairs cleared.
    pub entry: EntryControls,
    /// Primary VM-exit controls, likewise.
    pub exit: ExitControls,
    /// Secondary VM-exit controls, likewise.
    pub secondary_exit: SecondaryExitControls,
    /// The pairs that were inconsistent (empty when nothing changed).
    pub inconsistent: Vec<InconsistentPair>,
}

/// Every inconsistent pair of `table` for these values, in table order.
pub fn find_inconsistent_pairs(
    table: &[EntryExitPair],
    entry: EntryControls,
    exit: ExitControls,
    secondary_exit: SecondaryExitControls,
) -> Vec<InconsistentPair> {
    table
        .iter()
        .filter(|p| !p.is_consistent(entry, exit, secondary_exit))
        .map(|p| {
            let (exit_value, secondary) = match p.exit {
                ExitSide::Primary(_) => (u64::from(exit.bits()), false),
                ExitSide::Secondary(_) => (secondary_exit.bits(), true),
            };
            InconsistentPair {
                pair: p.id,
                entry: entry.bits(),
                entry_mask: p.entry.bits(),
                exit: exit_value,
                exit_mask: p.exit.mask(),
                secondary_exit: secondary,
            }
        })
        .collect()
}

/// KVM's pair check: report every inconsistent pair of `table`; with
/// [`OnInconsistent::Error`] fail, with [`OnInconsistent::Sanitize`] clear both sides of
/// each and return the cleaned words.
///
/// ```
/// use vmx_controls::{
///     sanitize_pairs, EntryControls, ExitControls, OnInconsistent, PairId,
///     SecondaryExitControls, VMCS_ENTRY_EXIT_PAIRS,
/// };
///
/// // A CPU that can load IA32_PAT on VM entry but not on VM exit (a broken nested setup).
/// let entry = EntryControls::LOAD_IA32_PAT | EntryControls::IA32E_MODE;
/// let exit = ExitControls::HOST_ADDR_SPACE_SIZE;
/// let none = SecondaryExitControls::empty();
/// // KVM with its default (error_on_inconsistent_vmcs_config): refuse.
/// let err = sanitize_pairs(&VMCS_ENTRY_EXIT_PAIRS, entry, exit, none, OnInconsistent::Error)
///     .unwrap_err();
/// assert_eq!(err.pairs[0].pair, PairId::Pat);
/// // Or clear both sides of the pair and go on.
/// let clean = sanitize_pairs(&VMCS_ENTRY_EXIT_PAIRS, entry, exit, none, OnInconsistent::Sanitize)?;
/// assert_eq!(clean.entry, EntryControls::IA32E_MODE);
/// assert_eq!(clean.inconsistent.len(), 1);
/// # Ok::<(), vmx_controls::InconsistentPairsError>(())
/// ```
pub fn sanitize_pairs(
    table: &[EntryExitPair],
    entry: EntryControls,
    exit: ExitControls,
    secondary_exit: SecondaryExitControls,
    on_inconsistent: OnInconsistent,
) -> Result<SanitizedPairs, InconsistentPairsError> {
    let inconsistent = find_inconsistent_pairs(table, entry, exit, secondary_exit);
    if inconsistent.is_empty() {
        return Ok(SanitizedPairs {
            entry,
            exit,
            secondary_exit,
            inconsistent,
        });
    }
    if on_inconsistent == OnInconsistent::Error {
        return Err(InconsistentPairsError {
            pairs: inconsistent,
        });
    }
    let (mut entry, mut exit, mut secondary_exit) = (entry, exit, secondary_exit);
    for bad in &inconsistent {
        // Look the row up again rather than trusting the report's masks.
        if let Some(row) = table.iter().find(|p| p.id == bad.pair) {
            entry.remove(row.entry);
            match row.exit {
                ExitSide::Primary(m) => exit.remove(m),
                ExitSide::Secondary(m) => secondary_exit.remove(m),
            }
        }
    }
    Ok(SanitizedPairs {
        entry,
        exit,
        secondary_exit,
        inconsistent,
    })
}
