// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Fleet baselines and KVM's nested-restore subset rule.
//!
//! [`intersect`] computes the capability set a nested guest can be given on every host
//! of a fleet: a control may be 1 only where every host allows it, must be 1 where any
//! host forces it, features are ANDed, limits take the minimum, FIXED0 is ORed and
//! FIXED1 ANDed. [`is_subset_of`] applies the rules KVM uses when userspace restores
//! VMX capability MSRs into a vCPU (`vmx_set_vmx_msr`, reference §3.6); the intersection
//! of a set of hosts is a subset of each of them — except for IA32_VMX_BASIC bit 48
//! (32-bit physical-address limit), which is ORed (one limited host limits the fleet)
//! and which KVM never restores: [`intersect`] then adds a [`Note`] on BASIC saying so.
//!
//! Raw bits are kept: the TRUE control MSRs (0x48D-0x490) of the result are the
//! intersection of the inputs' TRUE MSRs whenever every input has them, even when BASIC
//! bit 55 is clear (they are then ignored, as on the inputs), so `intersect(&[a, a])`
//! and `intersect(&[a])` hold the same raw MSRs.

use crate::allowed::AllowedSettings;
use crate::basic::{self, VmxBasic};
use crate::caps::VmxCaps;
use crate::control::ControlWord;
use crate::ept_vpid::{EptVpidCap, HLAT_PREFIX_SIZE_MASK};
use crate::error::CapsError;
use crate::misc::{self, VmxMisc};
use crate::msr;
use crate::raw::RawMsrs;

/// Something [`intersect`] or [`is_subset_of`] had to report.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Note {
    /// MSR concerned.
    pub msr: u32,
    /// Bits concerned (0 when a whole field is).
    pub bits: u64,
    /// One-line explanation.
    pub message: String,
}

impl std::fmt::Display for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        msr::write_note(f, self.msr, self.bits, &self.message)
    }
}

/// The result of [`intersect`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Baseline {
    /// The common capability set.
    pub caps: VmxCaps,
    /// Conflicts resolved along the way (different revision IDs, preemption-timer
    /// rates, controls one host forces and another forbids, ...).
    pub notes: Vec<Note>,
}

/// BASIC feature bits that are ANDed (and compared as a subset).
const BASIC_FEATURES: u64 = basic::VMX_BASIC_DUAL_MONITOR_TREATMENT
    | basic::VMX_BASIC_INOUT
    | basic::VMX_BASIC_TRUE_CTLS
    | basic::VMX_BASIC_NO_HW_ERROR_CODE_CC
    | basic::VMX_BASIC_NESTED_EXCEPTION;
/// BASIC reserved bits (KVM `vmx_restore_vmx_basic`: 31, 47:45, 63:57).
const BASIC_RESERVED: u64 = (1 << 31) | (0x7 << 45) | (0x7F << 57);

fn intersect_basic(a: VmxBasic, b: VmxBasic, notes: &mut Vec<Note>) -> u64 {
    let i = msr::IA32_VMX_BASIC;
    if a.revision_id() != b.revision_id() {
        notes.push(Note {
            msr: i,
            bits: basic::REVISION_MASK,
            message: format!(
                "VMCS revision IDs differ ({} vs {}); keeping {} (a nested hypervisor reports its own)",
                a.revision_id(),
                b.revision_id(),
                a.revision_id()
            ),
        });
    }
    if a.memory_type() != b.memory_type() {
        notes.push(Note {
            msr: i,
            bits: basic::MEM_TYPE_MASK,
            message: format!(
                "VMCS memory types differ ({} vs {}); keeping {}",
                a.memory_type(),
                b.memory_type(),
                a.memory_type()
            ),
        });
    }
    let size = u64::from(a.vmcs_size().max(b.vmcs_size()));
    (a.raw() & (basic::REVISION_MASK | basic::MEM_TYPE_MASK))
        | (size << 32) & basic::VMCS_SIZE_MASK
        | (a.raw() | b.raw()) & basic::VMX_BASIC_32BIT_PHYS_ADDR_ONLY
        | (a.raw() & b.raw()) & (BASIC_FEATURES | BASIC_RESERVED)
}

