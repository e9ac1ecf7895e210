// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `KVM_CAP_X86_NOTIFY_VMEXIT` (219) and `KVM_CAP_X86_TRIPLE_FAULT_EVENT` (218): capability
//! numbers and the `KVM_ENABLE_CAP` argument.
//!
//! `args[0]` of `KVM_ENABLE_CAP(KVM_CAP_X86_NOTIFY_VMEXIT)` holds the notify window in bits
//! 63:32 and flags in bits 31:0: `KVM_X86_NOTIFY_VMEXIT_ENABLED` (bit 0) and
//! `KVM_X86_NOTIFY_VMEXIT_USER` (bit 1). Like QEMU ≥ 7.2, every mode other than `disable`
//! asks for `ENABLED | USER`, so valid-context exits reach userspace too and can be
//! counted; `run` and `internal-error` differ only in what userspace does with an exit, so
//! they encode to the same argument.
//!
//! The cap is per VM and must be enabled **before any vCPU is created**: KVM computes the
//! secondary execution control and writes the VMCS `NOTIFY_WINDOW` field when it creates
//! each vCPU (`init_vmcs()`), and `KVM_ENABLE_CAP` returns `-EINVAL` once
//! `kvm->created_vcpus` is non-zero. KVM also returns `-EINVAL` for unknown flag bits, for a
//! host without the feature (every AMD host: only VMX sets `has_notify_vmexit`) and when
//! `ENABLED` is clear — the cap cannot be used to disable the exit; not calling it is how
//! `disable` is expressed. [`NotifyCapArg::decode`] applies the same checks to an argument
//! found in a trace or a saved configuration.

#![deny(unsafe_code)]

use std::fmt;

use crate::config::NotifyConfig;

/// `KVM_CAP_X86_TRIPLE_FAULT_EVENT` (218: `KVM_{GET,SET}_VCPU_EVENTS` carry a pending
/// triple fault, needed to synthesize one; probed here, enabled by the `vcpu-events`
/// crate's `kvm::enable_event_caps`), `KVM_CAP_X86_NOTIFY_VMEXIT` (219: Intel Notify
/// VM exit, VMX secondary control bit 31), and the flags of its argument
/// (`KVM_X86_NOTIFY_VMEXIT_ENABLED`: turn the exit on for every vCPU;
/// `KVM_X86_NOTIFY_VMEXIT_USER`: also exit to userspace for valid-context exits), from
/// kvm-bindings.
pub use kvm_bindings::{
    KVM_CAP_X86_NOTIFY_VMEXIT, KVM_CAP_X86_TRIPLE_FAULT_EVENT, KVM_X86_NOTIFY_VMEXIT_ENABLED,
    KVM_X86_NOTIFY_VMEXIT_USER,
};

/// Flags in bits 31:0 of the `KVM_CAP_X86_NOTIFY_VMEXIT` argument (a `bitflags` type).
/// Unknown bits are kept (build with [`NotifyVmexitFlags::from_bits_retain`], see
/// [`NotifyVmexitFlags::unknown_bits`]) so a value can be carried unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct NotifyVmexitFlags(u32);

bitflags::bitflags! {
    impl NotifyVmexitFlags: u32 {
        /// `KVM_X86_NOTIFY_VMEXIT_ENABLED`.
        const ENABLED = KVM_X86_NOTIFY_VMEXIT_ENABLED;
        /// `KVM_X86_NOTIFY_VMEXIT_USER`.
        const USER = KVM_X86_NOTIFY_VMEXIT_USER;
    }
}

impl NotifyVmexitFlags {
    /// Every flag this crate (and KVM as of Linux 6.16) knows.
    pub const KNOWN: Self = Self::all();

    /// Bits KVM does not define (non-zero means KVM would refuse the argument).
    pub const fn unknown_bits(self) -> u32 {
        self.bits() & !Self::KNOWN.bits()
    }
}

/// The `args[0]` of `KVM_ENABLE_CAP(KVM_CAP_X86_NOTIFY_VMEXIT)`: window and flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct NotifyCapArg {
    window: u32,
    flags: NotifyVmexitFlags,
}

impl NotifyCapArg {
    /// An argument with any window and flags (unknown bits are kept; KVM would refuse them).
    pub const fn new(window: u32, flags: NotifyVmexitFlags) -> Self {
        NotifyCapArg { window, flags }
    }

