// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! KVM feature-MSR source on the real /dev/kvm.

#![cfg(all(feature = "kvm", target_arch = "x86_64"))]

use vmx_caps::check::check;
use vmx_caps::CapsError;

fn kvm_available() -> bool {
    test_support::kvm_or_skip().is_some()
}

#[test]
fn kvm_feature_msrs_decode_or_say_no_vmx() {
    if !kvm_available() {
        return;
    }
    let has_vmx = std::fs::read_to_string("/proc/cpuinfo")
        .map(|s| s.split_ascii_whitespace().any(|w| w == "vmx"))
        .unwrap_or(false);
    match vmx_caps::kvm::read_kvm() {
        Ok(dump) => {
            // Nested VMX offered by KVM: a complete, architecturally valid set.
            let caps = dump.caps().expect("KVM's VMX feature MSRs decode");
            assert!(!check(&caps).is_violated(), "{:#?}", check(&caps));
            assert!(
                has_vmx,
                "KVM offered VMX MSRs on a CPU without the vmx flag"
            );
        }
        Err(CapsError::NoVmx { detail }) => {
            assert!(detail.contains("no VMX"), "{detail}");
            assert!(
                !has_vmx
                    || !std::path::Path::new("/sys/module/kvm_intel").exists()
                    || std::fs::read_to_string("/sys/module/kvm_intel/parameters/nested")
                        .map(|s| s.trim() != "Y" && s.trim() != "1")
                        .unwrap_or(true)
            );
        }
        Err(e) => panic!("unexpected error: {e}"),
    }
}