fn intersect_misc(a: VmxMisc, b: VmxMisc, timer_differs: bool, notes: &mut Vec<Note>) -> u64 {
    let i = msr::IA32_VMX_MISC;
    if a.mseg_revid() != b.mseg_revid() {
        notes.push(Note {
            msr: i,
            bits: misc::VMX_MISC_MSEG_REVID_MASK,
            message: "MSEG revision identifiers differ; keeping the first".into(),
        });
    }
    let rate = u64::from(a.preemption_timer_rate().min(b.preemption_timer_rate()));
    if timer_differs {
        notes.push(Note {
            msr: i,
            bits: misc::VMX_MISC_PREEMPTION_TIMER_RATE_MASK,
            message: format!(
                "preemption-timer rates differ ({} vs {}): the VMX-preemption timer controls are dropped from the baseline",
                a.preemption_timer_rate(),
                b.preemption_timer_rate()
            ),
        });
    }
    let cr3 = u64::from(a.cr3_count().min(b.cr3_count()));
    let max_msr = u64::from(a.max_msr_field().min(b.max_msr_field()));
    rate | (a.raw() & b.raw()) & (misc::FEATURE_BITS | misc::VMX_MISC_RESERVED_BITS)
        | cr3 << 16
        | max_msr << 25
        | a.raw() & misc::VMX_MISC_MSEG_REVID_MASK
}

fn and_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    Some(a? & b?)
}

