//! Which CR0/CR4 bits must be intercepted for pins to be enforceable.
//!
//! # Why
//! A pin is enforced when the guest's `MOV to CR0/CR4` reaches the hypervisor. On VMX a
//! MOV to CR0/CR4 only causes a VM exit if, for some bit set in the CR0/CR4
//! *guest/host mask* (VMCS fields `CR0_GUEST_HOST_MASK` 0x6000 / `CR4_GUEST_HOST_MASK`
//! 0x6002; a set bit means "owned by the host"), the new value differs from the read
//! shadow (Intel SDM Vol. 3C, "Instructions That Cause VM Exits Conditionally").
//! Bits *clear* in the mask are owned by the guest: it changes them freely, without
//! any exit.
//!
//! With EPT, KVM gives the guest as many bits as it can, for speed:
//! `KVM_POSSIBLE_CR0_GUEST_BITS` = TS | WP (CR0.WP is guest-owned since "KVM: VMX: Make
//! CR0.WP a guest owned bit", 2023; it is only intercepted without EPT) and
//! `KVM_POSSIBLE_CR4_GUEST_BITS` = PVI | DE | PCE | OSFXSR | OSXMMEXCPT | PGE | TSD |
//! FSGSBASE (Linux `arch/x86/kvm/kvm_cache_regs.h`, `vmx.h`
//! `vmx_l1_guest_owned_cr0_bits()`, `vmx.c` `set_cr4_guest_host_mask()`). A guest that
//! clears CR0.WP or CR4.FSGSBASE then never exits, so the RFC's hook in `handle_cr()`
//! never sees it: a WP pin (the one pin every Heki guest makes) would not be enforced.
//! The Heki v2/v3 diffs do not change these masks; whether the authors handled this
//! elsewhere is not known. So an enforcing hypervisor must put every pinned bit into
//! the guest/host mask: [`required_intercepts`].
//!
//! The set grows over time. KVM's CET virtualization series made CR4.CET guest-owned
//! too ("KVM: VMX: Make CR4.CET a guest owned bit", Mathias Krause, v16 51/51 of the
//! series posted by Sean Christopherson on 2025-09-19; present in later upstream trees,
//! where the header is `arch/x86/kvm/regs.h`; first release assumed 6.18, UNVERIFIED).
//! CET is in every revision's CR4 pinnable mask, so on such a kernel a CET pin is
//! silently unenforced unless CET is forced into the mask as well.
//! [`KVM_POSSIBLE_CR4_GUEST_BITS`] keeps the Linux 6.16 value;
//! [`kvm_may_pass_through`] uses [`KVM_POSSIBLE_CR4_GUEST_BITS_WITH_CET`], the safe
//! superset (forcing an already-intercepted bit into the mask changes nothing).
//! [`required_intercepts`] does not depend on any of this: it asks for every pinned bit.
//!
//! The read shadow must then hold the guest's view of the bit (KVM keeps it so), so that
//! every write changing a pinned bit exits.
//!
//! Other paths: LMSW loads only PE/MP/EM/TS and cannot clear PE; CLTS only clears TS.
//! Neither can clear WP, but a CR0 pin of MP or TS (accepted by the RFC if the host has
//! them set) could be cleared through them, and the RFC does not check those paths; a
//! VMM emulating them can pass the resulting CR0 to
//! [`PinPolicy::check_cr`](crate::policy::PinPolicy::check_cr).

#![deny(unsafe_code)]

use crate::cr::{Cr0, Cr4};
use crate::policy::PinnedCrs;

/// `KVM_POSSIBLE_CR0_GUEST_BITS` (Linux `arch/x86/kvm/kvm_cache_regs.h`): CR0 bits KVM
/// may leave guest-owned (TS always, WP with EPT). **Kernel-internal, not uapi**: no
/// kvm-bindings counterpart.
pub const KVM_POSSIBLE_CR0_GUEST_BITS: Cr0 = Cr0::TS.union(Cr0::WP);

