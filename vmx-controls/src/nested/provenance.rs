// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Where each bit of the nested view comes from: passed through from L0's VMCS
//! configuration, emulated by KVM whatever the hardware allows, reserved-as-1, or
//! masked (and why).

use core::fmt;

use crate::controls::ControlField;

/// Why a bit has (or lacks) its allowed-1 setting in the nested view.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(tag = "kind", rename_all = "snake_case"))]
pub enum Provenance {
    /// L0's VMCS configuration (what `setup_vmcs_config` computed from the CPU) has the
    /// bit and KVM lets it through to L1.
    PassedThrough {
        /// The Linux function whose mask passes it.
        rule: &'static str,
        /// Where L0 has it from (its VMCS configuration, or the CPU's capability MSR).
        from: &'static str,
    },
    /// KVM offers the bit whatever L0's hardware allows: it emulates it for L1.
    Emulated {
        /// The Linux function that sets it.
        rule: &'static str,
        /// Why KVM can offer it.
        why: &'static str,
    },
    /// A reserved-as-1 (default1) control of the legacy MSR (SDM A.2).
    Default1,
    /// Not offered to L1.
    Masked {
        /// The Linux function that decides.
        rule: &'static str,
        /// Why.
        why: String,
    },
}

impl Provenance {
    /// Short word for text output: `passed`, `emulated`, `default1`, `masked`.
    pub const fn word(&self) -> &'static str {
        match self {
            Provenance::PassedThrough { .. } => "passed",
            Provenance::Emulated { .. } => "emulated",
            Provenance::Default1 => "default1",
            Provenance::Masked { .. } => "masked",
        }
    }

    /// Whether L1 may set the bit.
    pub const fn offered(&self) -> bool {
        !matches!(self, Provenance::Masked { .. })
    }
}

impl fmt::Display for Provenance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Provenance::PassedThrough { rule, from } => {
                write!(f, "passed through from {from} ({rule})")
            }
            Provenance::Emulated { rule, why } => write!(f, "emulated by KVM: {why} ({rule})"),
            Provenance::Default1 => f.write_str("reserved-as-1 (default1, SDM A.2)"),
            Provenance::Masked { rule, why } => write!(f, "masked: {why} ({rule})"),
        }
    }
}

/// The provenance of one bit of one nested MSR.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct BitProvenance {
    /// The MSR (the TRUE one for the four words that have TRUE variants).
    pub msr: u32,
    /// The control field, for control MSRs.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub field: Option<ControlField>,
    /// Bit number within the control word (or the 64-bit MSR).
    pub bit: u32,
    /// Name of the bit, when known.
    pub name: Option<&'static str>,
    /// Whether L1 must set it (allowed-0 setting of the TRUE MSR).
    pub must_be_one: bool,
    /// Where it comes from.
    pub provenance: Provenance,
}

/// Why a masked bit is masked: L0 itself does not use it.
pub(crate) const NOT_IN_L0: &str =
    "L0's VMCS configuration lacks it (the CPU does not allow it, or setup_vmcs_config does not use it)";
/// Why a masked bit is masked: KVM never offers it.
pub(crate) const NOT_EXPOSED: &str = "KVM does not expose it to L1";

/// Builds one nested MSR value the way a `nested_vmx_setup_*` helper does, recording
/// per bit what happened.
pub(crate) struct WordBuilder {
    msr: u32,
    field: Option<ControlField>,
    rule: &'static str,
    from: &'static str,
    lacks: &'static str,
    width: u32,
    l0: u64,
    pub(crate) high: u64,
    pub(crate) low: u64,
    allowed: u64,
    default1: u64,
    emulated: [Option<&'static str>; 64],
    masked: [Option<String>; 64],
}

impl WordBuilder {
    /// `l0`: the value L0 has for this word (its VMCS configuration, or the hardware
    /// capability for EPT/VPID).
    pub(crate) fn new(
        msr: u32,
        field: Option<ControlField>,
        rule: &'static str,
        width: u32,
        l0: u64,
    ) -> Self {
        Self {
            msr,
            field,
            rule,
            from: "L0's VMCS configuration",
            lacks: NOT_IN_L0,
            width,
            l0,
            high: 0,
            low: 0,
            allowed: 0,
            default1: 0,
            emulated: [None; 64],
            masked: std::array::from_fn(|_| None),
        }
    }