    /// The argument QEMU ≥ 7.2 passes for this configuration: `(window << 32) | ENABLED |
    /// USER` for `run` and `internal-error`; `None` for `disable`, because the cap cannot
    /// be used to disable the exit — the VMM simply does not call `KVM_ENABLE_CAP`.
    ///
    /// ```
    /// use notify_exit::{NotifyCapArg, NotifyConfig, NotifyVmexitMode};
    ///
    /// // args[0] of KVM_ENABLE_CAP(KVM_CAP_X86_NOTIFY_VMEXIT): window << 32 | ENABLED | USER.
    /// let run = NotifyConfig::new(NotifyVmexitMode::Run, 128);
    /// assert_eq!(NotifyCapArg::for_config(&run).map(NotifyCapArg::raw), Some((128 << 32) | 3));
    /// // `disable` is not calling KVM_ENABLE_CAP at all.
    /// let off = NotifyConfig::new(NotifyVmexitMode::Disable, 0);
    /// assert_eq!(NotifyCapArg::for_config(&off), None);
    /// ```
    pub const fn for_config(config: &NotifyConfig) -> Option<Self> {
        if config.mode.is_enabled() {
            Some(NotifyCapArg {
                window: config.window,
                flags: NotifyVmexitFlags::ENABLED.union(NotifyVmexitFlags::USER),
            })
        } else {
            None
        }
    }

    /// The notify window (crystal clock cycles), bits 63:32.
    pub const fn window(self) -> u32 {
        self.window
    }
    /// The flags, bits 31:0.
    pub const fn flags(self) -> NotifyVmexitFlags {
        self.flags
    }

    /// The 64-bit value for `kvm_enable_cap.args[0]`.
    pub const fn raw(self) -> u64 {
        ((self.window as u64) << 32) | self.flags.bits() as u64
    }

    /// Decodes `args[0]`, refusing what `kvm_vm_ioctl_enable_cap` refuses on the argument
    /// itself: unknown flag bits and a missing `ENABLED`.
    ///
    /// ```
    /// use notify_exit::{CapArgError, NotifyCapArg};
    ///
    /// // An argument found in a trace: window 128, ENABLED | USER.
    /// let arg = NotifyCapArg::decode(0x0000_0080_0000_0003)?;
    /// assert_eq!(arg.window(), 128);
    /// // KVM refuses an argument without ENABLED (the cap cannot disable the exit).
    /// assert_eq!(
    ///     NotifyCapArg::decode(0x0000_0080_0000_0002),
    ///     Err(CapArgError::NotEnabled { raw: 0x0000_0080_0000_0002 })
    /// );
    /// # Ok::<(), CapArgError>(())
    /// ```
    pub const fn decode(raw: u64) -> Result<Self, CapArgError> {
        let window = (raw >> 32) as u32;
        let bits = raw as u32;
        let flags = NotifyVmexitFlags::from_bits_retain(bits);
        if flags.unknown_bits() != 0 {
            return Err(CapArgError::UnknownFlags {
                raw,
                unknown: flags.unknown_bits(),
            });
        }
        if !flags.contains(NotifyVmexitFlags::ENABLED) {
            return Err(CapArgError::NotEnabled { raw });
        }
        Ok(NotifyCapArg { window, flags })
    }
}

impl fmt::Display for NotifyCapArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:#018x} (window {}, flags {:#x})",
            self.raw(),
            self.window,
            self.flags.bits()
        )
    }
}

/// Why a `KVM_CAP_X86_NOTIFY_VMEXIT` argument is not one KVM accepts.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CapArgError {
    /// Bits 31:0 contain flags other than `ENABLED` and `USER`.
    #[error("KVM_CAP_X86_NOTIFY_VMEXIT argument {raw:#018x} has unknown flag bits {unknown:#x}")]
    UnknownFlags {
        /// The whole argument.
        raw: u64,
        /// The unknown bits of the flags.
        unknown: u32,
    },
    /// `KVM_X86_NOTIFY_VMEXIT_ENABLED` is clear; KVM cannot disable the exit through the cap.
    #[error("KVM_CAP_X86_NOTIFY_VMEXIT argument {raw:#018x} lacks KVM_X86_NOTIFY_VMEXIT_ENABLED")]
    NotEnabled {
        /// The whole argument.
        raw: u64,
    },
}

/// What `KVM_CHECK_EXTENSION` said about the two capabilities on this host.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct NotifyCaps {
    /// `KVM_CAP_X86_NOTIFY_VMEXIT` (219) is non-zero: the host CPU and KVM support the
    /// Notify VM exit (never on AMD).
    pub notify_vmexit: bool,
    /// `KVM_CAP_X86_TRIPLE_FAULT_EVENT` (218) is non-zero (Linux ≥ 6.0).
    pub triple_fault_event: bool,
}

