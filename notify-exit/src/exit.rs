// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Decoding `KVM_EXIT_NOTIFY` (exit reason 37) from `struct kvm_run` bytes.
//!
//! When a vCPU runs for the notify window without an event window, the CPU takes a Notify
//! VM exit (basic exit reason 75). KVM's `handle_notify()` bumps the per-vCPU
//! `notify_window_exits` stat and exits to userspace with `exit_reason = KVM_EXIT_NOTIFY`
//! if the VM enabled `KVM_X86_NOTIFY_VMEXIT_USER` or the VM context is invalid (exit
//! qualification bit 0); otherwise it resumes the guest itself.
//!
//! The payload is `kvm_run.notify`, `struct { __u32 flags; }` at the start of the exit
//! union (offset 32 of `struct kvm_run`). `KVM_NOTIFY_CONTEXT_INVALID` (bit 0) means the
//! VMCS no longer holds a valid guest context: resuming gives undefined results.
//!
//! kvm-ioctls 0.25 has no variant for this exit: `VcpuFd::run()` returns
//! `VcpuExit::Unsupported(37)`. [`decode`] takes the exit reason and the union bytes, so
//! the same code serves a live `kvm_run` ([`from_kvm_run`], no feature needed) and a replayed
//! trace.

#![deny(unsafe_code)]

use std::fmt;

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `KVM_EXIT_NOTIFY` (37), `KVM_EXIT_SHUTDOWN` (8: the exit a synthesized or real triple
/// fault produces), `KVM_EXIT_INTERNAL_ERROR` (17: what QEMU reports for a notify exit it
/// refuses to resume) and `KVM_NOTIFY_CONTEXT_INVALID` (bit 0 of `kvm_run.notify.flags`),
/// from kvm-bindings.
pub use kvm_bindings::{
    KVM_EXIT_INTERNAL_ERROR, KVM_EXIT_NOTIFY, KVM_EXIT_SHUTDOWN, KVM_NOTIFY_CONTEXT_INVALID,
};
/// VMX basic exit reason of the Notify VM exit (`EXIT_REASON_NOTIFY`), for traces taken
/// below KVM.
pub const EXIT_REASON_NOTIFY: u32 = 75;

use x86_kvm_base::kvm_run::{KvmRunError, KvmRunExit};
/// Offsets and size of the `struct kvm_run` fields read here, moved to
/// [`x86_kvm_base::kvm_run`] (derived from kvm-bindings' `kvm_run`).
pub use x86_kvm_base::kvm_run::{
    EXIT_REASON_OFFSET as KVM_RUN_EXIT_REASON_OFFSET,
    EXIT_UNION_OFFSET as KVM_RUN_EXIT_UNION_OFFSET, EXIT_UNION_SIZE as KVM_RUN_EXIT_UNION_SIZE,
};

/// `kvm_run.notify`: the exit-union member of `KVM_EXIT_NOTIFY`, as C lays it out.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct KvmRunNotify {
    /// `KVM_NOTIFY_*` flags.
    pub flags: u32,
}

/// `kvm_run.notify.flags` (a `bitflags` type). Unknown bits are kept and reported, never
/// dropped (build with [`NotifyFlags::from_bits_retain`], see [`NotifyFlags::unknown_bits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct NotifyFlags(u32);

bitflags::bitflags! {
    impl NotifyFlags: u32 {
        /// `KVM_NOTIFY_CONTEXT_INVALID`.
        const CONTEXT_INVALID = KVM_NOTIFY_CONTEXT_INVALID;
    }
}

impl NotifyFlags {
    /// Every flag defined as of Linux 6.16.
    pub const KNOWN: Self = Self::all();

    /// Bits this crate does not know (a newer kernel's flags).
    pub const fn unknown_bits(self) -> u32 {
        self.bits() & !Self::KNOWN.bits()
    }
    /// Whether `KVM_NOTIFY_CONTEXT_INVALID` is set.
    pub const fn context_invalid(self) -> bool {
        self.contains(Self::CONTEXT_INVALID)
    }
}

