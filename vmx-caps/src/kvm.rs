// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! KVM's feature MSRs: `KVM_GET_MSR_FEATURE_INDEX_LIST` + `KVM_GET_MSRS` on the
//! `/dev/kvm` fd. With `kvm_intel` loaded and `nested=1` the VMX capability MSRs KVM
//! offers to nested guests are listed there. Every ioctl goes through kvm-ioctls, so
//! no `unsafe` is needed here either.

use std::path::Path;

use kvm_bindings::{kvm_msr_entry, Msrs};
use kvm_ioctls::Kvm;

use crate::dump::Dump;
use crate::error::CapsError;
use crate::msr;
use crate::raw::RawMsrs;

/// Reads the VMX capability MSRs KVM reports as feature MSRs.
///
/// Fails with [`CapsError::Unavailable`] when `/dev/kvm` cannot be opened and with
/// [`CapsError::NoVmx`] when KVM lists no VMX MSR (AMD host, no VMX, or `nested=0`).
pub fn read_kvm() -> Result<Dump, CapsError> {
    let kvm = Kvm::new().map_err(|e| CapsError::Unavailable {
        detail: format!("/dev/kvm: {e}"),
    })?;
    read_kvm_from(&kvm)
}

/// [`read_kvm`] on an already open KVM handle.
pub fn read_kvm_from(kvm: &Kvm) -> Result<Dump, CapsError> {
    let list = kvm
        .get_msr_feature_index_list()
        .map_err(|e| CapsError::io("KVM_GET_MSR_FEATURE_INDEX_LIST", e.into()))?;
    let indices: Vec<u32> = list
        .as_slice()
        .iter()
        .copied()
        .filter(|i| msr::is_vmx_msr(*i))
        .collect();
    if !indices.contains(&msr::IA32_VMX_BASIC) {
        return Err(CapsError::NoVmx {
            detail: no_vmx_detail(Path::new("/sys/module")),
        });
    }
    let entries: Vec<kvm_msr_entry> = indices
        .iter()
        .map(|&index| kvm_msr_entry {
            index,
            ..Default::default()
        })
        .collect();
    let mut msrs = Msrs::from_entries(&entries).map_err(|e| CapsError::Unavailable {
        detail: format!("KVM_GET_MSRS buffer: {e:?}"),
    })?;
    let n = kvm
        .get_msrs(&mut msrs)
        .map_err(|e| CapsError::io("KVM_GET_MSRS", e.into()))?;
    let raw: RawMsrs = msrs
        .as_slice()
        .iter()
        .take(n)
        .map(|e| (e.index, e.data))
        .collect();
    Ok(Dump::new(
        "KVM nested VMX",
        "KVM feature MSRs (/dev/kvm)",
        raw,
    ))
}

/// Why KVM lists no VMX MSRs, from the KVM vendor module loaded under `sys_module`
/// (normally `/sys/module`): `kvm_intel` without `nested=1`, `kvm_amd` (SVM), or
/// another backend such as `kvm_pvm` (no hardware virtualization extension at all).
fn no_vmx_detail(sys_module: &Path) -> String {
    const HEAD: &str = "KVM lists no VMX capability MSRs (0x480-0x493) among its feature MSRs";
    let loaded = |m: &str| sys_module.join(m).is_dir();
    if loaded("kvm_intel") {
        let nested = std::fs::read_to_string(sys_module.join("kvm_intel/parameters/nested"))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "?".into());
        return format!("{HEAD}: kvm_intel is loaded with nested={nested} (nested VMX needs nested=1, and a CPU with VMX)");
    }
    if loaded("kvm_amd") {
        return format!("{HEAD}: KVM runs on AMD SVM (kvm_amd), which has no VMX");
    }
    let other = std::fs::read_dir(sys_module)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .find(|n| n.starts_with("kvm_"));
    if let Some(m) = other {
        return format!("{HEAD}: KVM's backend is {m}, not kvm_intel, so there is no VMX");
    }
    format!("{HEAD}: the host has no VMX, or kvm_intel is not loaded with nested=1")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_sys_module(name: &str, modules: &[(&str, Option<&str>)]) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("vmx-caps-sysmod-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for (m, nested) in modules {
            let p = dir.join(m).join("parameters");
            std::fs::create_dir_all(&p).unwrap();
            if let Some(n) = nested {
                std::fs::write(p.join("nested"), format!("{n}\n")).unwrap();
            }
        }
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn no_vmx_detail_names_the_kvm_backend() {
        type Modules<'a> = &'a [(&'a str, Option<&'a str>)];
        let cases: [(&str, Modules, &str); 4] = [
            (
                "intel",
                &[("kvm", None), ("kvm_intel", Some("N"))],
                "kvm_intel is loaded with nested=N",
            ),
            (
                "amd",
                &[("kvm", None), ("kvm_amd", Some("1"))],
                "AMD SVM (kvm_amd)",
            ),
            (
                "pvm",
                &[("kvm", None), ("kvm_pvm", None)],
                "backend is kvm_pvm",
            ),
            ("none", &[("kvm", None)], "the host has no VMX"),
        ];
        for (name, modules, needle) in cases {
            let dir = fake_sys_module(name, modules);
            let d = no_vmx_detail(&dir);
            assert!(d.contains(needle), "{name}: {d}");
            assert!(d.starts_with("KVM lists no VMX capability MSRs"), "{d}");
            assert!(!d.contains('\n'));
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
}