fn intersect2(a: &VmxCaps, b: &VmxCaps, notes: &mut Vec<Note>) -> Result<VmxCaps, CapsError> {
    let mut r = RawMsrs::new();
    r.insert(
        msr::IA32_VMX_BASIC,
        intersect_basic(a.basic(), b.basic(), notes),
    );
    let true_ctls = a.has_true_ctls() && b.has_true_ctls();
    // Preemption timer: usable in the baseline only if both run it at the same rate.
    // When one side does not offer it, the pin-based AND drops it anyway and the rate
    // no longer matters (no note, e.g. for every host after the first mismatch).
    let timer_differs = a.misc().preemption_timer_rate() != b.misc().preemption_timer_rate()
        && a.pin_based().may_be_one_bit(6)
        && b.pin_based().may_be_one_bit(6);
    r.insert(
        msr::IA32_VMX_MISC,
        intersect_misc(a.misc(), b.misc(), timer_differs, notes),
    );
    // Controls (legacy and TRUE).
    for word in [
        ControlWord::PinBased,
        ControlWord::Primary,
        ControlWord::Exit,
        ControlWord::Entry,
    ] {
        let legacy = |c: &VmxCaps| AllowedSettings::from_raw(c.get(word.msr()).unwrap_or(0));
        r.insert(word.msr(), legacy(a).intersect(legacy(b)).raw());
        let Some(t) = word.true_msr() else {
            continue;
        };
        if true_ctls {
            // Effective views (a TRUE MSR missing despite BASIC bit 55 falls back to
            // legacy), so the result is never more capable than what either input uses.
            let eff = |c: &VmxCaps| c.true_settings(word).unwrap_or(legacy(c));
            r.insert(t, eff(a).intersect(eff(b)).raw());
        } else if let (Some(x), Some(y)) = (a.get(t), b.get(t)) {
            // BASIC bit 55 clear somewhere: the TRUE MSRs are ignored, but values read
            // from hardware keep their raw bits, so when every input has one it stays
            // (intersected), as `intersect(&[a])` keeps it.
            let raw = AllowedSettings::from_raw;
            r.insert(t, raw(x).intersect(raw(y)).raw());
        }
    }
    for id in [msr::IA32_VMX_PROCBASED_CTLS2] {
        if let (Some(x), Some(y)) = (a.get(id), b.get(id)) {
            r.insert(
                id,
                AllowedSettings::from_raw(x)
                    .intersect(AllowedSettings::from_raw(y))
                    .raw(),
            );
        }
    }
    for id in [
        msr::IA32_VMX_PROCBASED_CTLS3,
        msr::IA32_VMX_EXIT_CTLS2,
        msr::IA32_VMX_VMFUNC,
    ] {
        if let Some(v) = and_opt(a.get(id), b.get(id)) {
            r.insert(id, v);
        }
    }
    if let (Some(x), Some(y)) = (a.ept_vpid(), b.ept_vpid()) {
        // Flags are ANDed; the HLAT prefix size is a maximum: the smaller one.
        let hlat = HLAT_PREFIX_SIZE_MASK;
        let h = (x.raw() & hlat).min(y.raw() & hlat);
        r.insert(msr::IA32_VMX_EPT_VPID_CAP, (x.raw() & y.raw() & !hlat) | h);
    }
    for (f0, fa, fb) in [
        (msr::IA32_VMX_CR0_FIXED0, a.cr0_fixed(), b.cr0_fixed()),
        (msr::IA32_VMX_CR4_FIXED0, a.cr4_fixed(), b.cr4_fixed()),
    ] {
        r.insert(f0, fa.fixed0 | fb.fixed0);
        r.insert(f0 + 1, fa.fixed1 & fb.fixed1);
    }
    let (ea, eb) = (a.vmcs_enum(), b.vmcs_enum());
    let idx = ea.raw() & crate::fixed::VMCS_FIELD_INDEX_MASK;
    let idy = eb.raw() & crate::fixed::VMCS_FIELD_INDEX_MASK;
    r.insert(
        msr::IA32_VMX_VMCS_ENUM,
        idx.min(idy) | (ea.raw() & eb.raw() & !crate::fixed::VMCS_FIELD_INDEX_MASK),
    );

    // Gate controls whose capability MSR did not survive, so the set stays coherent.
    let clear_hi = |r: &mut RawMsrs, ids: &[u32], bit: u32| {
        for id in ids {
            if let Some(v) = r.get(*id) {
                r.insert(*id, v & !(1u64 << (32 + bit)));
            }
        }
    };
    let primary = [
        msr::IA32_VMX_PROCBASED_CTLS,
        msr::IA32_VMX_TRUE_PROCBASED_CTLS,
    ];
    let exit = [msr::IA32_VMX_EXIT_CTLS, msr::IA32_VMX_TRUE_EXIT_CTLS];
    let pin = [
        msr::IA32_VMX_PINBASED_CTLS,
        msr::IA32_VMX_TRUE_PINBASED_CTLS,
    ];
    let secondary = [msr::IA32_VMX_PROCBASED_CTLS2];
    // Only where one input had the MSR: when every input lacks it (a capture that
    // stops at 0x490), the gap is kept as it is rather than guessed at.
    let lost = |id: u32| !r.contains(id) && (a.get(id).is_some() || b.get(id).is_some());
    let gates = [
        (msr::IA32_VMX_PROCBASED_CTLS2, &primary[..], 31),
        (msr::IA32_VMX_PROCBASED_CTLS3, &primary[..], 17),
        (msr::IA32_VMX_EXIT_CTLS2, &exit[..], 31),
        (msr::IA32_VMX_VMFUNC, &secondary[..], 13),
        (msr::IA32_VMX_EPT_VPID_CAP, &secondary[..], 1),
        (msr::IA32_VMX_EPT_VPID_CAP, &secondary[..], 5),
    ];
    let to_clear: Vec<_> = gates.into_iter().filter(|g| lost(g.0)).collect();
    for (_, ids, bit) in to_clear {
        clear_hi(&mut r, ids, bit);
    }
    if timer_differs {
        clear_hi(&mut r, &pin, 6);
        clear_hi(&mut r, &exit, 22);
    }
    for (id, v) in r.iter().collect::<Vec<_>>() {
        let is_ctl = matches!(id, 0x481..=0x484 | 0x48B | 0x48D..=0x490);
        let bad = AllowedSettings::from_raw(v).contradictory();
        if is_ctl && bad != 0 {
            notes.push(Note {
                msr: id,
                bits: u64::from(bad),
                message:
                    "one host forces these controls to 1, another forbids them: no common setting"
                        .into(),
            });
        }
    }
    VmxCaps::from_raw(r)
}