    /// Names where passed-through bits come from (default: L0's VMCS configuration)
    /// and why a bit L0 lacks is masked.
    pub(crate) fn from(mut self, from: &'static str, lacks: &'static str) -> Self {
        self.from = from;
        self.lacks = lacks;
        self
    }

    /// The control field this builder is for.
    pub(crate) fn field(&self) -> ControlField {
        self.field.unwrap_or(ControlField::PinBased)
    }

    fn each(bits: u64, mut f: impl FnMut(usize)) {
        (0..64)
            .filter(|b| bits & (1u64 << b) != 0)
            .for_each(|b| f(b as usize));
    }

    /// `high |= l0 & bits`: pass through what L0 has.
    pub(crate) fn pass(&mut self, bits: u64) {
        self.allowed |= bits;
        self.high |= self.l0 & bits;
    }

    /// Pass through when the gate is open, else record why not.
    pub(crate) fn pass_if(&mut self, bits: u64, gate: Result<(), String>) {
        match gate {
            Ok(()) => self.pass(bits),
            Err(why) => self.note_masked(bits, &why),
        }
    }

    /// `high |= bits` whatever L0 has.
    pub(crate) fn emulate(&mut self, bits: u64, why: &'static str) {
        self.high |= bits;
        Self::each(bits, |b| self.emulated[b] = Some(why));
    }

    /// Emulate when the gate is open, else record why not.
    pub(crate) fn emulate_if(&mut self, bits: u64, why: &'static str, gate: Result<(), String>) {
        match gate {
            Ok(()) => self.emulate(bits, why),
            Err(reason) => self.note_masked(bits, &reason),
        }
    }

    /// Reserved-as-1 bits: allowed-1 (and, in the legacy MSR, must-be-1).
    pub(crate) fn default1(&mut self, bits: u64) {
        self.high |= bits;
        self.default1 |= bits;
    }

    /// `high &= ~bits`, recording why.
    pub(crate) fn mask(&mut self, bits: u64, why: &str) {
        self.high &= !bits;
        self.note_masked(bits, why);
    }

    fn note_masked(&mut self, bits: u64, why: &str) {
        Self::each(bits, |b| {
            if self.masked[b].is_none() {
                self.masked[b] = Some(why.to_owned());
            }
        });
    }

    fn provenance(&self, b: usize) -> Provenance {
        let bit = 1u64 << b;
        if self.high & bit != 0 {
            if self.default1 & bit != 0 {
                Provenance::Default1
            } else if let Some(why) = self.emulated[b] {
                Provenance::Emulated {
                    rule: self.rule,
                    why,
                }
            } else {
                Provenance::PassedThrough {
                    rule: self.rule,
                    from: self.from,
                }
            }
        } else {
            let why = match &self.masked[b] {
                Some(w) => w.clone(),
                None if self.allowed & bit != 0 => self.lacks.to_owned(),
                None => NOT_EXPOSED.to_owned(),
            };
            Provenance::Masked {
                rule: self.rule,
                why,
            }
        }
    }

    /// The per-bit record for every bit of the word.
    pub(crate) fn finish(&self, name: impl Fn(u32) -> Option<&'static str>) -> Vec<BitProvenance> {
        (0..self.width)
            .map(|b| BitProvenance {
                msr: self.msr,
                field: self.field,
                bit: b,
                name: name(b),
                must_be_one: self.low & (1u64 << b) != 0,
                provenance: self.provenance(b as usize),
            })
            .collect()
    }
}

/// Gate helper: `Ok` when `on`, else the reason.
pub(crate) fn gate(on: bool, why: impl FnOnce() -> String) -> Result<(), String> {
    if on {
        Ok(())
    } else {
        Err(why())
    }
}
