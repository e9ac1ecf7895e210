// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The host section: KVM capabilities that matter here, and VMX capabilities
//! with the VMCS configuration computed from them.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::Policy;
use crate::plan::{self, CapStep};
use crate::report::Format;

/// One KVM capability as `KVM_CHECK_EXTENSION` answers.
#[derive(Clone, Debug, Serialize)]
pub struct KvmCap {
    /// Number.
    pub cap: u32,
    /// Linux name.
    pub name: &'static str,
    /// The answer (0 = unsupported; `None` = /dev/kvm not available).
    pub value: Option<i32>,
    /// What it is for here.
    pub why: &'static str,
}

/// The host section.
#[derive(Clone, Debug, Serialize)]
pub struct HostReport {
    /// /dev/kvm could be opened.
    pub kvm: bool,
    /// `KVM_GET_API_VERSION`.
    pub api_version: Option<i32>,
    /// Caps 219, 218, 164.
    pub caps: Vec<KvmCap>,
    /// VMX capabilities and the VMCS configuration computed from them.
    pub vmx: VmxSection,
}

/// The fixture decoded when the host has no VMX.
pub const VMX_FIXTURE: &str = include_str!("../../fixtures/vmx/arrowlake-core-ultra-5-245k.json");

/// VMX part of the host section.
#[derive(Clone, Debug, Serialize)]
pub struct VmxSection {
    /// `host` (KVM feature MSRs) or `fixture` (no VMX on this host).
    pub source: &'static str,
    /// Why a fixture is used, or where the values come from.
    pub note: String,
    /// CPU the capabilities describe.
    pub cpu: String,
    /// VMCS_REVISION_ID etc. summary from vmx-caps.
    pub basic: String,
    /// Notify VM exiting (secondary control bit 31) allowed by the capabilities.
    pub notify_vm_exiting_allowed: Option<bool>,
    /// vmx-controls' VMCS configuration (Linux policy), per control field, hex.
    pub vmcs_config: Option<BTreeMap<&'static str, String>>,
    /// Diagnostics or the error of the configuration.
    pub vmcs_notes: Vec<String>,
    /// What KVM would give an L1 hypervisor on this CPU (vmx-controls' nested model,
    /// upstream defaults), a few lines.
    pub nested: Vec<String>,
}

/// Reads VMX caps through KVM's feature MSRs (vmx-caps), or decodes the
/// embedded fixture when the host has none, and computes the VMCS
/// configuration with vmx-controls.
pub fn vmx_section() -> VmxSection {
    let (source, note, dump) = match vmx_caps::kvm::read_kvm() {
        Ok(d) => (
            "host",
            "read through KVM_GET_MSRS on /dev/kvm (feature MSRs)".to_string(),
            Ok(d),
        ),
        Err(e) => (
            "fixture",
            format!("no VMX on this host ({e}); decoding a fixture instead"),
            vmx_caps::Dump::from_json(VMX_FIXTURE),
        ),
    };
    vmx_from_dump(source, note, dump)
}