impl NotifyCaps {
    /// Interprets raw `KVM_CHECK_EXTENSION` results (negative or zero means absent).
    pub const fn from_check_extension(notify_vmexit: i32, triple_fault_event: i32) -> Self {
        NotifyCaps {
            notify_vmexit: x86_kvm_base::cap::is_supported(notify_vmexit),
            triple_fault_event: x86_kvm_base::cap::is_supported(triple_fault_event),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NotifyVmexitMode;

    const WINDOWS: [u32; 4] = [0, 1, 128, u32::MAX];

    #[test]
    fn encodes_exactly_what_qemu_requests() {
        let arg = NotifyCapArg::for_config(&NotifyConfig::new(NotifyVmexitMode::Run, 128));
        assert_eq!(arg.map(NotifyCapArg::raw), Some((128u64 << 32) | 0b11));
        let arg = NotifyCapArg::for_config(&NotifyConfig::new(NotifyVmexitMode::Run, u32::MAX));
        assert_eq!(arg.map(NotifyCapArg::raw), Some(0xffff_ffff_0000_0003));
        assert_eq!(
            NotifyCapArg::for_config(&NotifyConfig::new(NotifyVmexitMode::Disable, 5)),
            None
        );
    }

    #[test]
    fn round_trips_every_mode_and_window_edge() {
        for mode in NotifyVmexitMode::ALL {
            for window in WINDOWS {
                let config = NotifyConfig::new(mode, window);
                match NotifyCapArg::for_config(&config) {
                    None => assert_eq!(mode, NotifyVmexitMode::Disable),
                    Some(arg) => {
                        assert!(mode.is_enabled());
                        assert_eq!(arg.raw() >> 32, u64::from(window));
                        assert_eq!(arg.raw() & 0xffff_ffff, 3);
                        let back = NotifyCapArg::decode(arg.raw()).unwrap();
                        assert_eq!(back, arg);
                        assert_eq!(back.window(), window);
                        assert_eq!(
                            back.flags(),
                            NotifyVmexitFlags::ENABLED | NotifyVmexitFlags::USER
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn enabled_without_user_is_accepted() {
        for window in WINDOWS {
            let arg = NotifyCapArg::new(window, NotifyVmexitFlags::ENABLED);
            assert_eq!(NotifyCapArg::decode(arg.raw()), Ok(arg));
        }
    }

    #[test]
    fn decode_rejects_unknown_flag_bits_and_missing_enabled() {
        assert_eq!(
            NotifyCapArg::decode((5u64 << 32) | 0b111),
            Err(CapArgError::UnknownFlags {
                raw: (5u64 << 32) | 0b111,
                unknown: 0b100
            })
        );
        assert_eq!(
            NotifyCapArg::decode(0x8000_0001),
            Err(CapArgError::UnknownFlags {
                raw: 0x8000_0001,
                unknown: 0x8000_0000
            })
        );
        assert_eq!(
            NotifyCapArg::decode(1u64 << 32),
            Err(CapArgError::NotEnabled { raw: 1u64 << 32 })
        );
        assert_eq!(
            NotifyCapArg::decode(KVM_X86_NOTIFY_VMEXIT_USER.into()),
            Err(CapArgError::NotEnabled { raw: 2 })
        );
    }

    #[test]
    fn flags_keep_unknown_bits() {
        let f = NotifyVmexitFlags::from_bits_retain(0xf0 | 1);
        assert_eq!(f.bits(), 0xf1);
        assert_eq!(f.unknown_bits(), 0xf0);
        assert!(f.contains(NotifyVmexitFlags::ENABLED));
        assert_eq!(NotifyVmexitFlags::from_bits(0xf1), None);
        assert_eq!(
            NotifyVmexitFlags::from_bits(3),
            Some(NotifyVmexitFlags::KNOWN)
        );
        // An argument built with unknown bits keeps them in raw().
        assert_eq!(NotifyCapArg::new(0, f).raw(), 0xf1);
    }

    /// The flags are `bitflags` types but serialize as before: the raw `u32` of the
    /// `kvm_enable_cap.args[0]` low half, unknown bits included, so saved configurations
    /// and traces read back unchanged.
    #[cfg(feature = "serde")]
    #[test]
    fn flags_serialize_as_the_raw_bits() {
        let f = NotifyVmexitFlags::from_bits_retain(0x8000_0003);
        assert_eq!(serde_json::to_string(&f).unwrap(), "2147483651");
        let back: NotifyVmexitFlags = serde_json::from_str("2147483651").unwrap();
        assert_eq!(back, f);
        let n = crate::exit::NotifyFlags::from_bits_retain(0x101);
        assert_eq!(serde_json::to_string(&n).unwrap(), "257");
        assert_eq!(n.to_string(), "KVM_NOTIFY_CONTEXT_INVALID|0x100");
    }

    #[test]
    fn decode_agrees_with_the_kernel_rules_for_any_value() {
        arbtest::arbtest(|u| {
            let raw: u64 = u.arbitrary()?;
            let flags = raw as u32;
            let kernel_accepts_arg = flags & !3 == 0 && flags & 1 == 1;
            match NotifyCapArg::decode(raw) {
                Ok(arg) => {
                    assert!(kernel_accepts_arg);
                    assert_eq!(arg.raw(), raw);
                }
                Err(_) => assert!(!kernel_accepts_arg),
            }
            Ok(())
        });
    }

    #[test]
    fn caps_from_check_extension() {
        assert_eq!(
            NotifyCaps::from_check_extension(0, 1),
            NotifyCaps {
                notify_vmexit: false,
                triple_fault_event: true
            }
        );
        assert_eq!(
            NotifyCaps::from_check_extension(-1, 0),
            NotifyCaps::default()
        );
    }
}
