// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The one decoded exit type, [`Exit`], and its decoding from kvm_run bytes.
//!
//! Both paths meet here: a real `KVM_RUN` return (exit reason + the exit union at
//! offset 32 of `struct kvm_run`) and a trace line (the same bytes, or a typed
//! convenience line turned into the same bytes by [`crate::trace`]). Every
//! handler sees only [`Exit`], so real and replayed exits run the same code.
//!
//! Exit reasons 39..=41 are ambiguous: upstream KVM uses 39 for
//! `KVM_EXIT_MEMORY_FAULT` and 40 for `KVM_EXIT_TDX`, while the Heki RFC series
//! reused 39/40 (v2) and 40/41 (v3). They are decoded as Heki exits only when a
//! Heki ABI revision is selected ([`HekiAbi`]), otherwise as upstream says.

#![deny(unsafe_code)]

use serde::Serialize;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Size of the kvm_run exit union, from [`x86_kvm_base::kvm_run`].
pub use x86_kvm_base::kvm_run::EXIT_UNION_SIZE;

/// The `KVM_EXIT_*` numbers this module decodes, and the `kvm_run.io` directions
/// (`KVM_EXIT_IO_IN`/`_OUT`, compared with the `__u8 direction` widened), from kvm-bindings.
pub use kvm_bindings::{
    KVM_EXIT_DEBUG, KVM_EXIT_EXCEPTION, KVM_EXIT_FAIL_ENTRY, KVM_EXIT_HLT, KVM_EXIT_HYPERCALL,
    KVM_EXIT_INTERNAL_ERROR, KVM_EXIT_INTR, KVM_EXIT_IO, KVM_EXIT_IO_IN, KVM_EXIT_IO_OUT,
    KVM_EXIT_IRQ_WINDOW_OPEN, KVM_EXIT_MEMORY_FAULT, KVM_EXIT_MMIO, KVM_EXIT_NOTIFY,
    KVM_EXIT_SHUTDOWN, KVM_EXIT_SYSTEM_EVENT, KVM_EXIT_UNKNOWN,
};

/// `--heki-abi`: which Heki ABI revision, if any, reads exits 39..=41. It is a
/// selection of heki-policy's one [`heki_policy::HekiAbi`] (`None`: exits mean what
/// upstream says), with its spelling (`none`, `rfc-v2`, `rfc-v3`; the older
/// `heki-rfc-v2` / `heki-rfc-v3` are accepted as aliases).
///
/// Not upstream: these numbers collide with upstream exits (see module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HekiAbiSelection(Option<heki_policy::HekiAbi>);

/// The old name of [`HekiAbiSelection`] (it was an enum with its own numbers).
pub type HekiAbi = HekiAbiSelection;

#[allow(non_upper_case_globals)]
impl HekiAbiSelection {
    /// No Heki ABI: exits 39..=41 mean what upstream says.
    pub const None: Self = HekiAbiSelection(None);
    /// Heki RFC v2 (Nov 2023): configure = 39, denial = 40.
    pub const RfcV2: Self = HekiAbiSelection(Some(heki_policy::HekiAbi::RfcV2));
    /// Heki RFC v3 (May 2024): configure = 40, denial = 41.
    pub const RfcV3: Self = HekiAbiSelection(Some(heki_policy::HekiAbi::RfcV3));
    /// What the command line offers.
    pub const CHOICES: [Self; 3] = [Self::None, Self::RfcV2, Self::RfcV3];

    /// The selection of `abi` (`None` for none).
    pub const fn new(abi: Option<heki_policy::HekiAbi>) -> Self {
        HekiAbiSelection(abi)
    }

    /// (configure, denial) exit reasons of the revision, if any (from heki-policy's
    /// [`heki_policy::HekiUapi`]).
    pub fn exit_reasons(self) -> Option<(u32, u32)> {
        let uapi = self.0?.uapi()?;
        Some((uapi.exit_configure(), uapi.exit_denial()))
    }

