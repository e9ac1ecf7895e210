// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The one reader of the `struct kvm_run` exit: `exit_reason` and the bytes of the exit
//! union, with offsets and sizes taken from kvm-bindings' `kvm_run`.
//!
//! After `KVM_RUN` returns, KVM has written `kvm_run.exit_reason` and the member of the
//! exit union that goes with it (`include/uapi/linux/kvm.h`, `struct kvm_run`;
//! `Documentation/virt/kvm/api.rst`, section "The kvm_run structure"). Rust cannot read a
//! C union without `unsafe`, and kvm-ioctls hands exits it does not know to the VMM as
//! `VcpuExit::Unsupported(reason)`. [`KvmRunExit::from_kvm_run`] is the single place in
//! the workspace that views the union as bytes; every decoder (notify-exit,
//! heki-policy, the reference VMM, replayed traces) then parses the bytes with
//! zerocopy, so a live exit and a replayed one run the same code.
//!
//! A VMM on kvm-ioctls that gets `VcpuExit::Unsupported(37)` decodes the notify exit
//! with no `unsafe` of its own:
//!
//! ```
//! use x86_kvm_base::kvm_run::KvmRunExit;
//!
//! // `vcpu.get_kvm_run()` in kvm-ioctls returns this type; a zeroed one stands in here.
//! let mut run = kvm_bindings::kvm_run::default();
//! run.exit_reason = kvm_bindings::KVM_EXIT_NOTIFY;
//! run.__bindgen_anon_1.notify.flags = kvm_bindings::KVM_NOTIFY_CONTEXT_INVALID;
//!
//! let exit = KvmRunExit::from_kvm_run(&run);
//! assert_eq!(exit.reason(), kvm_bindings::KVM_EXIT_NOTIFY);
//! let (flags, _) = exit.read_member::<u32>()?;
//! assert_eq!(flags, kvm_bindings::KVM_NOTIFY_CONTEXT_INVALID);
//! # Ok::<(), x86_kvm_base::kvm_run::KvmRunError>(())
//! ```

use core::mem::{offset_of, size_of};

use kvm_bindings::{kvm_run, kvm_run__bindgen_ty_1};
use zerocopy::{FromBytes, Immutable, KnownLayout};

/// Byte offset of `exit_reason` (`__u32`) in `struct kvm_run`.
pub const EXIT_REASON_OFFSET: usize = offset_of!(kvm_run, exit_reason);
/// Byte offset of the exit union in `struct kvm_run`.
pub const EXIT_UNION_OFFSET: usize = offset_of!(kvm_run, __bindgen_anon_1);
/// Size of the exit union in `struct kvm_run` (its `char padding[256]` member fixes it).
pub const EXIT_UNION_SIZE: usize = size_of::<kvm_run__bindgen_ty_1>();

/// The exit union as bytes, in the byte order of the host.
pub type ExitUnion = [u8; EXIT_UNION_SIZE];

/// What `KVM_RUN` left in `kvm_run`: the exit reason and a copy of the exit union.
///
/// Built from a live `kvm_run` ([`from_kvm_run`](Self::from_kvm_run)), from the bytes of
/// one ([`from_kvm_run_bytes`](Self::from_kvm_run_bytes)), or from a trace
/// ([`new`](Self::new)); the decoders only ever see this value.
///
/// ```
/// use x86_kvm_base::kvm_run::KvmRunExit;
///
/// // An I/O exit as KVM writes it: reason KVM_EXIT_IO, the `io` member at the union's start
/// // (direction 1 = out, size 1, port 0x10, count 1, data_offset 0x1000).
/// let mut run = kvm_bindings::kvm_run::default();
/// KvmRunExit::new(kvm_bindings::KVM_EXIT_IO, &[1, 1, 0x10, 0, 1, 0, 0, 0, 0, 0x10])
///     .write_to(&mut run);
///
/// // What a VMM does after KVM_RUN with `vcpu.get_kvm_run()`:
/// let exit = KvmRunExit::from_kvm_run(&run);
/// assert_eq!(exit.reason(), kvm_bindings::KVM_EXIT_IO);
/// let ([direction, size], rest) = exit.read_member::<[u8; 2]>()?;
/// assert_eq!((direction, size), (1, 1));
/// assert_eq!(u16::from_le_bytes([rest[0], rest[1]]), 0x10);
/// # Ok::<(), x86_kvm_base::kvm_run::KvmRunError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KvmRunExit {
    reason: u32,
    union: ExitUnion,
}