/// The common baseline of `sets` (see the module docs). Errors only on an empty slice
/// ([`CapsError::MissingMsr`] for BASIC). When any input has IA32_VMX_BASIC bit 48, the
/// baseline has it too and a [`Note`] on BASIC names those inputs (by index).
///
/// ```
/// use vmx_caps::baseline::{intersect, is_subset_of};
/// use vmx_caps::VmxCaps;
///
/// # // Intel Coffee Lake (CPUID 906EA): IA32_VMX_BASIC..IA32_VMX_VMFUNC of a real CPU.
/// # let coffee_lake: vmx_caps::RawMsrs = [
/// #     (0x480, 0x00da_0400_0000_0004), (0x481, 0x0000_007f_0000_0016),
/// #     (0x482, 0xfff9_fffe_0401_e172), (0x483, 0x01ff_ffff_0003_6dff),
/// #     (0x484, 0x0003_ffff_0000_11ff), (0x485, 0x0000_0000_7004_c1e7),
/// #     (0x486, 0x0000_0000_8000_0021), (0x487, 0x0000_0000_ffff_ffff),
/// #     (0x488, 0x0000_0000_0000_2000), (0x489, 0x0000_0000_0037_27ff),
/// #     (0x48a, 0x0000_0000_0000_002e), (0x48b, 0x005f_bcff_0000_0000),
/// #     (0x48c, 0x0000_0f01_0673_4141), (0x48d, 0x0000_007f_0000_0016),
/// #     (0x48e, 0xfff9_fffe_0400_6172), (0x48f, 0x01ff_ffff_0003_6dfb),
/// #     (0x490, 0x0003_ffff_0000_11fb), (0x491, 0x0000_0000_0000_0001),
/// # ].into_iter().collect();
/// // Two hosts: the second lacks the VMX-preemption timer (pin-based bit 6).
/// let a = VmxCaps::from_raw(coffee_lake.clone())?;
/// let mut raw = coffee_lake;
/// raw.insert(0x481, 0x0000_003f_0000_0016);
/// raw.insert(0x48d, 0x0000_003f_0000_0016);
/// let b = VmxCaps::from_raw(raw)?;
///
/// let baseline = intersect(&[a.clone(), b.clone()])?;
/// assert!(!baseline.caps.pin_based().may_be_one_bit(6));
/// // A nested guest given the baseline can be restored on (migrated to) either host.
/// assert!(is_subset_of(&baseline.caps, &a).is_empty());
/// assert!(is_subset_of(&baseline.caps, &b).is_empty());
/// // But a's own set does not fit on b.
/// assert!(!is_subset_of(&a, &b).is_empty());
/// # Ok::<(), vmx_caps::CapsError>(())
/// ```
pub fn intersect(sets: &[VmxCaps]) -> Result<Baseline, CapsError> {
    let mut acc = Intersection::new();
    for s in sets {
        acc.add(s)?;
    }
    acc.finish()
}

/// [`intersect`] one capability set at a time: holds only the running intersection,
/// its notes and the indices of inputs with BASIC bit 48, so a fleet of any size needs
/// no slice of every input. `finish` gives what [`intersect`] gives on the same inputs.
#[derive(Clone, Debug, Default)]
pub struct Intersection {
    acc: Option<VmxCaps>,
    notes: Vec<Note>,
    count: usize,
    phys_addr_32bit: Vec<usize>,
}

