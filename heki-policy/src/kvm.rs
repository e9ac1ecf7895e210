//! KVM glue (feature `kvm`): the probe over real ioctls, enabling the caps, and the
//! kvm_run exit union as bytes.
//!
//! No `unsafe`: the exit union is read by [`x86_kvm_base::kvm_run`].

use crate::abi::{HekiAbi, HekiCap};
use crate::cap::{CapError, HekiExitReasons};
use crate::exit::{decode_run_exit, ExitDecode, ExitDecodeError, KVM_RUN_EXIT_UNION_SIZE};
use crate::probe::{probe as probe_with, CapQuery, HekiSupport, HekiSupported};
use kvm_bindings::kvm_run;
use kvm_ioctls::{Kvm, VmFd};
use x86_kvm_base::cap::enable_cap_request;
use x86_kvm_base::kvm_run::KvmRunExit;

/// Errors of the KVM glue.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum KvmError {
    /// `KVM_CREATE_VM` for the probe's scratch VM failed.
    #[error("KVM_CREATE_VM for the scratch VM failed")]
    CreateVm(#[source] kvm_ioctls::Error),
    /// `KVM_ENABLE_CAP` failed.
    #[error("KVM_ENABLE_CAP({cap}) failed")]
    EnableCap {
        /// The cap number.
        cap: u32,
        /// The ioctl error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// The reasons have bits the RFC rejects.
    #[error(transparent)]
    Arg(#[from] CapError),
}

/// [`CapQuery`] over `/dev/kvm`: `KVM_CHECK_EXTENSION` on a VM fd, `KVM_ENABLE_CAP` on a
/// scratch VM created by [`KvmCapQuery::new`] and closed when this value is dropped.
pub struct KvmCapQuery<'a> {
    kvm: &'a Kvm,
    vm: VmFd,
}

impl<'a> KvmCapQuery<'a> {
    /// Create the scratch VM.
    pub fn new(kvm: &'a Kvm) -> Result<Self, KvmError> {
        let vm = kvm.create_vm().map_err(KvmError::CreateVm)?;
        Ok(KvmCapQuery { kvm, vm })
    }
    /// The `/dev/kvm` handle.
    pub fn kvm(&self) -> &Kvm {
        self.kvm
    }
}

impl CapQuery for KvmCapQuery<'_> {
    fn check_extension(&mut self, cap: u32) -> i64 {
        // VM-level, as the RFC implements the caps in kvm_vm_ioctl_check_extension.
        i64::from(self.vm.check_extension_raw(cap.into()))
    }
    fn enable_on_scratch_vm(&mut self, cap: u32, arg: u64) -> Result<(), i32> {
        self.vm
            .enable_cap(&enable_cap_request(cap, arg))
            .map_err(|e| e.errno())
    }
}

/// Probe `/dev/kvm` for revision `abi` with every check of [`crate::probe`]; on an
/// upstream kernel this is [`HekiSupport::NotSupported`], whatever
/// `KVM_CHECK_EXTENSION` says about the collided numbers.
pub fn probe(kvm: &Kvm, abi: HekiAbi) -> Result<HekiSupport, KvmError> {
    let mut query = KvmCapQuery::new(kvm)?;
    Ok(probe_with(abi, &mut query))
}

/// Enable `cap` for `reasons` on `vm`: `KVM_ENABLE_CAP` with
/// [`HekiSupported::enable_request`], the request built (and tested) without KVM. Requires the [`HekiSupported`] token of a
/// successful probe, so the collided cap numbers are never enabled on a kernel where
/// they mean something else (e.g. 237 = `KVM_CAP_X86_APIC_BUS_CYCLES_NS`).
pub fn enable_cap(
    vm: &VmFd,
    proof: &HekiSupported,
    cap: HekiCap,
    reasons: HekiExitReasons,
) -> Result<(), KvmError> {
    let req = proof.enable_request(cap, reasons)?;
    vm.enable_cap(&req).map_err(|source| KvmError::EnableCap {
        cap: req.cap,
        source,
    })
}

/// A copy of the kvm_run exit union as bytes (read by [`KvmRunExit::from_kvm_run`]).
pub fn exit_union_bytes(run: &kvm_run) -> [u8; KVM_RUN_EXIT_UNION_SIZE] {
    *KvmRunExit::from_kvm_run(run).union()
}

/// Write `bytes` at the start of the kvm_run exit union (for a stand-in or a test that
/// builds exits). Bytes beyond `bytes.len()` are left as they are.
pub fn write_exit_union(run: &mut kvm_run, bytes: &[u8]) {
    let mut union = exit_union_bytes(run);
    for (dst, src) in union.iter_mut().zip(bytes) {
        *dst = *src;
    }
    KvmRunExit::new(run.exit_reason, &union).write_to(run);
}

/// Decode the exit in `run` for the caller's ABI selection (see
/// [`decode_exit`](crate::exit::decode_exit)).
pub fn decode_run(abi: Option<HekiAbi>, run: &kvm_run) -> Result<ExitDecode, ExitDecodeError> {
    decode_run_exit(abi, &KvmRunExit::from_kvm_run(run))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error;

    /// The message names the ioctl once; the errno is the `#[source]`, not repeated.
    #[test]
    fn errors_print_their_message_once() {
        let e = KvmError::EnableCap {
            cap: 236,
            source: kvm_ioctls::Error::new(22),
        };
        assert_eq!(e.to_string(), "KVM_ENABLE_CAP(236) failed");
        assert_eq!(
            e.source().unwrap().to_string(),
            "Invalid argument (os error 22)"
        );
        let e = KvmError::CreateVm(kvm_ioctls::Error::new(24));
        assert_eq!(e.to_string(), "KVM_CREATE_VM for the scratch VM failed");
        assert!(e.source().is_some());
    }
}