impl KvmRunExit {
    /// An exit with `reason` whose union starts with `union_prefix` (at most
    /// [`EXIT_UNION_SIZE`] bytes are taken; the rest of the union is zero).
    pub fn new(reason: u32, union_prefix: &[u8]) -> Self {
        let mut union = [0u8; EXIT_UNION_SIZE];
        let n = union_prefix.len().min(EXIT_UNION_SIZE);
        union[..n].copy_from_slice(&union_prefix[..n]);
        KvmRunExit { reason, union }
    }

    /// Reads the exit out of a `kvm_run` (from kvm-ioctls' `VcpuFd::get_kvm_run()`, or a
    /// value a test built).
    // The one `unsafe` of the workspace that reads the kvm_run exit union.
    #[allow(unsafe_code)]
    pub fn from_kvm_run(run: &kvm_run) -> Self {
        // SAFETY: reading a union field is unsafe only because the bytes might not be a
        // valid value of the field's type. `padding` is `[c_char; 256]`, spans the whole
        // union (EXIT_UNION_SIZE, checked by the layout tests), and every bit pattern is a
        // valid `c_char` array. Every byte is initialised: either KVM's mmap of the vCPU
        // (the kernel fills the page) or a Rust value, whose `Default` zeroes it and whose
        // other members are plain integers written through safe field assignment.
        let padding = unsafe { run.__bindgen_anon_1.padding };
        // `c_char` is i8 on x86_64 and u8 on aarch64: a byte-for-byte copy on both.
        let union: ExitUnion = padding.map(|c| u8::from_ne_bytes(c.to_ne_bytes()));
        KvmRunExit {
            reason: run.exit_reason,
            union,
        }
    }

    /// Reads the exit out of the bytes of a whole `struct kvm_run` (at least
    /// `EXIT_UNION_OFFSET + EXIT_UNION_SIZE` bytes, e.g. a dump of the vCPU mapping).
    pub fn from_kvm_run_bytes(bytes: &[u8]) -> Result<Self, KvmRunError> {
        let needed = EXIT_UNION_OFFSET + EXIT_UNION_SIZE;
        let truncated = KvmRunError::Truncated {
            needed,
            got: bytes.len(),
        };
        let reason_bytes = bytes.get(EXIT_REASON_OFFSET..).ok_or(truncated)?;
        let (reason, _) = u32::read_from_prefix(reason_bytes).map_err(|_| truncated)?;
        let union = bytes
            .get(EXIT_UNION_OFFSET..needed)
            .ok_or(truncated)?
            .try_into()
            .map_err(|_| truncated)?;
        Ok(KvmRunExit { reason, union })
    }

    /// `kvm_run.exit_reason` (a `KVM_EXIT_*` number; see [`crate::exit_reason`]).
    pub const fn reason(&self) -> u32 {
        self.reason
    }

    /// The exit-union bytes.
    pub const fn union(&self) -> &ExitUnion {
        &self.union
    }

    /// Reads the union member `T` (a zerocopy mirror of a `kvm_run` exit member) from
    /// the start of the union, with the union bytes that follow it.
    pub fn read_member<T: FromBytes + KnownLayout + Immutable>(
        &self,
    ) -> Result<(T, &[u8]), KvmRunError> {
        T::read_from_prefix(&self.union).map_err(|_| KvmRunError::Truncated {
            needed: size_of::<T>(),
            got: EXIT_UNION_SIZE,
        })
    }

    /// Writes this exit into `run` (reason and the whole union), e.g. for a test or a
    /// stand-in that fakes exits. Writing a union is safe Rust.
    pub fn write_to(&self, run: &mut kvm_run) {
        run.exit_reason = self.reason;
        run.__bindgen_anon_1.padding = self.union.map(|b| core::ffi::c_char::from_ne_bytes([b]));
    }
}

