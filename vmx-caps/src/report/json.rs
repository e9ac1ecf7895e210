// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The `json` report: the full decoded model, schema `vmx-caps/1` (documented in the
//! crate README). 64-bit values are `"0x…"` strings (JSON numbers lose precision above
//! 2^53); counts and small fields are numbers. Fields are only ever added within a
//! schema version.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::caps::VmxCaps;
use crate::control::ControlWord;
use crate::names::lookup;

/// Schema identifier written in every model.
pub const SCHEMA: &str = "vmx-caps/1";

fn hex(v: u64) -> String {
    format!("{v:#018x}")
}

/// The decoded model of a capability set.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct Model {
    /// Always [`SCHEMA`].
    pub schema: &'static str,
    /// Raw values, `"0x480": "0x…"`, as in dumps.
    pub msrs: BTreeMap<String, String>,
    /// IA32_VMX_BASIC.
    pub basic: Basic,
    /// Control words by id (`pin_based`, `primary`, `secondary`, `tertiary`, `exit`,
    /// `secondary_exit`, `entry`).
    pub controls: BTreeMap<&'static str, Control>,
    /// IA32_VMX_MISC.
    pub misc: Misc,
    /// IA32_VMX_EPT_VPID_CAP, `null` when absent.
    pub ept_vpid: Option<EptVpid>,
    /// IA32_VMX_VMFUNC, `null` when absent.
    pub vmfunc: Option<VmFuncModel>,
    /// CR0 FIXED0/FIXED1.
    pub cr0_fixed: Fixed,
    /// CR4 FIXED0/FIXED1.
    pub cr4_fixed: Fixed,
    /// IA32_VMX_VMCS_ENUM.
    pub vmcs_enum: VmcsEnumModel,
}

/// BASIC fields.
#[derive(Clone, Debug, Serialize)]
#[allow(missing_docs)]
#[non_exhaustive]
pub struct Basic {
    pub raw: String,
    pub revision_id: u32,
    pub vmcs_size: u32,
    pub phys_addr_32bit: bool,
    pub dual_monitor: bool,
    pub memory_type: u8,
    pub ins_outs_info: bool,
    pub true_ctls: bool,
    pub no_hw_error_code_cc: bool,
    pub nested_exception: bool,
    pub unknown_bits: String,
}

/// One control word.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct Control {
    /// Legacy capability MSR index (`"0x481"`).
    pub msr: String,
    /// Whether that MSR is present.
    pub present: bool,
    /// TRUE MSR index when the word has one and BASIC bit 55 is set, else `null`.
    pub true_msr: Option<String>,
    /// Effective must-be-one mask (TRUE view when used).
    pub must_be_one: String,
    /// Effective may-be-one mask.
    pub may_be_one: String,
    /// Named bits plus any unnamed bit whose setting is not `no`.
    pub bits: Vec<Bit>,
}

/// One control bit.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct Bit {
    /// Bit position.
    pub bit: u32,
    /// Linux (or QEMU/Bochs) name, `null` if unknown.
    pub name: Option<&'static str>,
    /// Human label, `null` if unknown.
    pub label: Option<&'static str>,
    /// `yes`, `no`, `forced`, `default` or `?` (vmxcap's words).
    pub setting: &'static str,
}

/// MISC fields.
#[derive(Clone, Debug, Serialize)]
#[allow(missing_docs)]
#[non_exhaustive]
pub struct Misc {
    pub raw: String,
    pub preemption_timer_rate: u8,
    pub save_efer_lma: bool,
    pub activity_hlt: bool,
    pub activity_shutdown: bool,
    pub activity_wait_sipi: bool,
    pub intel_pt: bool,
    pub rdmsr_in_smm: bool,
    pub cr3_count: u16,
    pub max_msr: u32,
    pub vmxoff_block_smi: bool,
    pub vmwrite_shadow_ro_fields: bool,
    pub zero_len_ins: bool,
    pub mseg_revid: u32,
    pub unknown_bits: String,
}

/// EPT/VPID capability fields.
#[derive(Clone, Debug, Serialize)]
#[allow(missing_docs)]
#[non_exhaustive]
pub struct EptVpid {
    pub raw: String,
    pub execute_only: bool,
    pub page_walk_4: bool,
    pub page_walk_5: bool,
    pub eptp_uc: bool,
    pub eptp_wb: bool,
    pub ept_2mb_page: bool,
    pub ept_1gb_page: bool,
    pub invept: bool,
    pub ept_ad: bool,
    pub advanced_exit_info: bool,
    pub supervisor_shadow_stack: bool,
    pub invept_single_context: bool,
    pub invept_all_context: bool,
    pub invvpid: bool,
    pub invvpid_individual_addr: bool,
    pub invvpid_single_context: bool,
    pub invvpid_all_context: bool,
    pub invvpid_single_non_global: bool,
    pub hlat_prefix_size: u8,
    pub unknown_bits: String,
}

/// VMFUNC fields.
#[derive(Clone, Debug, Serialize)]
#[allow(missing_docs)]
#[non_exhaustive]
pub struct VmFuncModel {
    pub raw: String,
    pub eptp_switching: bool,
    pub unknown_bits: String,
}

/// A CRx FIXED pair.
#[derive(Clone, Debug, Serialize)]
#[allow(missing_docs)]
#[non_exhaustive]
pub struct Fixed {
    pub fixed0: String,
    pub fixed1: String,
}