impl Intersection {
    /// No input yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Intersects `caps` into the running result.
    pub fn add(&mut self, caps: &VmxCaps) -> Result<(), CapsError> {
        let next = match &self.acc {
            None => caps.clone(),
            Some(acc) => intersect2(acc, caps, &mut self.notes)?,
        };
        if caps.basic().phys_addr_32bit() {
            self.phys_addr_32bit.push(self.count);
        }
        self.count += 1;
        self.acc = Some(next);
        Ok(())
    }

    /// How many capability sets were added.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether none was added.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The baseline; [`CapsError::MissingMsr`] (BASIC) when nothing was added.
    pub fn finish(self) -> Result<Baseline, CapsError> {
        let Some(acc) = self.acc else {
            return Err(CapsError::MissingMsr {
                index: msr::IA32_VMX_BASIC,
                name: "IA32_VMX_BASIC",
            });
        };
        let mut notes = self.notes;
        // BASIC[48] is ORed: one host with the 32-bit limit gives the whole fleet the
        // limit, and KVM never accepts it on restore, so say so rather than return a
        // baseline that silently cannot be given to a guest.
        if acc.basic().phys_addr_32bit() {
            let hosts: Vec<String> = self.phys_addr_32bit.iter().map(usize::to_string).collect();
            notes.push(Note {
                msr: msr::IA32_VMX_BASIC,
                bits: basic::VMX_BASIC_32BIT_PHYS_ADDR_ONLY,
                message: format!(
                    "input(s) {} limit VMX physical addresses to 32 bits (BASIC[48]), so the baseline does too; \
                     KVM refuses to restore BASIC[48] into a guest (vmx_restore_vmx_basic), so this baseline \
                     cannot be restored on the hosts without the limit (nor on any other KVM host)",
                    hosts.join(", ")
                ),
            });
        }
        Ok(Baseline { caps: acc, notes })
    }
}

fn subset_bits(out: &mut Vec<Note>, msr: u32, a: u64, b: u64, mask: u64, what: &str) {
    let extra = a & !b & mask;
    if extra != 0 {
        out.push(Note {
            msr,
            bits: extra,
            message: format!("{what} not offered by the target"),
        });
    }
}

/// KVM's restore rules: returns why `a` could not be restored into a vCPU whose KVM
/// reports `b` (empty = `a` is no more capable than `b`).
///
/// * BASIC: feature and reserved bits a bitwise subset, bit 48 clear, same revision
///   ID, VMCS size not smaller.
/// * Controls (effective view, TRUE when BASIC bit 55 is set), secondary: every
///   must-be-1 bit of `b` stays must-be-1, every may-be-1 bit of `a` is may-be-1 in `b`;
///   tertiary, secondary exit, VMFUNC, EPT/VPID: bitwise subset (absent = 0), except
///   the EPT/VPID maximum HLAT prefix size (bits 53:48), which may not be larger. KVM
///   (`vmx_restore_vmx_ept_vpid_cap`) compares all 64 bits bitwise; it never offers
///   HLAT to a nested hypervisor (field 0), and against 0 both rules agree.
/// * MISC: feature and reserved bits a subset; same preemption-timer rate when `a`
///   offers the timer; CR3-target count and MSR-list size not larger; same MSEG revision.
/// * CR0/CR4 FIXED0 a superset; FIXED1 a subset (KVM derives FIXED1 from CPUID and
///   refuses to restore it; this check is the capability-set equivalent).
/// * VMCS_ENUM is not checked (KVM accepts any value).
pub fn is_subset_of(a: &VmxCaps, b: &VmxCaps) -> Vec<Note> {
    let mut out = Vec::new();
    basic_subset(&mut out, a, b);
    controls_subset(&mut out, a, b);
    misc_subset(&mut out, a, b);
    ept_vmfunc_cr_subset(&mut out, a, b);
    out
}

