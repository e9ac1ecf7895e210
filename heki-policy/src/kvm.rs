//! KVM glue (feature `kvm`): the probe over real ioctls, enabling the caps, and the
//! kvm_run exit union as bytes.
//!
//! The only module with `unsafe` (reading/writing the kvm_run exit union as bytes).

use crate::abi::{HekiAbi, HekiCap};
use crate::cap::{CapError, HekiExitReasons};
use crate::exit::{decode_exit, ExitDecode, ExitDecodeError, KVM_RUN_EXIT_UNION_SIZE};
use crate::probe::{probe as probe_with, CapQuery, HekiSupport, HekiSupported};
use kvm_bindings::{kvm_enable_cap, kvm_run};
use kvm_ioctls::{Kvm, VmFd};

/// Errors of the KVM glue.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum KvmError {
    /// `KVM_CREATE_VM` for the probe's scratch VM failed.
    #[error("KVM_CREATE_VM for the scratch VM failed: {0}")]
    CreateVm(kvm_ioctls::Error),
    /// `KVM_ENABLE_CAP` failed.
    #[error("KVM_ENABLE_CAP({cap}) failed: {source}")]
    EnableCap {
        /// The cap number.
        cap: u32,
        /// The ioctl error.
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
        let req = kvm_enable_cap {
            cap,
            args: [arg, 0, 0, 0],
            ..Default::default()
        };
        self.vm.enable_cap(&req).map_err(|e| e.errno())
    }
}

/// Probe `/dev/kvm` for revision `abi` with every check of [`crate::probe`]; on an
/// upstream kernel this is [`HekiSupport::NotSupported`], whatever
/// `KVM_CHECK_EXTENSION` says about the collided numbers.
pub fn probe(kvm: &Kvm, abi: HekiAbi) -> Result<HekiSupport, KvmError> {
    let mut query = KvmCapQuery::new(kvm)?;
    Ok(probe_with(abi, &mut query))
}

/// Enable `cap` for `reasons` on `vm`. Requires the [`HekiSupported`] token of a
/// successful probe, so the collided cap numbers are never enabled on a kernel where
/// they mean something else (e.g. 237 = `KVM_CAP_X86_APIC_BUS_CYCLES_NS`).
pub fn enable_cap(
    vm: &VmFd,
    proof: &HekiSupported,
    cap: HekiCap,
    reasons: HekiExitReasons,
) -> Result<(), KvmError> {
    let number = proof.uapi().cap(cap);
    let req = kvm_enable_cap {
        cap: number,
        args: [reasons.to_enable_arg()?, 0, 0, 0],
        ..Default::default()
    };
    vm.enable_cap(&req).map_err(|source| KvmError::EnableCap {
        cap: number,
        source,
    })
}

/// A copy of the kvm_run exit union as bytes.
pub fn exit_union_bytes(run: &kvm_run) -> [u8; KVM_RUN_EXIT_UNION_SIZE] {
    const _: () = assert!(
        core::mem::size_of::<kvm_bindings::kvm_run__bindgen_ty_1>() == KVM_RUN_EXIT_UNION_SIZE
    );
    let union_ptr =
        core::ptr::addr_of!(run.__bindgen_anon_1).cast::<[u8; KVM_RUN_EXIT_UNION_SIZE]>();
    // SAFETY: the union is exactly KVM_RUN_EXIT_UNION_SIZE bytes (asserted above), lives
    // inside `run` which we borrow, and every byte of it is initialised (it starts with
    // `char padding[256]`, and kvm_run is shared memory the kernel fills); [u8; N] has
    // no invalid values and alignment 1, so reading it unaligned is fine.
    unsafe { core::ptr::read_unaligned(union_ptr) }
}

/// Write `bytes` at the start of the kvm_run exit union (for a stand-in or a test that
/// builds exits). Bytes beyond `bytes.len()` are left as they are.
pub fn write_exit_union(run: &mut kvm_run, bytes: &[u8]) {
    let mut union = exit_union_bytes(run);
    for (dst, src) in union.iter_mut().zip(bytes) {
        *dst = *src;
    }
    let union_ptr =
        core::ptr::addr_of_mut!(run.__bindgen_anon_1).cast::<[u8; KVM_RUN_EXIT_UNION_SIZE]>();
    // SAFETY: same region as in exit_union_bytes, borrowed mutably; every byte pattern is
    // a valid value of the union (it contains `char padding[256]`).
    unsafe { core::ptr::write_unaligned(union_ptr, union) }
}

/// Decode the exit in `run` for the caller's ABI selection (see
/// [`decode_exit`]).
pub fn decode_run(abi: Option<HekiAbi>, run: &kvm_run) -> Result<ExitDecode, ExitDecodeError> {
    decode_exit(abi, run.exit_reason, &exit_union_bytes(run))
}