    /// The heki-policy ABI revision (`None` for [`HekiAbiSelection::None`]).
    pub const fn policy_abi(self) -> Option<heki_policy::HekiAbi> {
        self.0
    }

    /// Name as used on the command line and in reports: `none`, or heki-policy's
    /// [`heki_policy::HekiAbi::slug`] (`rfc-v2`, ...).
    pub fn name(self) -> &'static str {
        self.0.map_or("none", heki_policy::HekiAbi::slug)
    }
}

impl Serialize for HekiAbiSelection {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl clap::ValueEnum for HekiAbiSelection {
    fn value_variants<'a>() -> &'a [Self] {
        &Self::CHOICES
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        let value = clap::builder::PossibleValue::new(self.name());
        Some(match self.0 {
            Some(abi) => value.alias(abi.alias()),
            None => value,
        })
    }
}

/// `kvm_run.io` (exit union member for `KVM_EXIT_IO`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct KvmRunIo {
    /// `KVM_EXIT_IO_IN` (0) or `KVM_EXIT_IO_OUT` (1).
    pub direction: u8,
    /// Access size in bytes (1, 2 or 4).
    pub size: u8,
    /// I/O port.
    pub port: u16,
    /// Number of repetitions (string I/O).
    pub count: u32,
    /// Offset of the data inside the kvm_run mapping.
    pub data_offset: u64,
}

/// `kvm_run.fail_entry`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct KvmRunFailEntry {
    /// VMX: basic exit reason with bit 31 set ("VM-entry failure").
    pub hardware_entry_failure_reason: u64,
    /// Host CPU the entry failed on.
    pub cpu: u32,
    /// Padding.
    pub pad: u32,
}

/// `kvm_run.internal` (first two fields).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct KvmRunInternal {
    /// `KVM_INTERNAL_ERROR_*` sub-error.
    pub suberror: u32,
    /// Number of valid `data` words that follow.
    pub ndata: u32,
}

/// `kvm_run.memory_fault`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct KvmRunMemoryFault {
    /// `KVM_MEMORY_EXIT_FLAG_*`.
    pub flags: u64,
    /// Faulting guest physical address.
    pub gpa: u64,
    /// Size of the faulting range.
    pub size: u64,
}

/// An exit as read from KVM or a trace, before decoding: reason + union bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawExit {
    /// `kvm_run.exit_reason`.
    pub reason: u32,
    /// The exit union (offset 32 of kvm_run), missing bytes zero.
    pub union: [u8; EXIT_UNION_SIZE],
    /// Data of an `out` (it lives outside the union, at `data_offset`); LE, zero-padded.
    pub io_data: u64,
}

impl RawExit {
    /// A raw exit with an all-zero union.
    pub fn new(reason: u32) -> Self {
        RawExit {
            reason,
            union: [0; EXIT_UNION_SIZE],
            io_data: 0,
        }
    }

    /// Copies `bytes` into the start of the union (at most 256 bytes).
    pub fn with_union(mut self, bytes: &[u8]) -> Self {
        let n = bytes.len().min(EXIT_UNION_SIZE);
        self.union[..n].copy_from_slice(&bytes[..n]);
        self
    }
}