/// `KVM_POSSIBLE_CR4_GUEST_BITS` as of Linux 6.16 (`arch/x86/kvm/kvm_cache_regs.h`): CR4
/// bits KVM may leave guest-owned. **Kernel-internal, not uapi**. Newer kernels add CET;
/// see
/// [`KVM_POSSIBLE_CR4_GUEST_BITS_WITH_CET`].
pub const KVM_POSSIBLE_CR4_GUEST_BITS: Cr4 = Cr4::PVI
    .union(Cr4::DE)
    .union(Cr4::PCE)
    .union(Cr4::OSFXSR)
    .union(Cr4::OSXMMEXCPT)
    .union(Cr4::PGE)
    .union(Cr4::TSD)
    .union(Cr4::FSGSBASE);

/// [`KVM_POSSIBLE_CR4_GUEST_BITS`] plus CR4.CET: the CR4 bits newer KVM (with the CET
/// virtualization series) may leave guest-owned. Used by [`kvm_may_pass_through`]
/// because it is a superset of every version's set.
pub const KVM_POSSIBLE_CR4_GUEST_BITS_WITH_CET: Cr4 = KVM_POSSIBLE_CR4_GUEST_BITS.union(Cr4::CET);

/// Bits of the CR0 and CR4 guest/host masks (set = owned by the host, writes that
/// change them exit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct CrGuestHostMasks {
    /// `CR0_GUEST_HOST_MASK` bits.
    pub cr0: u64,
    /// `CR4_GUEST_HOST_MASK` bits.
    pub cr4: u64,
}

impl CrGuestHostMasks {
    /// Whether no bit is set.
    pub const fn is_empty(&self) -> bool {
        self.cr0 == 0 && self.cr4 == 0
    }
    /// `self | other`.
    pub const fn union(self, other: CrGuestHostMasks) -> CrGuestHostMasks {
        CrGuestHostMasks {
            cr0: self.cr0 | other.cr0,
            cr4: self.cr4 | other.cr4,
        }
    }
}

/// The guest/host mask bits that must be intercepted (host-owned) for `pins` to be
/// enforceable: every pinned bit, in the register it is pinned in.
///
/// ```
/// use heki_policy::intercept::required_intercepts;
/// use heki_policy::policy::PinnedCrs;
///
/// // CR0.WP and CR4.SMEP pinned: both must be host-owned (set in the guest/host masks),
/// // or the guest could clear them without a VM exit.
/// let pins = PinnedCrs { cr0: 1 << 16, cr4: 1 << 20 };
/// let masks = required_intercepts(&pins);
/// assert_eq!((masks.cr0, masks.cr4), (1 << 16, 1 << 20));
/// ```
pub const fn required_intercepts(pins: &PinnedCrs) -> CrGuestHostMasks {
    CrGuestHostMasks {
        cr0: pins.cr0,
        cr4: pins.cr4,
    }
}

/// The guest/host masks to program: `current` plus every pinned bit. Never removes an
/// intercept the hypervisor already wants.
pub const fn apply_intercepts(pins: &PinnedCrs, current: CrGuestHostMasks) -> CrGuestHostMasks {
    current.union(required_intercepts(pins))
}

/// Pinned bits that `current` leaves guest-owned: pins that are *not* enforced with
/// these masks. Empty means every pin is enforceable.
pub const fn unenforced_pins(pins: &PinnedCrs, current: CrGuestHostMasks) -> CrGuestHostMasks {
    CrGuestHostMasks {
        cr0: pins.cr0 & !current.cr0,
        cr4: pins.cr4 & !current.cr4,
    }
}

/// Pinned bits that KVM (with EPT) may hand to the guest, so a KVM-based enforcer must
/// force them into the masks explicitly; all other pinned bits KVM intercepts anyway.
/// CR4 uses [`KVM_POSSIBLE_CR4_GUEST_BITS_WITH_CET`], so a CET pin is reported even
/// though Linux 6.16 still intercepts CET.
pub const fn kvm_may_pass_through(pins: &PinnedCrs) -> CrGuestHostMasks {
    CrGuestHostMasks {
        cr0: pins.cr0 & KVM_POSSIBLE_CR0_GUEST_BITS.bits(),
        cr4: pins.cr4 & KVM_POSSIBLE_CR4_GUEST_BITS_WITH_CET.bits(),
    }
}