impl fmt::Display for NotifyFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        if self.context_invalid() {
            f.write_str("KVM_NOTIFY_CONTEXT_INVALID")?;
            sep = "|";
        }
        if self.unknown_bits() != 0 {
            write!(f, "{sep}{:#x}", self.unknown_bits())?;
        } else if sep.is_empty() {
            f.write_str("0")?;
        }
        Ok(())
    }
}

/// A decoded `KVM_EXIT_NOTIFY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct NotifyExit {
    /// `kvm_run.notify.flags`.
    pub flags: NotifyFlags,
}

impl NotifyExit {
    /// A notify exit with these flags (for replay and tests).
    pub const fn new(flags: NotifyFlags) -> Self {
        NotifyExit { flags }
    }
    /// Whether KVM reported the VM context as invalid (the guest must not be resumed).
    pub const fn context_invalid(self) -> bool {
        self.flags.context_invalid()
    }
    /// The exit-union member as C lays it out.
    pub const fn to_union_member(self) -> KvmRunNotify {
        KvmRunNotify {
            flags: self.flags.bits(),
        }
    }
    /// The exit-union bytes KVM would write for this exit (the rest of the 256-byte union
    /// is zero), e.g. to replay it or to fake one in a test.
    pub fn to_union_bytes(self) -> [u8; KVM_RUN_EXIT_UNION_SIZE] {
        let mut union = [0u8; KVM_RUN_EXIT_UNION_SIZE];
        // The union is larger than the member, so the prefix write cannot fail.
        let _ = self.to_union_member().write_to_prefix(&mut union);
        union
    }
}

impl From<KvmRunNotify> for NotifyExit {
    fn from(member: KvmRunNotify) -> Self {
        NotifyExit::new(NotifyFlags::from_bits_retain(member.flags))
    }
}

/// Decodes a `KVM_EXIT_NOTIFY` from the exit reason and the exit-union bytes (starting at
/// offset [`KVM_RUN_EXIT_UNION_OFFSET`] of `kvm_run`; at least 4 bytes, extra bytes are
/// ignored).
///
/// ```
/// use notify_exit::{decode, DecodeError, KVM_EXIT_NOTIFY};
///
/// // kvm_run.exit_reason and the exit-union bytes (`notify.flags`, little-endian u32):
/// // bit 0 is KVM_NOTIFY_CONTEXT_INVALID.
/// let exit = decode(KVM_EXIT_NOTIFY, &[1, 0, 0, 0])?;
/// assert!(exit.context_invalid());
/// assert!(!decode(KVM_EXIT_NOTIFY, &[0, 0, 0, 0])?.context_invalid());
/// // Any other exit is refused, typed.
/// assert!(matches!(
///     decode(kvm_bindings::KVM_EXIT_HLT, &[0; 4]),
///     Err(DecodeError::NotNotifyExit { .. })
/// ));
/// # Ok::<(), DecodeError>(())
/// ```
pub fn decode(exit_reason: u32, union_bytes: &[u8]) -> Result<NotifyExit, DecodeError> {
    if exit_reason != KVM_EXIT_NOTIFY {
        return Err(DecodeError::NotNotifyExit { exit_reason });
    }
    let (member, _) =
        KvmRunNotify::read_from_prefix(union_bytes).map_err(|_| DecodeError::Truncated {
            needed: size_of::<KvmRunNotify>(),
            got: union_bytes.len(),
        })?;
    Ok(member.into())
}

/// Decodes a `KVM_EXIT_NOTIFY` from a [`KvmRunExit`], the exit as
/// [`x86_kvm_base::kvm_run`] reads it out of `kvm_run` (live or from bytes).
pub fn from_run_exit(exit: &KvmRunExit) -> Result<NotifyExit, DecodeError> {
    decode(exit.reason(), exit.union())
}

