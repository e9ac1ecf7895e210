//! `KVM_EXIT_HEKI_CONFIGURE` / `KVM_EXIT_HEKI_DENIAL`: the kvm_run payloads, decoded and
//! encoded with zerocopy.
//!
//! Layout (RFC v2 03/19), both members of the kvm_run exit union (which starts at byte
//! [`KVM_RUN_EXIT_UNION_OFFSET`] = 32 of `struct kvm_run` and is
//! [`KVM_RUN_EXIT_UNION_SIZE`] = 256 bytes):
//!
//! ```c
//! struct { __u64 reason;                       /* KVM_HEKI_EXIT_REASON_CR0 / _CR4 */
//!          union { __u64 cr_pinned;            /* heki_configure */
//!                  __u64 reserved[7]; }; }     /* 64 bytes in all */
//! struct { __u64 reason;
//!          union { __u64 cr_value;             /* heki_denial */
//!                  __u64 reserved[7]; }; }
//! ```
//!
//! # Collisions
//! The exit numbers are those of a revision: 39/40 in RFC v2, 40/41 in RFC v3 — and
//! upstream uses 39 for `KVM_EXIT_MEMORY_FAULT`, 40 for `KVM_EXIT_TDX`, 41 for
//! `KVM_EXIT_ARM_SEA`. [`decode_exit`] therefore takes the caller's ABI selection and
//! never decodes an exit as Heki without one: it answers
//! [`ExitDecode::NotHeki`] naming what upstream calls that number.

#![deny(unsafe_code)]

use crate::abi::{upstream_exit_name, HekiAbi, HekiExitKind};
use crate::cap::HekiExitReasons;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use x86_kvm_base::kvm_run::KvmRunExit;
/// Offsets and size of the `struct kvm_run` fields read here, moved to
/// [`x86_kvm_base::kvm_run`] (derived from kvm-bindings' `kvm_run`).
pub use x86_kvm_base::kvm_run::{
    EXIT_REASON_OFFSET as KVM_RUN_EXIT_REASON_OFFSET,
    EXIT_UNION_OFFSET as KVM_RUN_EXIT_UNION_OFFSET, EXIT_UNION_SIZE as KVM_RUN_EXIT_UNION_SIZE,
};
/// Size in bytes of either Heki union member.
pub const HEKI_EXIT_SIZE: usize = 64;

/// `kvm_run.heki_configure` as bytes.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct KvmHekiConfigure {
    /// `KVM_HEKI_EXIT_REASON_*`: which CR was pinned.
    pub reason: u64,
    /// Bits pinned by *this* hypercall (CR4: after host masking), not the cumulative set.
    pub cr_pinned: u64,
    /// `reserved[1..7]` of the union (zero from KVM).
    pub reserved: [u64; 6],
}

/// `kvm_run.heki_denial` as bytes.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct KvmHekiDenial {
    /// `KVM_HEKI_EXIT_REASON_*`: which CR write was denied.
    pub reason: u64,
    /// The value the guest tried to write.
    pub cr_value: u64,
    /// `reserved[1..7]` of the union (zero from KVM).
    pub reserved: [u64; 6],
}

/// The `reason` of a Heki exit: one `KVM_HEKI_EXIT_REASON_*` bit.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum HekiExitReason {
    /// `KVM_HEKI_EXIT_REASON_CR0`.
    Cr0,
    /// `KVM_HEKI_EXIT_REASON_CR4`.
    Cr4,
    /// Any other value, kept raw (a kernel bug or a newer revision).
    Unknown(u64),
}

impl HekiExitReason {
    /// Typed view of a raw `reason`.
    pub const fn from_raw(raw: u64) -> Self {
        if raw == HekiExitReasons::CR0.bits() {
            HekiExitReason::Cr0
        } else if raw == HekiExitReasons::CR4.bits() {
            HekiExitReason::Cr4
        } else {
            HekiExitReason::Unknown(raw)
        }
    }
    /// The raw `reason`.
    pub const fn raw(self) -> u64 {
        match self {
            HekiExitReason::Cr0 => HekiExitReasons::CR0.bits(),
            HekiExitReason::Cr4 => HekiExitReasons::CR4.bits(),
            HekiExitReason::Unknown(r) => r,
        }
    }
    /// The control register number, for a known reason.
    pub const fn cr(self) -> Option<u32> {
        match self {
            HekiExitReason::Cr0 => Some(0),
            HekiExitReason::Cr4 => Some(4),
            HekiExitReason::Unknown(_) => None,
        }
    }
    /// The reason for control register `cr` (0 or 4).
    pub const fn for_cr(cr: u32) -> Option<Self> {
        match cr {
            0 => Some(HekiExitReason::Cr0),
            4 => Some(HekiExitReason::Cr4),
            _ => None,
        }
    }
}