/// The VMX section for a dump (or the error reading it).
pub fn vmx_from_dump(
    source: &'static str,
    note: String,
    dump: Result<vmx_caps::Dump, vmx_caps::CapsError>,
) -> VmxSection {
    let mut out = VmxSection {
        source,
        note,
        cpu: String::new(),
        basic: String::new(),
        notify_vm_exiting_allowed: None,
        vmcs_config: None,
        vmcs_notes: Vec::new(),
        nested: Vec::new(),
    };
    let caps = match dump.and_then(|d| {
        out.cpu = d.cpu.clone();
        d.caps()
    }) {
        Ok(c) => c,
        Err(e) => {
            out.vmcs_notes
                .push(format!("vmx-caps: {}", vmx_caps::error::message_chain(&e)));
            return out;
        }
    };
    let b = caps.basic();
    out.basic = format!(
        "revision 0x{:x}, VMCS {} bytes, true controls: {}",
        b.revision_id(),
        b.vmcs_size(),
        caps.has_true_ctls()
    );
    out.notify_vm_exiting_allowed = caps.secondary().map(|s| s.may_be_one_bit(31));
    match vmx_controls::setup_vmcs_config(&caps, &vmx_controls::VmcsPolicy::linux()) {
        Ok(setup) => {
            let c = setup.config;
            let mut m = BTreeMap::new();
            m.insert("pin_based", format!("0x{:08x}", c.pin.bits()));
            m.insert("primary", format!("0x{:08x}", c.primary.bits()));
            m.insert("secondary", format!("0x{:08x}", c.secondary.bits()));
            m.insert("tertiary", format!("0x{:016x}", c.tertiary.bits()));
            m.insert("exit", format!("0x{:08x}", c.exit.bits()));
            m.insert("entry", format!("0x{:08x}", c.entry.bits()));
            out.vmcs_config = Some(m);
            out.vmcs_notes
                .extend(setup.diagnostics.iter().map(|d| d.to_string()));
        }
        Err(e) => out.vmcs_notes.push(format!("vmx-controls: {e}")),
    }
    out.nested = nested_lines(&caps);
    out
}

/// The nested view of `caps` in a few lines (`vmxcap nested` has the full report).
fn nested_lines(caps: &vmx_caps::VmxCaps) -> Vec<String> {
    use vmx_controls::nested::{
        l1_config, nested_view, NestedAssumptions, Provenance, LINUX_VERSION,
    };
    let v = match nested_view(caps, &NestedAssumptions::default()) {
        Ok(v) => v,
        Err(e) => return vec![format!("no nested view: {e}")],
    };
    let hex = |i: u32| format!("{:#018x}", v.caps.get(i).unwrap_or(0));
    let passed = v
        .bits
        .iter()
        .filter(|b| matches!(b.provenance, Provenance::PassedThrough { .. }))
        .count();
    let emulated = v
        .bits
        .iter()
        .filter(|b| matches!(b.provenance, Provenance::Emulated { .. }))
        .count();
    vec![
        format!("L1 under KVM ({LINUX_VERSION} model): basic={} secondary={} ept_vpid={} vmfunc={}", hex(0x480), hex(0x48B), hex(0x48C), hex(0x491)),
        format!("{passed} control/capability bits passed through, {emulated} emulated by KVM; L1's KVM loads: {}", if l1_config(&v).loads() { "yes" } else { "no" }),
    ]
}

/// Checks an extension on /dev/kvm (`None` without KVM).
pub fn check_extension(cap: u32) -> Option<i32> {
    let kvm = kvm_ioctls::Kvm::new().ok()?;
    Some(kvm.check_extension_raw(cap.into()))
}

/// The KVM part of the host section.
pub fn host_report() -> HostReport {
    let kvm = kvm_ioctls::Kvm::new().ok();
    let check = |c: u32| kvm.as_ref().map(|k| k.check_extension_raw(c.into()));
    HostReport {
        kvm: kvm.is_some(),
        api_version: kvm.as_ref().map(|k| k.get_api_version()),
        caps: vec![
            KvmCap {
                cap: plan::KVM_CAP_X86_NOTIFY_VMEXIT,
                name: "KVM_CAP_X86_NOTIFY_VMEXIT",
                value: check(plan::KVM_CAP_X86_NOTIFY_VMEXIT),
                why: "notify VM exits (guest blocking event windows)",
            },
            KvmCap {
                cap: plan::KVM_CAP_X86_TRIPLE_FAULT_EVENT,
                name: "KVM_CAP_X86_TRIPLE_FAULT_EVENT",
                value: check(plan::KVM_CAP_X86_TRIPLE_FAULT_EVENT),
                why: "synthesized triple faults via KVM_SET_VCPU_EVENTS",
            },
            KvmCap {
                cap: plan::KVM_CAP_EXCEPTION_PAYLOAD,
                name: "KVM_CAP_EXCEPTION_PAYLOAD",
                value: check(plan::KVM_CAP_EXCEPTION_PAYLOAD),
                why: "exception payloads (CR2/DR6) kept until delivery",
            },
        ],
        vmx: vmx_section(),
    }
}

