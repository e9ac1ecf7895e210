// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `vmx_nested`: vmx-controls' model of KVM's nested VMX MSRs (Linux v6.18
//! `nested_vmx_setup_ctls_msrs`, arch/x86/kvm/vmx/nested.c) on arbitrary capability
//! sets and assumptions.
//!
//! Input layout: 3 bytes of presence bits (bit i = MSR 0x480 + i present), 2 bytes of
//! assumption bits (LE: 0 nested, 1 ept, 2 vpid, 3 unrestricted_guest, 4 flexpriority,
//! 5 eptad, 6 enable_apicv, 7 sgx, 8 host SHSTK, 9 host IBT, 10 host SGX, 11 host UMIP
//! given, 12 its value), then the 20 MSR values as little-endian u64 (0x480 first;
//! zeros past the end of the input).
//!
//! Properties: no panic; a refusal is exactly L0's `setup_vmcs_config` failing (or
//! `nested=0`), with a one-line message; a view exposes exactly 0x480..=0x491, decodes
//! back from its dump, keeps legacy = TRUE | default1 and allowed-0 ⊆ allowed-1, and
//! offers no control L0's configuration lacks unless KVM emulates it (or it is a
//! reserved-as-1 bit); the nested view of a nested view of a nested view equals the
//! nested view of the nested view (the model reaches a fixed point after one level).

use vmx_caps::{ControlWord, Dump, RawMsrs, VmxCaps};
use vmx_controls::nested::{
    l1_config, nested_view, render_text, NestedAssumptions, NestedError, Provenance,
};

fn byte(data: &[u8], i: usize) -> u8 {
    data.get(i).copied().unwrap_or(0)
}

fn assumptions(bits: u16) -> NestedAssumptions {
    let on = |b: u16| bits & (1 << b) != 0;
    NestedAssumptions {
        nested: on(0),
        ept: on(1),
        vpid: on(2),
        unrestricted_guest: on(3),
        flexpriority: on(4),
        eptad: on(5),
        enable_apicv: on(6),
        sgx: on(7),
        host_shstk: on(8),
        host_ibt: on(9),
        host_sgx: on(10),
        host_umip: on(11).then_some(on(12)),
    }
}

/// The fuzz target's property function.
pub fn vmx_nested(data: &[u8]) {
    let present = u32::from_le_bytes([byte(data, 0), byte(data, 1), byte(data, 2), 0]);
    let a = assumptions(u16::from_le_bytes([byte(data, 3), byte(data, 4)]));
    let mut raw = RawMsrs::new();
    for (i, index) in vmx_caps::msr::ALL.iter().enumerate() {
        let at = 5 + 8 * i;
        let value = u64::from_le_bytes(std::array::from_fn(|k| byte(data, at + k)));
        if present & (1 << i) != 0 {
            raw.insert(*index, value);
        }
    }
    let Ok(caps) = VmxCaps::from_raw(raw) else {
        return;
    };
    let view = match nested_view(&caps, &a) {
        Ok(v) => v,
        Err(e) => {
            let message = e.to_string();
            assert!(
                !message.is_empty() && !message.contains('\n'),
                "{message:?}"
            );
            match e {
                NestedError::L0Refuses(setup) => assert_eq!(
                    vmx_controls::setup_vmcs_config(&caps, &a.l0_policy()).err(),
                    Some(setup),
                    "refusal differs from setup_vmcs_config"
                ),
                NestedError::NestedDisabled => assert!(!a.nested, "nested=1 yet disabled"),
                other => panic!("model error: {other}"),
            }
            return;
        }
    };
    let indices: Vec<u32> = view.caps.raw().iter().map(|(i, _)| i).collect();
    assert_eq!(
        indices,
        (0x480..=0x491).collect::<Vec<u32>>(),
        "exposed MSRs"
    );
    let back = Dump::from_json(&view.to_dump("fuzz").to_json())
        .and_then(|d| d.caps())
        .unwrap_or_else(|e| panic!("nested dump does not decode: {e}"));
    assert_eq!(back, view.caps, "nested dump round trip");
    for word in [
        ControlWord::PinBased,
        ControlWord::Primary,
        ControlWord::Exit,
        ControlWord::Entry,
    ] {
        let legacy = view.caps.get(word.msr()).unwrap_or(0);
        let true_msr = word.true_msr().and_then(|m| view.caps.get(m)).unwrap_or(0);
        assert_eq!(
            legacy,
            true_msr | u64::from(word.default1()),
            "{word:?}: legacy != TRUE | default1"
        );
        assert_eq!(
            (true_msr as u32) & !((true_msr >> 32) as u32),
            0,
            "{word:?}: allowed-0 not in allowed-1"
        );
    }
    for b in view.bits.iter().filter(|b| b.provenance.offered()) {
        let Some(field) = b.field else { continue };
        let in_l0 = view.l0.config.field(field) & (1u64 << b.bit) != 0;
        assert!(
            in_l0
                || matches!(
                    b.provenance,
                    Provenance::Emulated { .. } | Provenance::Default1
                ),
            "{field} bit {} offered without L0 having it: {:?}",
            b.bit,
            b.provenance
        );
    }
    assert!(!render_text(&view, "fuzz").is_empty());
    let Some(Ok(l2)) = l1_config(&view).l2 else {
        return;
    };
    if let Some(Ok(l3)) = l1_config(&l2).l2 {
        assert_eq!(l3.caps, l2.caps, "no fixed point after one nested level");
    }
}