/// Decodes the notify exit in a live `kvm_run`, e.g. kvm-ioctls' `VcpuFd::get_kvm_run()`
/// after `VcpuExit::Unsupported(37)`. Safe, and needs no `kvm` feature: the one `unsafe`
/// read of the exit union is [`KvmRunExit::from_kvm_run`].
///
/// ```
/// use notify_exit::exit::{from_kvm_run, KVM_EXIT_NOTIFY};
///
/// // In the run loop: `Ok(VcpuExit::Unsupported(37)) => from_kvm_run(vcpu.get_kvm_run())`.
/// // A `kvm_run` value stands in for the vCPU's mapping here.
/// let mut run = kvm_bindings::kvm_run::default();
/// run.exit_reason = KVM_EXIT_NOTIFY;
/// run.__bindgen_anon_1.notify.flags = kvm_bindings::KVM_NOTIFY_CONTEXT_INVALID;
/// assert!(from_kvm_run(&run)?.context_invalid());
/// # Ok::<(), notify_exit::DecodeError>(())
/// ```
pub fn from_kvm_run(run: &kvm_bindings::kvm_run) -> Result<NotifyExit, DecodeError> {
    from_run_exit(&KvmRunExit::from_kvm_run(run))
}

/// Decodes a `KVM_EXIT_NOTIFY` from the bytes of a whole `struct kvm_run` (at least up to
/// the end of the exit union, 288 bytes): `exit_reason` at offset 8, the union at 32.
pub fn decode_kvm_run_bytes(kvm_run: &[u8]) -> Result<NotifyExit, DecodeError> {
    let exit = KvmRunExit::from_kvm_run_bytes(kvm_run).map_err(DecodeError::from)?;
    from_run_exit(&exit)
}

impl From<KvmRunError> for DecodeError {
    fn from(e: KvmRunError) -> Self {
        match e {
            KvmRunError::Truncated { needed, got } => DecodeError::Truncated { needed, got },
            // A reader error added by a newer x86-kvm-base: report it as truncation of
            // the whole structure.
            _ => DecodeError::Truncated {
                needed: KVM_RUN_EXIT_UNION_OFFSET + KVM_RUN_EXIT_UNION_SIZE,
                got: 0,
            },
        }
    }
}