// IA32_VMX_BASIC part of [`is_subset_of`].
fn basic_subset(out: &mut Vec<Note>, a: &VmxCaps, b: &VmxCaps) {
    let (ba, bb) = (a.basic(), b.basic());
    let i = msr::IA32_VMX_BASIC;
    subset_bits(
        out,
        i,
        ba.raw(),
        bb.raw(),
        BASIC_FEATURES | BASIC_RESERVED,
        "BASIC feature/reserved bits",
    );
    if ba.phys_addr_32bit() {
        out.push(Note {
            msr: i,
            bits: basic::VMX_BASIC_32BIT_PHYS_ADDR_ONLY,
            message: "32-bit physical-address limit cannot be restored".into(),
        });
    }
    if ba.revision_id() != bb.revision_id() {
        out.push(Note {
            msr: i,
            bits: basic::REVISION_MASK,
            message: format!(
                "revision ID {} differs from {}",
                ba.revision_id(),
                bb.revision_id()
            ),
        });
    }
    if ba.vmcs_size() < bb.vmcs_size() {
        out.push(Note {
            msr: i,
            bits: basic::VMCS_SIZE_MASK,
            message: format!(
                "VMCS size {} is smaller than {}",
                ba.vmcs_size(),
                bb.vmcs_size()
            ),
        });
    }
}

// The control words' part of [`is_subset_of`].
fn controls_subset(out: &mut Vec<Note>, a: &VmxCaps, b: &VmxCaps) {
    for word in ControlWord::ALL {
        let id = if word.true_msr().is_some() && a.has_true_ctls() {
            word.true_msr().unwrap_or(word.msr())
        } else {
            word.msr()
        };
        let forced_lost = b.must_be_one(word) & !a.must_be_one(word);
        if forced_lost != 0 {
            out.push(Note {
                msr: id,
                bits: forced_lost,
                message: format!("{}: must-be-1 controls made optional", word.title()),
            });
        }
        let extra = a.may_be_one(word) & !b.may_be_one(word);
        if extra != 0 {
            out.push(Note {
                msr: id,
                bits: if word.is_allowed1_only() {
                    extra
                } else {
                    extra << 32
                },
                message: format!("{}: controls not offered by the target", word.title()),
            });
        }
    }
}

// IA32_VMX_MISC part of [`is_subset_of`].
fn misc_subset(out: &mut Vec<Note>, a: &VmxCaps, b: &VmxCaps) {
    let (ma, mb) = (a.misc(), b.misc());
    let i = msr::IA32_VMX_MISC;
    subset_bits(
        out,
        i,
        ma.raw(),
        mb.raw(),
        misc::FEATURE_BITS | misc::VMX_MISC_RESERVED_BITS,
        "MISC feature/reserved bits",
    );
    if a.pin_based().may_be_one_bit(6) && ma.preemption_timer_rate() != mb.preemption_timer_rate() {
        out.push(Note {
            msr: i,
            bits: misc::VMX_MISC_PREEMPTION_TIMER_RATE_MASK,
            message: "preemption-timer rate differs".into(),
        });
    }
    if ma.cr3_count() > mb.cr3_count() {
        out.push(Note {
            msr: i,
            bits: misc::VMX_MISC_CR3_COUNT_MASK,
            message: "more CR3-target values than the target".into(),
        });
    }
    if ma.max_msr_field() > mb.max_msr_field() {
        out.push(Note {
            msr: i,
            bits: misc::VMX_MISC_MAX_MSR_MASK,
            message: "larger MSR-list recommendation than the target".into(),
        });
    }
    if ma.mseg_revid() != mb.mseg_revid() {
        out.push(Note {
            msr: i,
            bits: misc::VMX_MISC_MSEG_REVID_MASK,
            message: "MSEG revision differs".into(),
        });
    }
}

