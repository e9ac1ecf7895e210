//! The `KVM_HC_LOCK_CR_UPDATE` hypercall: registers, typed request, return values.
//!
//! Calling convention (standard KVM hypercall, Linux
//! `Documentation/virt/kvm/x86/hypercalls.rst`): VMCALL/VMMCALL with RAX = nr,
//! RBX = a0, RCX = a1, RDX = a2, RSI = a3; the result comes back in RAX. For a caller
//! that is not in 64-bit mode KVM truncates nr and the arguments to 32 bits, and the
//! result too. A caller at CPL != 0 gets `-KVM_EPERM` before the hypercall is even
//! dispatched (`____kvm_emulate_hypercall`).
//!
//! In RFC v2/v3 (`KVM_HC_LOCK_CR_UPDATE` = 13):
//! - a0 = control register number (0 or 4); a0 > `U32_MAX` is `-KVM_EINVAL`
//!   (dispatcher);
//! - a1 = bits to pin;
//! - a2 = flags, only `KVM_LOCK_CR_UPDATE_VERSION` (bit 0); the version query is exactly
//!   (a0 = 0, a1 = 0, a2 = `KVM_LOCK_CR_UPDATE_VERSION`) and returns
//!   [`HEKI_ABI_VERSION`](crate::abi::HEKI_ABI_VERSION) = 1; any other non-zero a2, or
//!   the version flag with a non-zero a0/a1, is `-KVM_EINVAL`.
//!
//! In RFC v1 the number was 14 and there were two arguments (no flags, no query).
//! The pin rules themselves are in [`policy`](crate::policy).

#![deny(unsafe_code)]

use crate::abi::HekiAbi;

/// `KVM_LOCK_CR_UPDATE_VERSION` (`arch/x86/include/uapi/asm/kvm_para.h` in RFC v2/v3):
/// the only defined flag of a2. **Not upstream uapi**: Heki was never merged, so
/// kvm-bindings does not have it. Not a collision risk: it only has meaning inside this
/// hypercall.
pub const KVM_LOCK_CR_UPDATE_VERSION: u64 = 1 << 0;

/// The general-purpose registers of a KVM hypercall, as the guest leaves them at
/// VMCALL/VMMCALL and as a VMM reads them (`kvm_regs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct HypercallRegs {
    /// RAX: hypercall number.
    pub nr: u64,
    /// RBX: first argument.
    pub a0: u64,
    /// RCX: second argument.
    pub a1: u64,
    /// RDX: third argument.
    pub a2: u64,
    /// RSI: fourth argument (unused by `KVM_HC_LOCK_CR_UPDATE`).
    pub a3: u64,
}

impl HypercallRegs {
    /// The registers as KVM sees them for a caller in the given mode: all truncated to
    /// 32 bits unless `long_mode` (`is_64_bit_hypercall()`, i.e. CS.L = 1).
    pub const fn as_seen_by_kvm(self, long_mode: bool) -> Self {
        if long_mode {
            self
        } else {
            HypercallRegs {
                nr: self.nr as u32 as u64,
                a0: self.a0 as u32 as u64,
                a1: self.a1 as u32 as u64,
                a2: self.a2 as u32 as u64,
                a3: self.a3 as u32 as u64,
            }
        }
    }
}

/// The caller's execution mode, which the hypercall ABI depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CallerMode {
    /// Current privilege level (CS.DPL/SS.DPL). Anything but 0 gets `-KVM_EPERM`.
    pub cpl: u8,
    /// Whether the caller runs in 64-bit mode (otherwise registers and result are
    /// truncated to 32 bits).
    pub long_mode: bool,
}

impl CallerMode {
    /// A 64-bit guest kernel (CPL 0, long mode): the mode Heki is used from.
    pub const KERNEL_64: CallerMode = CallerMode {
        cpl: 0,
        long_mode: true,
    };
}

/// A decoded `KVM_HC_LOCK_CR_UPDATE` call.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum LockCrRequest {
    /// (a0 = 0, a1 = 0, a2 = `KVM_LOCK_CR_UPDATE_VERSION`): ask the ABI version.
    VersionQuery,
    /// Pin `pin` in control register `cr` (a0, already checked to fit in 32 bits).
    /// Whether `cr` and `pin` are acceptable is decided by the
    /// [`PinPolicy`](crate::policy::PinPolicy).
    Lock {
        /// a0: the control register number.
        cr: u32,
        /// a1: the bits to pin.
        pin: u64,
    },
}