/// Why bytes did not decode as a notify exit.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The exit reason is not `KVM_EXIT_NOTIFY` (37).
    #[error("exit reason {exit_reason} is not KVM_EXIT_NOTIFY ({KVM_EXIT_NOTIFY})")]
    NotNotifyExit {
        /// The exit reason found.
        exit_reason: u32,
    },
    /// Too few bytes for the field(s) to read.
    #[error("KVM_EXIT_NOTIFY payload truncated: need {needed} bytes, got {got}")]
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
    use std::mem::offset_of;

    #[test]
    fn layout_matches_kvm_bindings() {
        use kvm_bindings::kvm_run__bindgen_ty_1__bindgen_ty_26;
        assert_eq!(
            size_of::<KvmRunNotify>(),
            size_of::<kvm_run__bindgen_ty_1__bindgen_ty_26>()
        );
        assert_eq!(offset_of!(kvm_run__bindgen_ty_1__bindgen_ty_26, flags), 0);
        assert_eq!(offset_of!(KvmRunNotify, flags), 0);
    }

    /// A live `kvm_run` (as kvm-ioctls' `get_kvm_run()` returns) decodes with no unsafe.
    #[test]
    fn decodes_a_kvm_run_value_safely() {
        let mut run = kvm_bindings::kvm_run {
            exit_reason: KVM_EXIT_NOTIFY,
            ..Default::default()
        };
        run.__bindgen_anon_1.notify.flags = KVM_NOTIFY_CONTEXT_INVALID | 0x100;
        let e = from_kvm_run(&run).unwrap();
        assert!(e.context_invalid());
        assert_eq!(e.flags.unknown_bits(), 0x100);
        run.exit_reason = kvm_bindings::KVM_EXIT_HLT;
        assert_eq!(
            from_kvm_run(&run),
            Err(DecodeError::NotNotifyExit {
                exit_reason: kvm_bindings::KVM_EXIT_HLT
            })
        );
    }

    #[test]
    fn decodes_valid_and_invalid_context() {
        let valid = decode(KVM_EXIT_NOTIFY, &[0, 0, 0, 0]).unwrap();
        assert!(!valid.context_invalid());
        assert_eq!(valid.flags, NotifyFlags::empty());
        let invalid = decode(KVM_EXIT_NOTIFY, &[1, 0, 0, 0, 0xaa]).unwrap();
        assert!(invalid.context_invalid());
        assert_eq!(invalid.flags.unknown_bits(), 0);
    }

    #[test]
    fn keeps_unknown_flag_bits() {
        let e = decode(KVM_EXIT_NOTIFY, &0x8000_0003u32.to_ne_bytes()).unwrap();
        assert!(e.context_invalid());
        assert_eq!(e.flags.bits(), 0x8000_0003);
        assert_eq!(e.flags.unknown_bits(), 0x8000_0002);
        assert_eq!(e.flags.to_string(), "KVM_NOTIFY_CONTEXT_INVALID|0x80000002");
        let e = decode(KVM_EXIT_NOTIFY, &4u32.to_ne_bytes()).unwrap();
        assert!(!e.context_invalid());
        assert_eq!(e.flags.to_string(), "0x4");
        assert_eq!(NotifyFlags::empty().to_string(), "0");
    }

    #[test]
    fn rejects_other_exits_and_short_payloads() {
        assert_eq!(
            decode(kvm_bindings::KVM_EXIT_HLT, &[0; 256]),
            Err(DecodeError::NotNotifyExit { exit_reason: 5 })
        );
        assert_eq!(
            decode(KVM_EXIT_NOTIFY, &[1, 0, 0]),
            Err(DecodeError::Truncated { needed: 4, got: 3 })
        );
        assert_eq!(
            decode(KVM_EXIT_NOTIFY, &[]),
            Err(DecodeError::Truncated { needed: 4, got: 0 })
        );
    }

    #[test]
    fn decodes_whole_kvm_run_bytes() {
        let mut bytes = vec![0u8; size_of::<kvm_bindings::kvm_run>()];
        bytes[KVM_RUN_EXIT_REASON_OFFSET..KVM_RUN_EXIT_REASON_OFFSET + 4]
            .copy_from_slice(&KVM_EXIT_NOTIFY.to_ne_bytes());
        bytes[KVM_RUN_EXIT_UNION_OFFSET..KVM_RUN_EXIT_UNION_OFFSET + 4]
            .copy_from_slice(&(KVM_NOTIFY_CONTEXT_INVALID | 0x10).to_ne_bytes());
        let e = decode_kvm_run_bytes(&bytes).unwrap();
        assert_eq!(e.flags.bits(), 0x11);
        assert_eq!(
            decode_kvm_run_bytes(&bytes[..287]),
            Err(DecodeError::Truncated {
                needed: 288,
                got: 287
            })
        );
        assert_eq!(
            decode_kvm_run_bytes(&bytes[..4]),
            Err(DecodeError::Truncated {
                needed: 288,
                got: 4
            })
        );
        bytes[KVM_RUN_EXIT_REASON_OFFSET] = 8;
        assert_eq!(
            decode_kvm_run_bytes(&bytes),
            Err(DecodeError::NotNotifyExit { exit_reason: 8 })
        );
    }

    #[test]
    fn union_bytes_round_trip() {
        arbtest::arbtest(|u| {
            let bits: u32 = u.arbitrary()?;
            let e = NotifyExit::new(NotifyFlags::from_bits_retain(bits));
            let bytes = e.to_union_bytes();
            assert_eq!(decode(KVM_EXIT_NOTIFY, &bytes), Ok(e));
            assert!(bytes[4..].iter().all(|&b| b == 0));
            let garbage: Vec<u8> = u.arbitrary()?;
            let reason: u32 = u.arbitrary()?;
            // Never panics; decodes iff the reason is 37 and 4 bytes are present.
            let r = decode(reason, &garbage);
            assert_eq!(r.is_ok(), reason == KVM_EXIT_NOTIFY && garbage.len() >= 4);
            let _ = decode_kvm_run_bytes(&garbage);
            Ok(())
        });
    }
}
