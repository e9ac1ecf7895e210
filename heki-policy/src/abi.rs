//! Named Heki ABI revisions and the numbers each one uses.
//!
//! Heki was never merged. Each RFC revision picked hypercall, exit and capability numbers
//! that were free *in its own base tree*; upstream has since given most of them to
//! other features (`KVM_EXIT_MEMORY_FAULT` = 39, `KVM_EXIT_TDX` = 40,
//! `KVM_CAP_VM_TYPES` = 235, `KVM_CAP_PRE_FAULT_MEMORY` = 236, ...). So this crate has no
//! bare `KVM_EXIT_HEKI_*` constant: every number is obtained from a [`HekiAbi`] the
//! caller chose, and [`upstream_exit_name`] / [`upstream_cap_name`] say what a number
//! means on an upstream kernel.
//!
//! | revision | `KVM_HC_LOCK_CR_UPDATE` | args | exits (configure, denial) | caps (configure, denial) |
//! |---|---|---|---|---|
//! | [`HekiAbi::RfcV1`] (2023-05) | 14 | a0, a1 | none | none |
//! | [`HekiAbi::RfcV2`] (2023-11) | 13 | a0, a1, a2 | 39, 40 | 235, 236 |
//! | [`HekiAbi::RfcV3`] (2024-05) | 13 | a0, a1, a2 | 40, 41 | 236, 237 |

#![deny(unsafe_code)]

use core::str::FromStr;

use crate::cr::{Cr4, CR4_PINNABLE_RFC_V2, CR4_PINNABLE_RFC_V3};

/// One published revision of the Heki RFC series (Mickaël Salaün et al.), which fixes
/// every number the hypercall and the uapi use.
///
/// Spelled `rfc-v1`, `rfc-v2`, `rfc-v3` everywhere ([`HekiAbi::slug`], [`FromStr`], serde);
/// `heki-rfc-vN` is accepted as an alias when parsing.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum HekiAbi {
    /// "[RFC PATCH v1 0/9] Hypervisor-Enforced Kernel Integrity" (2023-05-05):
    /// `KVM_HC_LOCK_CR_UPDATE` = 14 with two arguments, no flags (so no version
    /// query), no exits, no caps.
    #[cfg_attr(feature = "serde", serde(alias = "heki-rfc-v1"))]
    RfcV1,
    /// "[RFC PATCH v2 00/19]" (2023-11-13): `KVM_HC_LOCK_CR_UPDATE` = 13 with flags,
    /// exits 39/40, caps 235/236, CR4 pinnable mask without FRED.
    #[cfg_attr(feature = "serde", serde(alias = "heki-rfc-v2"))]
    RfcV2,
    /// "[RFC PATCH v3 0/5] ... - CR pinning" (2024-05-03): same hypercall as v2,
    /// exits 40/41, caps 236/237, CR4 pinnable mask with FRED.
    #[cfg_attr(feature = "serde", serde(alias = "heki-rfc-v3"))]
    RfcV3,
}

/// The uapi numbers (exit reasons and capabilities) of one Heki ABI revision.
///
/// Only obtainable from [`HekiAbi::uapi`], so a number can never be used without
/// saying which revision it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HekiUapi {
    abi: HekiAbi,
    exit_configure: u32,
    exit_denial: u32,
    cap_configure: u32,
    cap_denial: u32,
}