/// Errors decoding an exit (possible only for exits from a trace).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// `kvm_run.io.size` is not 1, 2 or 4.
    #[error("KVM_EXIT_IO with access size {0} (must be 1, 2 or 4)")]
    BadIoSize(u8),
    /// `kvm_run.io.direction` is not 0 or 1.
    #[error("KVM_EXIT_IO with direction {0} (must be 0 = in or 1 = out)")]
    BadIoDirection(u8),
    /// notify-exit could not decode a `KVM_EXIT_NOTIFY`.
    #[error("KVM_EXIT_NOTIFY does not decode")]
    Notify(#[source] notify_exit::exit::DecodeError),
    /// heki-policy could not decode a Heki exit.
    #[error("Heki exit does not decode")]
    Heki(#[source] heki_policy::exit::ExitDecodeError),
    /// heki-policy gave a decode outcome this VMM does not know (a newer
    /// heki-policy): the exit is refused rather than guessed.
    #[error("Heki exit {exit_reason}: a decode outcome this VMM does not know")]
    UnknownHekiOutcome {
        /// `kvm_run.exit_reason`.
        exit_reason: u32,
    },
}

/// One decoded exit: the meeting point of KVM and trace exits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Exit {
    /// `out` to `port` (`KVM_EXIT_IO`, direction out); `data` LE, zero-padded.
    IoOut {
        /// I/O port.
        port: u16,
        /// Access size (1, 2, 4).
        size: u8,
        /// Repetitions.
        count: u32,
        /// First (up to 8) bytes written.
        data: u64,
    },
    /// `in` from `port` (`KVM_EXIT_IO`, direction in).
    IoIn {
        /// I/O port.
        port: u16,
        /// Access size (1, 2, 4).
        size: u8,
        /// Repetitions.
        count: u32,
    },
    /// `KVM_EXIT_MMIO` at `addr`.
    Mmio {
        /// Guest physical address.
        addr: u64,
        /// Write (true) or read.
        is_write: bool,
    },
    /// `KVM_EXIT_HLT`.
    Hlt,
    /// `KVM_EXIT_IRQ_WINDOW_OPEN`: the guest can take an interrupt now.
    IrqWindowOpen,
    /// `KVM_EXIT_SHUTDOWN`: triple fault.
    Shutdown,
    /// `KVM_EXIT_INTR`: KVM_RUN interrupted by a signal.
    Intr,
    /// `KVM_EXIT_FAIL_ENTRY`.
    FailEntry {
        /// Hardware entry failure reason (VMX: 0x80000021 = invalid guest state).
        hardware_entry_failure_reason: u64,
        /// Host CPU.
        cpu: u32,
    },
    /// `KVM_EXIT_INTERNAL_ERROR`.
    InternalError {
        /// `KVM_INTERNAL_ERROR_*` sub-error.
        suberror: u32,
    },
    /// `KVM_EXIT_SYSTEM_EVENT`.
    SystemEvent {
        /// `KVM_SYSTEM_EVENT_*` type.
        kind: u32,
    },
    /// `KVM_EXIT_NOTIFY` (37), decoded by `notify-exit`.
    Notify(notify_exit::NotifyExit),
    /// Heki RFC configure or denial exit, decoded by `heki-policy` (only with a
    /// Heki ABI selected).
    Heki(heki_policy::HekiExit),
    /// `KVM_EXIT_MEMORY_FAULT` (upstream 39).
    MemoryFault {
        /// Flags.
        flags: u64,
        /// Guest physical address.
        gpa: u64,
        /// Size.
        size: u64,
    },
    /// Any other exit reason, kept raw.
    Other {
        /// `kvm_run.exit_reason`.
        reason: u32,
    },
}

/// Fieldless kind of an [`Exit`], used to count exits without allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
#[allow(missing_docs)]
pub enum ExitKind {
    IoOut,
    IoIn,
    Mmio,
    Hlt,
    IrqWindowOpen,
    Shutdown,
    Intr,
    FailEntry,
    InternalError,
    SystemEvent,
    Notify,
    HekiConfigure,
    HekiDenial,
    MemoryFault,
    Other,
}

impl ExitKind {
    /// Number of kinds.
    pub const COUNT: usize = 15;
    /// Every kind, in index order.
    pub const ALL: [ExitKind; Self::COUNT] = [
        ExitKind::IoOut,
        ExitKind::IoIn,
        ExitKind::Mmio,
        ExitKind::Hlt,
        ExitKind::IrqWindowOpen,
        ExitKind::Shutdown,
        ExitKind::Intr,
        ExitKind::FailEntry,
        ExitKind::InternalError,
        ExitKind::SystemEvent,
        ExitKind::Notify,
        ExitKind::HekiConfigure,
        ExitKind::HekiDenial,
        ExitKind::MemoryFault,
        ExitKind::Other,
    ];