/// Why a `KVM_HC_LOCK_CR_UPDATE` call was refused before the pin rules were applied.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum RequestError {
    /// CPL != 0: the dispatcher answers `-KVM_EPERM` for every hypercall.
    #[error("hypercall from CPL {cpl}: -KVM_EPERM")]
    NotKernelMode {
        /// The caller's CPL.
        cpl: u8,
    },
    /// a0 > `U32_MAX`: `-KVM_EINVAL` (dispatcher).
    #[error("control register number {a0:#x} does not fit in 32 bits: -KVM_EINVAL")]
    CrOutOfRange {
        /// The raw a0.
        a0: u64,
    },
    /// a2 has bits other than `KVM_LOCK_CR_UPDATE_VERSION`: `-KVM_EINVAL`.
    #[error("unknown flags {flags:#x}: -KVM_EINVAL")]
    UnknownFlags {
        /// The raw a2.
        flags: u64,
    },
    /// The version flag with a non-zero a0 or a1: `-KVM_EINVAL`.
    #[error("version query with a0={a0:#x} a1={a1:#x}: -KVM_EINVAL")]
    VersionQueryWithArgs {
        /// The raw a0.
        a0: u64,
        /// The raw a1.
        a1: u64,
    },
}

impl RequestError {
    /// The error value the guest gets for this refusal.
    pub const fn error(self) -> KvmHcError {
        match self {
            RequestError::NotKernelMode { .. } => KvmHcError::Perm,
            _ => KvmHcError::Inval,
        }
    }
}

/// Decode the hypercall registers of a guest for `abi`.
///
/// Returns `Ok(None)` when the registers are not a `KVM_HC_LOCK_CR_UPDATE` call of this
/// revision (another hypercall: not ours to answer, whatever the CPL), `Err` for a
/// refused call (with the exact `-KVM_E*` of [`RequestError::error`]), and the typed
/// request otherwise. Order as in KVM: 32-bit truncation, CPL check, a0 range check,
/// flags.
///
/// ```
/// use heki_policy::hypercall::{decode_request, RequestError};
/// use heki_policy::{CallerMode, HekiAbi, HypercallRegs, LockCrRequest};
///
/// let abi = HekiAbi::RfcV2;
/// // KVM_HC_LOCK_CR_UPDATE(cr 4, SMEP | SMAP, flags 0) from the guest kernel.
/// let regs = HypercallRegs {
///     nr: abi.lock_cr_update_nr(),
///     a0: 4,
///     a1: (1 << 20) | (1 << 21),
///     ..Default::default()
/// };
/// assert_eq!(
///     decode_request(abi, regs, CallerMode::KERNEL_64),
///     Ok(Some(LockCrRequest::Lock { cr: 4, pin: (1 << 20) | (1 << 21) }))
/// );
/// // From user mode: -KVM_EPERM, as KVM answers.
/// let user = CallerMode { cpl: 3, ..CallerMode::KERNEL_64 };
/// assert_eq!(decode_request(abi, regs, user), Err(RequestError::NotKernelMode { cpl: 3 }));
/// // Another hypercall number is not ours to answer.
/// let other = HypercallRegs { nr: 9, ..regs };
/// assert_eq!(decode_request(abi, other, CallerMode::KERNEL_64), Ok(None));
/// ```
pub fn decode_request(
    abi: HekiAbi,
    regs: HypercallRegs,
    mode: CallerMode,
) -> Result<Option<LockCrRequest>, RequestError> {
    let regs = regs.as_seen_by_kvm(mode.long_mode);
    if regs.nr != abi.lock_cr_update_nr() {
        return Ok(None);
    }
    if mode.cpl != 0 {
        return Err(RequestError::NotKernelMode { cpl: mode.cpl });
    }
    let Ok(cr) = u32::try_from(regs.a0) else {
        return Err(RequestError::CrOutOfRange { a0: regs.a0 });
    };
    if !abi.has_flags() {
        // v1: two arguments; a2 is not part of the ABI.
        return Ok(Some(LockCrRequest::Lock { cr, pin: regs.a1 }));
    }
    match regs.a2 {
        0 => Ok(Some(LockCrRequest::Lock { cr, pin: regs.a1 })),
        KVM_LOCK_CR_UPDATE_VERSION if regs.a0 == 0 && regs.a1 == 0 => {
            Ok(Some(LockCrRequest::VersionQuery))
        }
        KVM_LOCK_CR_UPDATE_VERSION => Err(RequestError::VersionQueryWithArgs {
            a0: regs.a0,
            a1: regs.a1,
        }),
        flags => Err(RequestError::UnknownFlags { flags }),
    }
}

/// Why a guest cannot express a request in a revision.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum GuestCallError {
    /// The revision has no flags argument, so no version query (RFC v1).
    #[error("{0} has no version query")]
    NoVersionQuery(HekiAbi),
}