impl HekiUapi {
    /// The revision these numbers belong to.
    pub const fn abi(&self) -> HekiAbi {
        self.abi
    }
    /// `KVM_EXIT_HEKI_CONFIGURE` of this revision (`kvm_run.exit_reason`).
    pub const fn exit_configure(&self) -> u32 {
        self.exit_configure
    }
    /// `KVM_EXIT_HEKI_DENIAL` of this revision (`kvm_run.exit_reason`).
    pub const fn exit_denial(&self) -> u32 {
        self.exit_denial
    }
    /// `KVM_CAP_HEKI_CONFIGURE` of this revision (VM-level `KVM_ENABLE_CAP`).
    pub const fn cap_configure(&self) -> u32 {
        self.cap_configure
    }
    /// `KVM_CAP_HEKI_DENIAL` of this revision (VM-level `KVM_ENABLE_CAP`).
    pub const fn cap_denial(&self) -> u32 {
        self.cap_denial
    }
    /// The capability number of `cap` in this revision.
    pub const fn cap(&self, cap: HekiCap) -> u32 {
        match cap {
            HekiCap::Configure => self.cap_configure,
            HekiCap::Denial => self.cap_denial,
        }
    }
    /// The exit reason number of `kind` in this revision.
    pub const fn exit(&self, kind: HekiExitKind) -> u32 {
        match kind {
            HekiExitKind::Configure => self.exit_configure,
            HekiExitKind::Denial => self.exit_denial,
        }
    }
    /// Which Heki cap `cap` is in this revision, if any.
    pub const fn cap_kind(&self, cap: u32) -> Option<HekiCap> {
        if cap == self.cap_configure {
            Some(HekiCap::Configure)
        } else if cap == self.cap_denial {
            Some(HekiCap::Denial)
        } else {
            None
        }
    }
    /// Which Heki exit `exit_reason` is in this revision, if any.
    pub const fn exit_kind(&self, exit_reason: u32) -> Option<HekiExitKind> {
        if exit_reason == self.exit_configure {
            Some(HekiExitKind::Configure)
        } else if exit_reason == self.exit_denial {
            Some(HekiExitKind::Denial)
        } else {
            None
        }
    }
}

/// The two Heki capabilities (`KVM_CAP_HEKI_CONFIGURE`, `KVM_CAP_HEKI_DENIAL`).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HekiCap {
    /// `KVM_CAP_HEKI_CONFIGURE`: exit to userspace after a successful pin.
    Configure,
    /// `KVM_CAP_HEKI_DENIAL`: exit to userspace when a pinned bit would be cleared.
    Denial,
}

/// The two Heki exits (`KVM_EXIT_HEKI_CONFIGURE`, `KVM_EXIT_HEKI_DENIAL`).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HekiExitKind {
    /// `KVM_EXIT_HEKI_CONFIGURE`, payload `kvm_run.heki_configure`.
    Configure,
    /// `KVM_EXIT_HEKI_DENIAL`, payload `kvm_run.heki_denial`.
    Denial,
}

/// `HEKI_ABI_VERSION` returned by the version query of RFC v2/v3
/// ("Version 1 supports CR0 and CR4 pinning").
pub const HEKI_ABI_VERSION: u32 = 1;

impl HekiAbi {
    /// Every revision this crate models, oldest first.
    pub const ALL: [HekiAbi; 3] = [HekiAbi::RfcV1, HekiAbi::RfcV2, HekiAbi::RfcV3];

    /// `KVM_HC_LOCK_CR_UPDATE` in this revision (14 in v1, 13 in v2/v3; v1's 13 was
    /// `KVM_HC_LOCK_MEM_PAGE_RANGES`). Upstream hypercalls stop at
    /// `KVM_HC_MAP_GPA_RANGE` = 12, but other out-of-tree series squat on 13 too.
    pub const fn lock_cr_update_nr(self) -> u64 {
        match self {
            HekiAbi::RfcV1 => 14,
            HekiAbi::RfcV2 | HekiAbi::RfcV3 => 13,
        }
    }

    /// Whether the hypercall takes a2 = flags (and so has the version query).
    /// v1 took two arguments only.
    pub const fn has_flags(self) -> bool {
        !matches!(self, HekiAbi::RfcV1)
    }

    /// The ABI version the version query answers, if this revision has the query.
    pub const fn abi_version(self) -> Option<u32> {
        if self.has_flags() {
            Some(HEKI_ABI_VERSION)
        } else {
            None
        }
    }

    /// The exit and capability numbers of this revision; `None` for v1, which had no
    /// uapi.
    pub const fn uapi(self) -> Option<HekiUapi> {
        match self {
            HekiAbi::RfcV1 => None,
            HekiAbi::RfcV2 => Some(HekiUapi {
                abi: self,
                exit_configure: 39,
                exit_denial: 40,
                cap_configure: 235,
                cap_denial: 236,
            }),
            HekiAbi::RfcV3 => Some(HekiUapi {
                abi: self,
                exit_configure: 40,
                exit_denial: 41,
                cap_configure: 236,
                cap_denial: 237,
            }),
        }
    }