    /// Name in reports and typed trace lines.
    pub fn name(self) -> &'static str {
        match self {
            ExitKind::IoOut => "io_out",
            ExitKind::IoIn => "io_in",
            ExitKind::Mmio => "mmio",
            ExitKind::Hlt => "hlt",
            ExitKind::IrqWindowOpen => "irq_window_open",
            ExitKind::Shutdown => "shutdown",
            ExitKind::Intr => "intr",
            ExitKind::FailEntry => "fail_entry",
            ExitKind::InternalError => "internal_error",
            ExitKind::SystemEvent => "system_event",
            ExitKind::Notify => "notify",
            ExitKind::HekiConfigure => "heki_configure",
            ExitKind::HekiDenial => "heki_denial",
            ExitKind::MemoryFault => "memory_fault",
            ExitKind::Other => "other",
        }
    }
}

impl Exit {
    /// The exit's kind (for counting).
    #[inline]
    pub fn kind(&self) -> ExitKind {
        match self {
            Exit::IoOut { .. } => ExitKind::IoOut,
            Exit::IoIn { .. } => ExitKind::IoIn,
            Exit::Mmio { .. } => ExitKind::Mmio,
            Exit::Hlt => ExitKind::Hlt,
            Exit::IrqWindowOpen => ExitKind::IrqWindowOpen,
            Exit::Shutdown => ExitKind::Shutdown,
            Exit::Intr => ExitKind::Intr,
            Exit::FailEntry { .. } => ExitKind::FailEntry,
            Exit::InternalError { .. } => ExitKind::InternalError,
            Exit::SystemEvent { .. } => ExitKind::SystemEvent,
            Exit::Notify(_) => ExitKind::Notify,
            Exit::Heki(heki_policy::HekiExit::Configure { .. }) => ExitKind::HekiConfigure,
            Exit::Heki(_) => ExitKind::HekiDenial,
            Exit::MemoryFault { .. } => ExitKind::MemoryFault,
            Exit::Other { .. } => ExitKind::Other,
        }
    }

    /// Decodes a raw exit (reason + union bytes), reading 39..=41 per `abi`.
    pub fn decode(raw: &RawExit, abi: HekiAbi) -> Result<Exit, DecodeError> {
        let u = &raw.union[..];
        if let Some(policy_abi) = abi.policy_abi() {
            use heki_policy::exit::{decode_exit, ExitDecode};
            match decode_exit(Some(policy_abi), raw.reason, u) {
                Ok(ExitDecode::Heki(h)) => return Ok(Exit::Heki(h)),
                Ok(ExitDecode::NotHeki(_)) => {}
                // A decode outcome added by a newer heki-policy: refuse the exit.
                Ok(_) => {
                    return Err(DecodeError::UnknownHekiOutcome {
                        exit_reason: raw.reason,
                    })
                }
                Err(e) => return Err(DecodeError::Heki(e)),
            }
        }
        Ok(match raw.reason {
            KVM_EXIT_IO => {
                let io = read::<KvmRunIo>(u);
                if !matches!(io.size, 1 | 2 | 4) {
                    return Err(DecodeError::BadIoSize(io.size));
                }
                match u32::from(io.direction) {
                    KVM_EXIT_IO_OUT => Exit::IoOut {
                        port: io.port,
                        size: io.size,
                        count: io.count,
                        data: raw.io_data,
                    },
                    KVM_EXIT_IO_IN => Exit::IoIn {
                        port: io.port,
                        size: io.size,
                        count: io.count,
                    },
                    _ => return Err(DecodeError::BadIoDirection(io.direction)),
                }
            }
            KVM_EXIT_MMIO => {
                // kvm_run.mmio: phys_addr u64, data [u8; 8], len u32, is_write u8.
                let addr = u64::from_le_bytes(le8(u, 0));
                let is_write = u.get(20).copied().unwrap_or(0) != 0;
                Exit::Mmio { addr, is_write }
            }
            KVM_EXIT_HLT => Exit::Hlt,
            KVM_EXIT_IRQ_WINDOW_OPEN => Exit::IrqWindowOpen,
            KVM_EXIT_SHUTDOWN => Exit::Shutdown,
            KVM_EXIT_INTR => Exit::Intr,
            KVM_EXIT_FAIL_ENTRY => {
                let f = read::<KvmRunFailEntry>(u);
                Exit::FailEntry {
                    hardware_entry_failure_reason: f.hardware_entry_failure_reason,
                    cpu: f.cpu,
                }
            }
            KVM_EXIT_INTERNAL_ERROR => Exit::InternalError {
                suberror: read::<KvmRunInternal>(u).suberror,
            },
            KVM_EXIT_SYSTEM_EVENT => Exit::SystemEvent {
                kind: u32::from_le_bytes([u[0], u[1], u[2], u[3]]),
            },
            KVM_EXIT_NOTIFY => {
                Exit::Notify(notify_exit::exit::decode(raw.reason, u).map_err(DecodeError::Notify)?)
            }
            KVM_EXIT_MEMORY_FAULT => {
                let m = read::<KvmRunMemoryFault>(u);
                Exit::MemoryFault {
                    flags: m.flags,
                    gpa: m.gpa,
                    size: m.size,
                }
            }
            reason => Exit::Other { reason },
        })
    }
}