/// Why bytes do not hold a `kvm_run` exit.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum KvmRunError {
    /// Fewer bytes than the fields read need.
    #[error("kvm_run exit truncated: need {needed} bytes, got {got}")]
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes given.
        got: usize,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_bindings::{
        kvm_run__bindgen_ty_1__bindgen_ty_26 as KvmRunNotify, KVM_EXIT_HLT, KVM_EXIT_NOTIFY,
    };

    /// The layout `include/uapi/linux/kvm.h` gives `struct kvm_run` on x86-64: 8 bytes of
    /// request/immediate-exit fields, `exit_reason` at 8, the union at 32, 256 bytes.
    #[test]
    fn layout_is_the_uapi_one() {
        assert_eq!(EXIT_REASON_OFFSET, 8);
        assert_eq!(EXIT_UNION_OFFSET, 32);
        assert_eq!(EXIT_UNION_SIZE, 256);
        assert!(size_of::<kvm_run>() >= EXIT_UNION_OFFSET + EXIT_UNION_SIZE);
        assert_eq!(offset_of!(kvm_run__bindgen_ty_1, padding), 0);
        assert_eq!(
            size_of::<[core::ffi::c_char; EXIT_UNION_SIZE]>(),
            EXIT_UNION_SIZE
        );
    }

    #[test]
    fn reads_what_kvm_wrote_into_a_member() {
        let mut run = kvm_run {
            exit_reason: KVM_EXIT_NOTIFY,
            ..Default::default()
        };
        run.__bindgen_anon_1.notify = KvmRunNotify { flags: 0x8000_0001 };
        let exit = KvmRunExit::from_kvm_run(&run);
        assert_eq!(exit.reason(), KVM_EXIT_NOTIFY);
        assert_eq!(exit.union()[..4], 0x8000_0001u32.to_ne_bytes());
        assert!(exit.union()[4..].iter().all(|&b| b == 0));
        let (flags, rest) = exit.read_member::<u32>().unwrap();
        assert_eq!(flags, 0x8000_0001);
        assert_eq!(rest.len(), EXIT_UNION_SIZE - 4);
    }

    #[test]
    fn write_then_read_round_trips_any_bytes() {
        arbtest::arbtest(|u| {
            let reason: u32 = u.arbitrary()?;
            let bytes: Vec<u8> = u.arbitrary()?;
            let exit = KvmRunExit::new(reason, &bytes);
            let mut run = kvm_run::default();
            exit.write_to(&mut run);
            assert_eq!(KvmRunExit::from_kvm_run(&run), exit);
            let n = bytes.len().min(EXIT_UNION_SIZE);
            assert_eq!(exit.union()[..n], bytes[..n]);
            Ok(())
        });
    }

    #[test]
    fn reads_whole_kvm_run_bytes() {
        let mut bytes = vec![0u8; size_of::<kvm_run>()];
        bytes[EXIT_REASON_OFFSET..EXIT_REASON_OFFSET + 4]
            .copy_from_slice(&KVM_EXIT_HLT.to_ne_bytes());
        bytes[EXIT_UNION_OFFSET] = 0xab;
        bytes[EXIT_UNION_OFFSET + EXIT_UNION_SIZE - 1] = 0xcd;
        let exit = KvmRunExit::from_kvm_run_bytes(&bytes).unwrap();
        assert_eq!(exit.reason(), KVM_EXIT_HLT);
        assert_eq!(exit.union()[0], 0xab);
        assert_eq!(exit.union()[EXIT_UNION_SIZE - 1], 0xcd);
        for len in [0, 4, 12, EXIT_UNION_OFFSET, 287] {
            assert_eq!(
                KvmRunExit::from_kvm_run_bytes(&bytes[..len]),
                Err(KvmRunError::Truncated {
                    needed: 288,
                    got: len
                })
            );
        }
        assert!(KvmRunExit::from_kvm_run_bytes(&bytes[..288]).is_ok());
    }

    #[test]
    fn member_larger_than_the_union_is_an_error() {
        let exit = KvmRunExit::new(0, &[]);
        assert_eq!(
            exit.read_member::<[u8; 300]>().map(|_| ()),
            Err(KvmRunError::Truncated {
                needed: 300,
                got: 256
            })
        );
    }
}