    /// Linux `cr4_pinned_mask` of this revision's base tree: CR4 pins must be a subset.
    /// v1 and v2 share it (SMEP | SMAP | UMIP | FSGSBASE | CET; v1 5/9,
    /// `20230505152046.6575-6-mic@digikod.net`, exports exactly that mask and runs the
    /// same `heki_lock_cr()` checks as v2, minus the flags); v3 adds FRED.
    pub const fn cr4_pinnable(self) -> Cr4 {
        match self {
            HekiAbi::RfcV1 | HekiAbi::RfcV2 => CR4_PINNABLE_RFC_V2,
            HekiAbi::RfcV3 => CR4_PINNABLE_RFC_V3,
        }
    }

    /// Short human name ("RFC v2").
    pub const fn name(self) -> &'static str {
        match self {
            HekiAbi::RfcV1 => "RFC v1",
            HekiAbi::RfcV2 => "RFC v2",
            HekiAbi::RfcV3 => "RFC v3",
        }
    }
}

impl HekiAbi {
    /// The one spelling of the revision in configurations, command lines and traces
    /// (`rfc-v2`).
    pub const fn slug(self) -> &'static str {
        match self {
            HekiAbi::RfcV1 => "rfc-v1",
            HekiAbi::RfcV2 => "rfc-v2",
            HekiAbi::RfcV3 => "rfc-v3",
        }
    }

    /// The older spelling (`heki-rfc-v2`), accepted as an alias by [`FromStr`].
    pub const fn alias(self) -> &'static str {
        match self {
            HekiAbi::RfcV1 => "heki-rfc-v1",
            HekiAbi::RfcV2 => "heki-rfc-v2",
            HekiAbi::RfcV3 => "heki-rfc-v3",
        }
    }
}

/// A string that names no Heki ABI revision.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown Heki ABI {0:?} (expected rfc-v1, rfc-v2 or rfc-v3)")]
pub struct UnknownHekiAbi(pub String);

impl FromStr for HekiAbi {
    type Err = UnknownHekiAbi;

    /// Parses [`HekiAbi::slug`] or [`HekiAbi::alias`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HekiAbi::ALL
            .into_iter()
            .find(|abi| s == abi.slug() || s == abi.alias())
            .ok_or_else(|| UnknownHekiAbi(s.to_owned()))
    }
}

impl core::fmt::Display for HekiAbi {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a capability number means under the caller's ABI selection: a Heki cap only if
/// a revision with caps is selected and the number is one of its caps; otherwise
/// `Err` with upstream's name for the number (e.g. `KVM_CAP_VM_TYPES` for 235), if any.
pub fn classify_cap(abi: Option<HekiAbi>, cap: u32) -> Result<HekiCap, Option<&'static str>> {
    abi.and_then(HekiAbi::uapi)
        .and_then(|u| u.cap_kind(cap))
        .ok_or(upstream_cap_name(cap))
}

/// The upstream (Linux uapi `KVM_EXIT_*`) name of an exit reason: moved to
/// [`x86_kvm_base::exit_reason::upstream_exit_name`].
pub use x86_kvm_base::exit_reason::upstream_exit_name;

/// The upstream (Linux uapi `KVM_CAP_*`) name of the capability numbers around the Heki
/// ones (232..=239, kvm-bindings 0.14.2), if upstream defines it.
pub fn upstream_cap_name(cap: u32) -> Option<&'static str> {
    Some(match cap {
        232 => "KVM_CAP_MEMORY_FAULT_INFO",
        233 => "KVM_CAP_MEMORY_ATTRIBUTES",
        234 => "KVM_CAP_GUEST_MEMFD",
        235 => "KVM_CAP_VM_TYPES",
        236 => "KVM_CAP_PRE_FAULT_MEMORY",
        237 => "KVM_CAP_X86_APIC_BUS_CYCLES_NS",
        238 => "KVM_CAP_X86_GUEST_MODE",
        239 => "KVM_CAP_ARM_WRITABLE_IMP_ID_REGS",
        _ => return None,
    })
}
