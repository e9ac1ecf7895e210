// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod controls;
pub mod nested;
pub mod pairs;
pub mod policy;
pub mod report;
pub mod sdm_checks;
pub mod setup;

pub use controls::{
    ControlBits, ControlField, EntryControls, ExitControls, PinBasedControls, PrimaryControls,
    SecondaryControls, SecondaryExitControls, TertiaryControls,
};
pub use nested::{
    check_processor_compat, l1_config, nested_view, NestedAssumptions, NestedError, NestedView,
};
pub use pairs::{
    sanitize_pairs, EntryExitPair, InconsistentPair, InconsistentPairsError, OnInconsistent,
    PairId, ParseChoiceError, SanitizedPairs, ALL_ENTRY_EXIT_PAIRS, VMCS_ENTRY_EXIT2_PAIRS,
    VMCS_ENTRY_EXIT_PAIRS,
};
pub use policy::{ControlSet, CpuidInfo, HostMode, VmcsPolicy};
#[cfg(feature = "json")]
pub use report::{config_from_dump_file, config_from_dump_json};
pub use report::{
    ConfigError, VmcsConfigReport, EXIT_CONFIG_FAILED, EXIT_SUCCESS, EXIT_UNUSABLE_INPUT,
};
pub use sdm_checks::{
    check_vmx_controls, check_vmx_controls_for_guest, ControlValues, EntryContext, SdmRule,
    Violation, VmcsFields,
};
pub use setup::{setup_vmcs_config, Diagnostic, SetupError, Severity, VmcsConfig, VmcsSetup};