/// VMCS_ENUM fields.
#[derive(Clone, Debug, Serialize)]
#[allow(missing_docs)]
#[non_exhaustive]
pub struct VmcsEnumModel {
    pub raw: String,
    pub max_index: u16,
}

fn control(caps: &VmxCaps, word: ControlWord) -> Control {
    let width = if word.is_allowed1_only() { 64 } else { 32 };
    let bits = (0..width)
        .filter_map(|bit| {
            let setting = caps.control_setting(word, bit);
            let name = lookup(word, bit);
            if name.is_none() && setting.vmxcap_word() == "no" {
                return None;
            }
            Some(Bit {
                bit,
                name: name.map(|n| n.linux),
                label: name.map(|n| n.label),
                setting: setting.vmxcap_word(),
            })
        })
        .collect();
    Control {
        msr: format!("{:#x}", word.msr()),
        present: caps.get(word.msr()).is_some(),
        true_msr: word
            .true_msr()
            .filter(|_| caps.has_true_ctls())
            .map(|m| format!("{m:#x}")),
        must_be_one: hex(caps.must_be_one(word)),
        may_be_one: hex(caps.may_be_one(word)),
        bits,
    }
}

/// Builds the model.
pub fn model(caps: &VmxCaps) -> Model {
    let b = caps.basic();
    let m = caps.misc();
    Model {
        schema: SCHEMA,
        msrs: caps
            .raw()
            .iter()
            .map(|(i, v)| (format!("{i:#x}"), hex(v)))
            .collect(),
        basic: Basic {
            raw: hex(b.raw()),
            revision_id: b.revision_id(),
            vmcs_size: b.vmcs_size(),
            phys_addr_32bit: b.phys_addr_32bit(),
            dual_monitor: b.dual_monitor(),
            memory_type: b.memory_type(),
            ins_outs_info: b.ins_outs_info(),
            true_ctls: b.true_ctls(),
            no_hw_error_code_cc: b.no_hw_error_code_cc(),
            nested_exception: b.nested_exception(),
            unknown_bits: hex(b.unknown_bits()),
        },
        controls: ControlWord::ALL
            .iter()
            .map(|w| (w.id(), control(caps, *w)))
            .collect(),
        misc: Misc {
            raw: hex(m.raw()),
            preemption_timer_rate: m.preemption_timer_rate(),
            save_efer_lma: m.save_efer_lma(),
            activity_hlt: m.activity_hlt(),
            activity_shutdown: m.activity_shutdown(),
            activity_wait_sipi: m.activity_wait_sipi(),
            intel_pt: m.intel_pt(),
            rdmsr_in_smm: m.rdmsr_in_smm(),
            cr3_count: m.cr3_count(),
            max_msr: m.max_msr(),
            vmxoff_block_smi: m.vmxoff_block_smi(),
            vmwrite_shadow_ro_fields: m.vmwrite_shadow_ro_fields(),
            zero_len_ins: m.zero_len_ins(),
            mseg_revid: m.mseg_revid(),
            unknown_bits: hex(m.unknown_bits()),
        },
        ept_vpid: caps.ept_vpid().map(|c| EptVpid {
            raw: hex(c.raw()),
            execute_only: c.execute_only(),
            page_walk_4: c.page_walk_4(),
            page_walk_5: c.page_walk_5(),
            eptp_uc: c.eptp_uc(),
            eptp_wb: c.eptp_wb(),
            ept_2mb_page: c.ept_2mb_page(),
            ept_1gb_page: c.ept_1gb_page(),
            invept: c.invept(),
            ept_ad: c.ept_ad(),
            advanced_exit_info: c.advanced_exit_info(),
            supervisor_shadow_stack: c.supervisor_shadow_stack(),
            invept_single_context: c.invept_single_context(),
            invept_all_context: c.invept_all_context(),
            invvpid: c.invvpid(),
            invvpid_individual_addr: c.invvpid_individual_addr(),
            invvpid_single_context: c.invvpid_single_context(),
            invvpid_all_context: c.invvpid_all_context(),
            invvpid_single_non_global: c.invvpid_single_non_global(),
            hlat_prefix_size: c.hlat_prefix_size(),
            unknown_bits: hex(c.unknown_bits()),
        }),
        vmfunc: caps.vmfunc().map(|f| VmFuncModel {
            raw: hex(f.raw()),
            eptp_switching: f.eptp_switching(),
            unknown_bits: hex(f.unknown_bits()),
        }),
        cr0_fixed: Fixed {
            fixed0: hex(caps.cr0_fixed().fixed0),
            fixed1: hex(caps.cr0_fixed().fixed1),
        },
        cr4_fixed: Fixed {
            fixed0: hex(caps.cr4_fixed().fixed0),
            fixed1: hex(caps.cr4_fixed().fixed1),
        },
        vmcs_enum: VmcsEnumModel {
            raw: hex(caps.vmcs_enum().raw()),
            max_index: caps.vmcs_enum().max_index(),
        },
    }
}

/// The model as pretty-printed JSON, ending in a newline.
pub fn render(caps: &VmxCaps) -> String {
    let mut s = serde_json::to_string_pretty(&model(caps)).unwrap_or_default();
    s.push('\n');
    s
}
