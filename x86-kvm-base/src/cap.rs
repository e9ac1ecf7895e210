// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Probing and enabling a KVM capability: what `KVM_CHECK_EXTENSION` answers mean, the
//! `struct kvm_enable_cap` a `KVM_ENABLE_CAP` takes, and the typed outcome every crate
//! of the workspace reports ([`CapOutcome`]). No ioctl is made here: the crates with a
//! `kvm` feature make them through kvm-ioctls and use these types for the rest.
//!
//! `Documentation/virt/kvm/api.rst`, "KVM_CHECK_EXTENSION": the return value is 0 when
//! the capability is absent and positive (1, or a capability-specific value) when it is
//! there; an ioctl failure is negative. "KVM_ENABLE_CAP": `struct kvm_enable_cap { __u32
//! cap; __u32 flags; __u64 args[4]; __u8 pad[64]; }`, flags must be 0.
//!
//! ```
//! use x86_kvm_base::cap::{enable_cap_request, is_supported, plan, CapOutcome, Requirement};
//!
//! let cap = kvm_bindings::KVM_CAP_X86_TRIPLE_FAULT_EVENT;
//! // KVM_CHECK_EXTENSION returned 0 on this host: skip it, or fail if it is required.
//! assert_eq!(
//!     plan(cap, is_supported(0), Requirement::Optional),
//!     Ok(Some(CapOutcome::NotSupportedByHost))
//! );
//! assert!(plan(cap, is_supported(0), Requirement::Required).is_err());
//! // It returned 1: call KVM_ENABLE_CAP with this request.
//! assert_eq!(plan(cap, is_supported(1), Requirement::Required), Ok(None));
//! let request = enable_cap_request(cap, 1);
//! assert_eq!((request.cap, request.args[0]), (cap, 1));
//! ```

use kvm_bindings::kvm_enable_cap;

/// What happened to one capability during set-up.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum CapOutcome {
    /// `KVM_ENABLE_CAP` succeeded.
    Enabled,
    /// `KVM_CHECK_EXTENSION` reported the capability absent; nothing was called.
    NotSupportedByHost,
    /// The configuration does not ask for it, or it was not attempted; nothing was
    /// called.
    NotRequested,
}

impl CapOutcome {
    /// Whether the capability is on.
    pub const fn is_enabled(self) -> bool {
        matches!(self, CapOutcome::Enabled)
    }
}

/// Whether a missing capability is acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Requirement {
    /// A missing capability is reported as [`CapOutcome::NotSupportedByHost`] (what QEMU
    /// does for optional capabilities).
    #[default]
    Optional,
    /// A missing capability is an error ([`CapNotSupported`]).
    Required,
}

/// A required capability is missing on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[error("KVM capability {cap} is not supported by this host's KVM")]
pub struct CapNotSupported {
    /// The capability number.
    pub cap: u32,
}

/// Whether a `KVM_CHECK_EXTENSION` return value says the capability is there (positive;
/// zero is absent, negative an ioctl failure).
pub const fn is_supported(check_extension: i32) -> bool {
    check_extension > 0
}

/// What to do about capability `cap` before calling `KVM_ENABLE_CAP`: `Ok(None)` means
/// "call it" (the host has it); `Ok(Some(NotSupportedByHost))` means "skip it" (absent and
/// optional); `Err` means absent and required.
///
/// ```
/// use x86_kvm_base::cap::{plan, CapNotSupported, CapOutcome, Requirement};
///
/// let cap = kvm_bindings::KVM_CAP_X86_TRIPLE_FAULT_EVENT;
/// // The host has it: call KVM_ENABLE_CAP.
/// assert_eq!(plan(cap, true, Requirement::Required), Ok(None));
/// // Absent and optional: skip it, and report why.
/// assert_eq!(
///     plan(cap, false, Requirement::Optional),
///     Ok(Some(CapOutcome::NotSupportedByHost))
/// );
/// // Absent and required: a typed error naming the cap.
/// assert_eq!(plan(cap, false, Requirement::Required), Err(CapNotSupported { cap }));
/// ```
pub const fn plan(
    cap: u32,
    supported: bool,
    requirement: Requirement,
) -> Result<Option<CapOutcome>, CapNotSupported> {
    if supported {
        return Ok(None);
    }
    match requirement {
        Requirement::Optional => Ok(Some(CapOutcome::NotSupportedByHost)),
        Requirement::Required => Err(CapNotSupported { cap }),
    }
}

/// The `struct kvm_enable_cap` for `KVM_ENABLE_CAP(cap)` with `args[0] = arg0` (flags and
/// the other arguments zero).
pub fn enable_cap_request(cap: u32, arg0: u64) -> kvm_enable_cap {
    kvm_enable_cap {
        cap,
        args: [arg0, 0, 0, 0],
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// api.rst KVM_CHECK_EXTENSION: 0 = absent, >0 = present, <0 = the ioctl failed.
    #[test]
    fn check_extension_values() {
        assert!(is_supported(1));
        assert!(is_supported(3));
        assert!(!is_supported(0));
        assert!(!is_supported(-22));
    }

    #[test]
    fn plan_follows_the_requirement() {
        assert_eq!(plan(218, true, Requirement::Required), Ok(None));
        assert_eq!(plan(218, true, Requirement::Optional), Ok(None));
        assert_eq!(
            plan(219, false, Requirement::Optional),
            Ok(Some(CapOutcome::NotSupportedByHost))
        );
        assert_eq!(
            plan(219, false, Requirement::Required),
            Err(CapNotSupported { cap: 219 })
        );
        assert_eq!(
            CapNotSupported { cap: 219 }.to_string(),
            "KVM capability 219 is not supported by this host's KVM"
        );
    }

    #[test]
    fn request_carries_cap_and_arg_only() {
        let req = enable_cap_request(kvm_bindings::KVM_CAP_X86_NOTIFY_VMEXIT, 0x80_0000_0003);
        assert_eq!(req.cap, 219);
        assert_eq!(req.flags, 0);
        assert_eq!(req.args, [0x80_0000_0003, 0, 0, 0]);
        assert!(req.pad.iter().all(|&b| b == 0));
    }

    #[test]
    fn outcome_is_enabled_only_when_enabled() {
        assert!(CapOutcome::Enabled.is_enabled());
        assert!(!CapOutcome::NotSupportedByHost.is_enabled());
        assert!(!CapOutcome::NotRequested.is_enabled());
    }
}