/// Reads a zerocopy type from the start of the union (always long enough).
fn read<T: FromBytes + KnownLayout + Immutable + Default>(u: &[u8]) -> T {
    T::read_from_prefix(u).map(|(t, _)| t).unwrap_or_default()
}

fn le8(u: &[u8], at: usize) -> [u8; 8] {
    let mut b = [0u8; 8];
    if let Some(s) = u.get(at..at + 8) {
        b.copy_from_slice(s);
    }
    b
}

/// Upstream name of an exit reason number for messages: the name from
/// [`x86_kvm_base::exit_reason::upstream_exit_name`], or `KVM_EXIT_?` when upstream
/// defines none.
pub fn exit_display_name(reason: u32) -> &'static str {
    x86_kvm_base::exit_reason::upstream_exit_name(reason).unwrap_or("KVM_EXIT_?")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn layouts_match_kvm_bindings() {
        use kvm_bindings::*;
        assert_eq!(
            size_of::<KvmRunIo>(),
            size_of::<kvm_run__bindgen_ty_1__bindgen_ty_4>()
        );
        assert_eq!(
            offset_of!(KvmRunIo, port),
            offset_of!(kvm_run__bindgen_ty_1__bindgen_ty_4, port)
        );
        assert_eq!(
            offset_of!(KvmRunIo, count),
            offset_of!(kvm_run__bindgen_ty_1__bindgen_ty_4, count)
        );
        assert_eq!(
            offset_of!(KvmRunIo, data_offset),
            offset_of!(kvm_run__bindgen_ty_1__bindgen_ty_4, data_offset)
        );
        assert_eq!(
            size_of::<KvmRunFailEntry>(),
            size_of::<kvm_run__bindgen_ty_1__bindgen_ty_2>()
        );
        assert_eq!(
            offset_of!(KvmRunFailEntry, cpu),
            offset_of!(kvm_run__bindgen_ty_1__bindgen_ty_2, cpu)
        );
        assert_eq!(
            offset_of!(KvmRunInternal, ndata),
            offset_of!(kvm_run__bindgen_ty_1__bindgen_ty_13, ndata)
        );
        assert_eq!(
            size_of::<KvmRunMemoryFault>(),
            size_of::<kvm_run__bindgen_ty_1__bindgen_ty_27>()
        );
        assert_eq!(
            offset_of!(kvm_run__bindgen_ty_1__bindgen_ty_6, is_write),
            20
        );
    }

    #[test]
    fn exit_39_is_memory_fault_unless_a_heki_abi_is_selected() {
        let raw = RawExit::new(39).with_union(&[2, 0, 0, 0, 0, 0, 0, 0, 0x20, 0, 0, 0, 0, 0, 0, 0]);
        assert!(matches!(
            Exit::decode(&raw, HekiAbi::None),
            Ok(Exit::MemoryFault { flags: 2, .. })
        ));
        assert_eq!(
            Exit::decode(&raw, HekiAbi::RfcV2),
            Ok(Exit::Heki(heki_policy::HekiExit::configure(
                heki_policy::HekiExitReason::Cr4,
                0x20
            )))
        );
        // v3 moved configure to 40 and denial to 41: 39 is upstream again.
        assert!(matches!(
            Exit::decode(&raw, HekiAbi::RfcV3),
            Ok(Exit::MemoryFault { .. })
        ));
        let raw41 = RawExit { reason: 41, ..raw };
        assert!(matches!(
            Exit::decode(&raw41, HekiAbi::RfcV3),
            Ok(Exit::Heki(heki_policy::HekiExit::Denial { .. }))
        ));
        assert_eq!(
            Exit::decode(&raw41, HekiAbi::None),
            Ok(Exit::Other { reason: 41 })
        );
    }

    /// One spelling with heki-policy (`rfc-v2`); the old `heki-rfc-v2` is an alias.
    #[test]
    fn heki_abi_is_heki_policys_with_its_spelling() {
        use clap::ValueEnum;
        for abi in HekiAbi::CHOICES {
            assert_eq!(HekiAbi::from_str(abi.name(), false), Ok(abi));
            if let Some(policy) = abi.policy_abi() {
                assert_eq!(abi.name(), policy.slug());
                assert_eq!(HekiAbi::from_str(policy.alias(), false), Ok(abi));
                let uapi = policy.uapi().unwrap();
                assert_eq!(
                    abi.exit_reasons(),
                    Some((uapi.exit_configure(), uapi.exit_denial()))
                );
            }
        }
        assert_eq!(HekiAbi::RfcV2.exit_reasons(), Some((39, 40)));
        assert_eq!(HekiAbi::None.exit_reasons(), None);
        assert_eq!(
            serde_json::to_string(&HekiAbi::RfcV3).unwrap(),
            "\"rfc-v3\""
        );
    }

    #[test]
    fn io_decode_checks_size_and_direction() {
        let io = KvmRunIo {
            direction: 1,
            size: 1,
            port: 0xe0,
            count: 1,
            data_offset: 4096,
        };
        let mut raw = RawExit::new(KVM_EXIT_IO).with_union(io.as_bytes());
        raw.io_data = 7;
        assert_eq!(
            Exit::decode(&raw, HekiAbi::None),
            Ok(Exit::IoOut {
                port: 0xe0,
                size: 1,
                count: 1,
                data: 7
            })
        );
        let bad = RawExit::new(KVM_EXIT_IO).with_union(KvmRunIo { size: 3, ..io }.as_bytes());
        assert_eq!(
            Exit::decode(&bad, HekiAbi::None),
            Err(DecodeError::BadIoSize(3))
        );
        let bad = RawExit::new(KVM_EXIT_IO).with_union(KvmRunIo { direction: 9, ..io }.as_bytes());
        assert_eq!(
            Exit::decode(&bad, HekiAbi::None),
            Err(DecodeError::BadIoDirection(9))
        );
    }

    #[test]
    fn any_bytes_decode_without_panic() {
        arbtest::arbtest(|u| {
            let reason: u32 = u.arbitrary()?;
            let bytes: Vec<u8> = u.arbitrary()?;
            let abi = *u.choose(&[HekiAbi::None, HekiAbi::RfcV2, HekiAbi::RfcV3])?;
            let raw = RawExit::new(reason).with_union(&bytes);
            let _ = Exit::decode(&raw, abi);
            Ok(())
        });
    }
}