impl LockCrRequest {
    /// The registers a guest loads before VMCALL/VMMCALL to make this request in `abi`.
    pub fn to_regs(self, abi: HekiAbi) -> Result<HypercallRegs, GuestCallError> {
        let nr = abi.lock_cr_update_nr();
        match self {
            LockCrRequest::VersionQuery if !abi.has_flags() => {
                Err(GuestCallError::NoVersionQuery(abi))
            }
            LockCrRequest::VersionQuery => Ok(HypercallRegs {
                nr,
                a2: KVM_LOCK_CR_UPDATE_VERSION,
                ..HypercallRegs::default()
            }),
            LockCrRequest::Lock { cr, pin } => Ok(HypercallRegs {
                nr,
                a0: u64::from(cr),
                a1: pin,
                ..HypercallRegs::default()
            }),
        }
    }

    /// Interpret the RAX the guest got back for this request (the guest side of the
    /// ABI). A version query answers the version (> 0) or an error; a lock answers 0 or
    /// an error. Anything else is [`UnexpectedReturn`].
    pub fn interpret_return(
        self,
        rax: u64,
        long_mode: bool,
    ) -> Result<HypercallRet, UnexpectedReturn> {
        let value = signed_return(rax, long_mode);
        if let Some(err) = KvmHcError::from_value(value) {
            return Ok(HypercallRet::Error(err));
        }
        match (self, value) {
            (LockCrRequest::Lock { .. }, 0) => Ok(HypercallRet::Success),
            (LockCrRequest::VersionQuery, v) if v > 0 => u32::try_from(v)
                .map(HypercallRet::AbiVersion)
                .map_err(|_| UnexpectedReturn { rax }),
            _ => Err(UnexpectedReturn { rax }),
        }
    }
}

/// The guest's reading of a version query result, as `kvm_init_heki()` (RFC v2 04/19)
/// does it: a result < 1 means Heki is not used.
pub fn heki_available(rax: u64, long_mode: bool) -> Option<u32> {
    match LockCrRequest::VersionQuery.interpret_return(rax, long_mode) {
        Ok(HypercallRet::AbiVersion(v)) if v >= 1 => Some(v),
        _ => None,
    }
}

fn signed_return(rax: u64, long_mode: bool) -> i64 {
    if long_mode {
        rax as i64
    } else {
        i64::from(rax as u32 as i32)
    }
}

/// A RAX value no Heki revision returns for the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[error("unexpected hypercall return value {rax:#x}")]
pub struct UnexpectedReturn {
    /// The raw RAX.
    pub rax: u64,
}

/// KVM hypercall error codes (`include/uapi/linux/kvm_para.h`), returned negated.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum KvmHcError {
    /// `KVM_EPERM` = 1 (`EPERM`): caller not at CPL 0.
    Perm,
    /// `KVM_EINVAL` = 22 (`EINVAL`): every invalid input.
    Inval,
    /// `KVM_ENOSYS` = 1000: unknown hypercall, what a host without `CONFIG_HEKI`
    /// answers.
    Nosys,
}

impl KvmHcError {
    /// The positive `KVM_E*` value.
    pub const fn code(self) -> i64 {
        match self {
            KvmHcError::Perm => 1,
            KvmHcError::Inval => 22,
            KvmHcError::Nosys => 1000,
        }
    }
    fn from_value(value: i64) -> Option<Self> {
        match value {
            -1 => Some(KvmHcError::Perm),
            -22 => Some(KvmHcError::Inval),
            -1000 => Some(KvmHcError::Nosys),
            _ => None,
        }
    }
}

/// What `KVM_HC_LOCK_CR_UPDATE` returns in RAX.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum HypercallRet {
    /// 0: the pin was applied (also what the guest sees after a configure exit).
    Success,
    /// The ABI version (version query only).
    AbiVersion(u32),
    /// `-KVM_E*`.
    Error(KvmHcError),
}

impl HypercallRet {
    /// `-KVM_ENOSYS`: what a host without Heki (`CONFIG_HEKI` off, or no Heki at all)
    /// answers for this number.
    pub const NOT_SUPPORTED: HypercallRet = HypercallRet::Error(KvmHcError::Nosys);

    /// The value the guest sees in RAX: two's complement for errors, truncated to 32
    /// bits for a caller not in 64-bit mode (KVM: `if (!op_64_bit) ret = (u32)ret;`).
    pub const fn to_rax(self, long_mode: bool) -> u64 {
        let value: i64 = match self {
            HypercallRet::Success => 0,
            HypercallRet::AbiVersion(v) => v as i64,
            HypercallRet::Error(e) => -e.code(),
        };
        if long_mode {
            value as u64
        } else {
            value as u32 as u64
        }
    }
}