/// A decoded Heki exit.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum HekiExit {
    /// `KVM_EXIT_HEKI_CONFIGURE`: a pin was applied (before the exit); on the next
    /// `KVM_RUN` KVM writes RAX = 0 and skips the VMCALL. Pure notification.
    Configure {
        /// Which CR.
        reason: HekiExitReason,
        /// Bits pinned by this call.
        cr_pinned: u64,
        /// `reserved[1..7]`, kept raw (zero from KVM).
        reserved: [u64; 6],
    },
    /// `KVM_EXIT_HEKI_DENIAL`: a write clearing pinned bits was blocked; on the next
    /// `KVM_RUN` KVM injects `#GP(0)` and re-enters (userspace cannot cancel it, only
    /// not re-run the vCPU).
    Denial {
        /// Which CR.
        reason: HekiExitReason,
        /// The value the guest tried to write.
        cr_value: u64,
        /// `reserved[1..7]`, kept raw (zero from KVM).
        reserved: [u64; 6],
    },
}

impl HekiExit {
    /// A configure exit as KVM builds it (reserved zeroed).
    pub const fn configure(reason: HekiExitReason, cr_pinned: u64) -> Self {
        HekiExit::Configure {
            reason,
            cr_pinned,
            reserved: [0; 6],
        }
    }
    /// A denial exit as KVM builds it (reserved zeroed).
    pub const fn denial(reason: HekiExitReason, cr_value: u64) -> Self {
        HekiExit::Denial {
            reason,
            cr_value,
            reserved: [0; 6],
        }
    }
    /// Which exit this is.
    pub const fn kind(&self) -> HekiExitKind {
        match self {
            HekiExit::Configure { .. } => HekiExitKind::Configure,
            HekiExit::Denial { .. } => HekiExitKind::Denial,
        }
    }
    /// The reason field.
    pub const fn reason(&self) -> HekiExitReason {
        match self {
            HekiExit::Configure { reason, .. } | HekiExit::Denial { reason, .. } => *reason,
        }
    }
    /// The 64 bytes of the union member.
    pub fn to_bytes(&self) -> [u8; HEKI_EXIT_SIZE] {
        // transmute! checks at compile time that both types are HEKI_EXIT_SIZE bytes.
        match *self {
            HekiExit::Configure {
                reason,
                cr_pinned,
                reserved,
            } => zerocopy::transmute!(KvmHekiConfigure {
                reason: reason.raw(),
                cr_pinned,
                reserved,
            }),
            HekiExit::Denial {
                reason,
                cr_value,
                reserved,
            } => zerocopy::transmute!(KvmHekiDenial {
                reason: reason.raw(),
                cr_value,
                reserved,
            }),
        }
    }
    /// Decode the union member of `kind` from the start of `union_bytes`.
    pub fn from_bytes(kind: HekiExitKind, union_bytes: &[u8]) -> Result<Self, ExitDecodeError> {
        let too_short = || ExitDecodeError::Truncated {
            len: union_bytes.len(),
            need: HEKI_EXIT_SIZE,
        };
        Ok(match kind {
            HekiExitKind::Configure => {
                let (raw, _) =
                    KvmHekiConfigure::read_from_prefix(union_bytes).map_err(|_| too_short())?;
                HekiExit::Configure {
                    reason: HekiExitReason::from_raw(raw.reason),
                    cr_pinned: raw.cr_pinned,
                    reserved: raw.reserved,
                }
            }
            HekiExitKind::Denial => {
                let (raw, _) =
                    KvmHekiDenial::read_from_prefix(union_bytes).map_err(|_| too_short())?;
                HekiExit::Denial {
                    reason: HekiExitReason::from_raw(raw.reason),
                    cr_value: raw.cr_value,
                    reserved: raw.reserved,
                }
            }
        })
    }
}

/// Why an exit was not decoded as Heki.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotHekiCause {
    /// The caller selected no Heki ABI: no exit number means Heki.
    NoAbiSelected,
    /// The selected revision has no exits (RFC v1).
    AbiWithoutExits(HekiAbi),
    /// The number is not a Heki exit of the selected revision.
    OtherExit(HekiAbi),
}

/// An exit that is not Heki, with what upstream calls its number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NotHeki {
    /// `kvm_run.exit_reason`.
    pub exit_reason: u32,
    /// Why it is not Heki.
    pub cause: NotHekiCause,
    /// Upstream's name of `exit_reason` (e.g. `KVM_EXIT_MEMORY_FAULT` for 39), if any.
    pub upstream_name: Option<&'static str>,
}

/// The result of [`decode_exit`].
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExitDecode {
    /// A Heki exit of the selected revision.
    Heki(HekiExit),
    /// Not a Heki exit: hand it to the rest of the VMM.
    NotHeki(NotHeki),
}

/// Malformed exit bytes.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum ExitDecodeError {
    /// Fewer bytes than the structure needs.
    #[error("exit payload of {len} bytes, need {need}")]
    Truncated {
        /// Bytes supplied.
        len: usize,
        /// Bytes needed.
        need: usize,
    },
}

