// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! KVM's feature MSRs: `KVM_GET_MSR_FEATURE_INDEX_LIST` + `KVM_GET_MSRS` on the
//! `/dev/kvm` fd. With `kvm_intel` loaded and `nested=1` the VMX capability MSRs KVM
//! offers to nested guests are listed there. Every ioctl goes through kvm-ioctls, so
//! no `unsafe` is needed here either.

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
            detail: "KVM lists no VMX capability MSRs (0x480-0x493) among its feature MSRs: the host has no VMX, or kvm_intel is not loaded with nested=1".into(),
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