impl HostReport {
    /// Text lines.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        match self.api_version {
            Some(v) => s.push_str(&format!("KVM: /dev/kvm API version {v}\n")),
            None => s.push_str("KVM: /dev/kvm not available\n"),
        }
        for c in &self.caps {
            let v = match c.value {
                Some(0) => "no".to_string(),
                Some(v) => format!("yes ({v})"),
                None => "?".into(),
            };
            s.push_str(&format!(
                "  cap {:>3} {:<31} {:<8} {}\n",
                c.cap, c.name, v, c.why
            ));
        }
        let x = &self.vmx;
        let label = if x.source == "fixture" {
            " [FIXTURE, not this host]"
        } else {
            ""
        };
        s.push_str(&format!("VMX ({}): {}\n", x.source, x.note));
        s.push_str(&format!("  {}{label}: {}\n", x.cpu, x.basic));
        if let Some(m) = &x.vmcs_config {
            let v: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
            s.push_str(&format!(
                "  VMCS config (vmx-controls, Linux policy): {}\n",
                v.join(" ")
            ));
        }
        if let Some(n) = x.notify_vm_exiting_allowed {
            s.push_str(&format!(
                "  notify VM exiting (secondary bit 31): {}\n",
                if n { "allowed" } else { "not allowed" }
            ));
        }
        for n in &x.vmcs_notes {
            s.push_str(&format!("  note: {n}\n"));
        }
        for n in &x.nested {
            s.push_str(&format!("  nested: {n}\n"));
        }
        s
    }
}

/// The plan on this host (caps checked on /dev/kvm; all unsupported without it).
pub fn plan_on_host(policy: &Policy) -> Vec<CapStep> {
    let kvm = kvm_ioctls::Kvm::new().ok();
    plan::cap_steps(policy, |c| {
        kvm.as_ref().map_or(0, |k| k.check_extension_raw(c.into()))
    })
}

/// `caps` command.
pub fn caps_text(format: Format) -> Result<String, serde_json::Error> {
    let h = host_report();
    Ok(match format {
        Format::Text => h.to_text(),
        Format::Json => serde_json::to_string_pretty(&h)? + "\n",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixture_decodes_and_yields_a_vmcs_configuration() {
        let x = vmx_from_dump(
            "fixture",
            "test".into(),
            vmx_caps::Dump::from_json(VMX_FIXTURE),
        );
        assert!(x.cpu.contains("Arrow Lake"));
        assert!(x.basic.contains("true controls: true"), "{}", x.basic);
        // Arrow Lake allows notify VM exiting (secondary control bit 31).
        assert_eq!(x.notify_vm_exiting_allowed, Some(true));
        let cfg = x.vmcs_config.expect("vmcs config");
        assert!(cfg.contains_key("secondary") && cfg.contains_key("entry"));
        // The nested view of Arrow Lake (vmx-controls' model of nested_vmx_setup_ctls_msrs).
        assert!(
            x.nested[0].contains("basic=0x01d8100011e57ed0"),
            "{:?}",
            x.nested
        );
        assert!(
            x.nested[1].ends_with("L1's KVM loads: yes"),
            "{:?}",
            x.nested
        );
    }

    #[test]
    fn an_unreadable_dump_is_reported_not_panicked() {
        let x = vmx_from_dump("fixture", "test".into(), vmx_caps::Dump::from_json("{"));
        assert!(x.vmcs_config.is_none());
        assert!(x.vmcs_notes.iter().any(|n| n.starts_with("vmx-caps:")));
    }
}