/// Encoding refused.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum ExitEncodeError {
    /// The revision has no exits (RFC v1).
    #[error("{0} has no Heki exits")]
    AbiWithoutExits(HekiAbi),
    /// The destination is shorter than the structure.
    #[error("destination of {len} bytes, need {need}")]
    Truncated {
        /// Bytes available.
        len: usize,
        /// Bytes needed.
        need: usize,
    },
}

/// Decode an exit: `abi` is the caller's Heki ABI selection (`None` = no Heki),
/// `exit_reason` is `kvm_run.exit_reason`, `union_bytes` the kvm_run exit union (at
/// least 64 bytes for a Heki exit). Only if a revision with exits is selected *and*
/// `exit_reason` is one of its Heki exits are the bytes read; otherwise the answer is
/// [`ExitDecode::NotHeki`], whatever the bytes.
///
/// ```
/// use heki_policy::exit::{HekiExit, HekiExitReason};
/// use heki_policy::{decode_exit, encode_exit, ExitDecode, HekiAbi};
///
/// let abi = HekiAbi::RfcV3;
/// // KVM's KVM_EXIT_HEKI_CONFIGURE for a new CR4 pin, as it lands in kvm_run.
/// let mut union = [0u8; 256];
/// let sent = HekiExit::configure(HekiExitReason::Cr4, 1 << 20);
/// let exit_reason = encode_exit(abi, &sent, &mut union)?;
/// match decode_exit(Some(abi), exit_reason, &union)? {
///     ExitDecode::Heki(exit) => assert_eq!(exit, sent),
///     other => panic!("{other:?}"),
/// }
/// // Without a Heki ABI selected, exit 40 is not Heki's, whatever the bytes.
/// assert!(matches!(decode_exit(None, exit_reason, &union)?, ExitDecode::NotHeki(_)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn decode_exit(
    abi: Option<HekiAbi>,
    exit_reason: u32,
    union_bytes: &[u8],
) -> Result<ExitDecode, ExitDecodeError> {
    let not_heki = |cause| {
        Ok(ExitDecode::NotHeki(NotHeki {
            exit_reason,
            cause,
            upstream_name: upstream_exit_name(exit_reason),
        }))
    };
    let Some(abi) = abi else {
        return not_heki(NotHekiCause::NoAbiSelected);
    };
    let Some(uapi) = abi.uapi() else {
        return not_heki(NotHekiCause::AbiWithoutExits(abi));
    };
    let Some(kind) = uapi.exit_kind(exit_reason) else {
        return not_heki(NotHekiCause::OtherExit(abi));
    };
    HekiExit::from_bytes(kind, union_bytes).map(ExitDecode::Heki)
}

/// Decode an exit read by [`x86_kvm_base::kvm_run`] (from a live `kvm_run` or its
/// bytes) for the caller's ABI selection (see [`decode_exit`]).
pub fn decode_run_exit(
    abi: Option<HekiAbi>,
    exit: &KvmRunExit,
) -> Result<ExitDecode, ExitDecodeError> {
    decode_exit(abi, exit.reason(), exit.union())
}

/// Decode from a whole `struct kvm_run` as bytes (at least 96 bytes: header and the
/// first 64 bytes of the union).
pub fn decode_kvm_run(abi: Option<HekiAbi>, kvm_run: &[u8]) -> Result<ExitDecode, ExitDecodeError> {
    let need = KVM_RUN_EXIT_UNION_OFFSET + HEKI_EXIT_SIZE;
    let truncated = ExitDecodeError::Truncated {
        len: kvm_run.len(),
        need,
    };
    let (reason, _) =
        u32::read_from_prefix(kvm_run.get(KVM_RUN_EXIT_REASON_OFFSET..).unwrap_or(&[]))
            .map_err(|_| truncated)?;
    let union = kvm_run.get(KVM_RUN_EXIT_UNION_OFFSET..).unwrap_or(&[]);
    decode_exit(abi, reason, union)
}

/// Encode `exit` for `abi` into the first 64 bytes of `union_bytes` and return the
/// `exit_reason` to store (for a test harness or a userspace hypervisor that produces
/// these exits).
pub fn encode_exit(
    abi: HekiAbi,
    exit: &HekiExit,
    union_bytes: &mut [u8],
) -> Result<u32, ExitEncodeError> {
    let uapi = abi.uapi().ok_or(ExitEncodeError::AbiWithoutExits(abi))?;
    let len = union_bytes.len();
    let dst = union_bytes
        .get_mut(..HEKI_EXIT_SIZE)
        .ok_or(ExitEncodeError::Truncated {
            len,
            need: HEKI_EXIT_SIZE,
        })?;
    dst.copy_from_slice(&exit.to_bytes());
    Ok(uapi.exit(exit.kind()))
}