// EPT/VPID, VMFUNC and CR0/CR4 fixed-bit part of [`is_subset_of`].
fn ept_vmfunc_cr_subset(out: &mut Vec<Note>, a: &VmxCaps, b: &VmxCaps) {
    let (ea, eb) = (
        a.ept_vpid().unwrap_or(EptVpidCap(0)),
        b.ept_vpid().unwrap_or(EptVpidCap(0)),
    );
    subset_bits(
        out,
        msr::IA32_VMX_EPT_VPID_CAP,
        ea.raw(),
        eb.raw(),
        !HLAT_PREFIX_SIZE_MASK,
        "EPT/VPID capabilities",
    );
    // A maximum, not a set of flags: a smaller HLAT prefix size is less capable (the
    // baseline takes the minimum, which need not be a bitwise subset).
    if ea.hlat_prefix_size() > eb.hlat_prefix_size() {
        out.push(Note {
            msr: msr::IA32_VMX_EPT_VPID_CAP,
            bits: HLAT_PREFIX_SIZE_MASK,
            message: format!(
                "maximum HLAT prefix size {} is larger than {}",
                ea.hlat_prefix_size(),
                eb.hlat_prefix_size()
            ),
        });
    }
    subset_bits(
        out,
        msr::IA32_VMX_VMFUNC,
        a.vmfunc().map_or(0, |c| c.raw()),
        b.vmfunc().map_or(0, |c| c.raw()),
        !0,
        "VM functions",
    );
    for (f0, fa, fb) in [
        (msr::IA32_VMX_CR0_FIXED0, a.cr0_fixed(), b.cr0_fixed()),
        (msr::IA32_VMX_CR4_FIXED0, a.cr4_fixed(), b.cr4_fixed()),
    ] {
        let lost = fb.fixed0 & !fa.fixed0;
        if lost != 0 {
            out.push(Note {
                msr: f0,
                bits: lost,
                message: "bits the target fixes to 1 are not fixed".into(),
            });
        }
        subset_bits(
            out,
            f0 + 1,
            fa.fixed1,
            fb.fixed1,
            !0,
            "CR bits allowed to be 1",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::caps::tests::skx;

    #[test]
    fn intersect_with_self_is_identity() {
        let c = VmxCaps::from_raw(skx()).unwrap();
        let b = intersect(&[c.clone(), c.clone()]).unwrap();
        assert_eq!(b.caps, c);
        assert!(b.notes.is_empty());
        assert!(is_subset_of(&c, &c).is_empty());
    }

    #[test]
    fn intersection_one_at_a_time_equals_intersect() {
        // A fleet where input 1 has BASIC[48] and input 2 a different VMCS revision:
        // the streaming fold gives the same caps and notes (with the same input
        // indices) as intersect over the slice.
        let a = VmxCaps::from_raw(skx()).unwrap();
        let mut r = skx();
        let basic = r.get(msr::IA32_VMX_BASIC).unwrap();
        r.insert(
            msr::IA32_VMX_BASIC,
            basic | basic::VMX_BASIC_32BIT_PHYS_ADDR_ONLY,
        );
        let limited = VmxCaps::from_raw(r).unwrap();
        let mut r = skx();
        r.insert(msr::IA32_VMX_BASIC, (basic & !basic::REVISION_MASK) | 7);
        let other_rev = VmxCaps::from_raw(r).unwrap();
        let sets = [a.clone(), limited, other_rev, a];
        let mut acc = Intersection::new();
        assert!(acc.is_empty());
        for s in &sets {
            acc.add(s).unwrap();
        }
        assert_eq!(acc.len(), 4);
        let streamed = acc.finish().unwrap();
        assert_eq!(streamed, intersect(&sets).unwrap());
        assert!(streamed
            .notes
            .iter()
            .any(|n| n.message.contains("input(s) 1 ")));
        assert!(streamed
            .notes
            .iter()
            .any(|n| n.message.contains("VMCS revision IDs differ")));
        // Nothing added: the same error as intersect(&[]).
        assert!(matches!(
            Intersection::new().finish(),
            Err(CapsError::MissingMsr { index, .. }) if index == msr::IA32_VMX_BASIC
        ));
    }

    #[test]
    fn a_32bit_host_limits_the_baseline_with_a_note() {
        let a = VmxCaps::from_raw(skx()).unwrap();
        let mut r = skx();
        let basic = r.get(msr::IA32_VMX_BASIC).unwrap();
        r.insert(
            msr::IA32_VMX_BASIC,
            basic | basic::VMX_BASIC_32BIT_PHYS_ADDR_ONLY,
        );
        let b = VmxCaps::from_raw(r).unwrap();
        let base = intersect(&[a.clone(), b.clone()]).unwrap();
        assert!(base.caps.basic().phys_addr_32bit());
        let note = base
            .notes
            .iter()
            .find(|n| {
                n.msr == msr::IA32_VMX_BASIC && n.bits == basic::VMX_BASIC_32BIT_PHYS_ADDR_ONLY
            })
            .expect("a note on BASIC[48]");
        assert!(note.message.contains("input(s) 1 "), "{}", note.message);
        assert!(
            note.message.contains("KVM refuses to restore"),
            "{}",
            note.message
        );
        // And indeed the baseline is not restorable on host a.
        assert!(is_subset_of(&base.caps, &a)
            .iter()
            .any(|n| n.bits == basic::VMX_BASIC_32BIT_PHYS_ADDR_ONLY));
        // A single limited host gets the note too; a fleet without the limit does not.
        assert_eq!(intersect(&[b]).unwrap().notes.len(), 1);
        assert!(intersect(&[a.clone(), a]).unwrap().notes.is_empty());
    }

    #[test]
    fn true_msrs_are_kept_when_basic_bit_55_is_clear() {
        let mut r = skx();
        let basic = r.get(msr::IA32_VMX_BASIC).unwrap();
        r.insert(msr::IA32_VMX_BASIC, basic & !basic::VMX_BASIC_TRUE_CTLS);
        let a = VmxCaps::from_raw(r).unwrap();
        assert!(a.get(msr::IA32_VMX_TRUE_PROCBASED_CTLS).is_some());
        let one = intersect(std::slice::from_ref(&a)).unwrap();
        let two = intersect(&[a.clone(), a.clone()]).unwrap();
        assert_eq!(two.caps.raw(), a.raw());
        assert_eq!(two.caps.raw(), one.caps.raw());
        // Dropped only when an input lacks them.
        let mut r = a.raw().clone();
        for id in 0x48D..=0x490 {
            r.remove(id);
        }
        let c = VmxCaps::from_raw(r).unwrap();
        let base = intersect(&[a, c]).unwrap();
        assert!((0x48D..=0x490).all(|id| base.caps.get(id).is_none()));
    }

    #[test]
    fn empty_input_is_an_error() {
        assert!(intersect(&[]).is_err());
    }

    #[test]
    fn forced_vs_forbidden_is_noted() {
        let a = VmxCaps::from_raw(skx()).unwrap();
        let mut r = skx();
        // Host B forces pin bit 7 (posted interrupts) to 1 in both views.
        r.insert(0x481, 0x0000_00FF_0000_0096);
        r.insert(0x48D, 0x0000_00FF_0000_0096);
        let b = VmxCaps::from_raw(r).unwrap();
        let mut r = skx();
        // Host C forbids it.
        r.insert(0x481, 0x0000_007F_0000_0016);
        r.insert(0x48D, 0x0000_007F_0000_0016);
        let c = VmxCaps::from_raw(r).unwrap();
        let base = intersect(&[a, b, c]).unwrap();
        assert!(base.notes.iter().any(|n| n.msr == 0x481 && n.bits == 0x80));
    }

    #[test]
    fn subset_detects_extra_controls_and_lost_forced_bits() {
        let big = VmxCaps::from_raw(skx()).unwrap();
        let mut r = skx();
        r.insert(0x48E, 0xFFF9_FFFE_0400_6172 | 0x80); // forces HLT exiting
        r.insert(0x482, 0xFFF9_FFFE_0401_E172 | 0x80);
        let small = VmxCaps::from_raw(r).unwrap();
        assert!(is_subset_of(&small, &big).is_empty());
        let notes = is_subset_of(&big, &small);
        assert!(
            notes.iter().any(|n| n.msr == 0x48E && n.bits == 0x80),
            "{notes:?}"
        );
    }
}
