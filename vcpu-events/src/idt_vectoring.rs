// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! IDT-vectoring information (VMCS 0x4408, error code 0x440A): the event whose
//! delivery a VM exit interrupted, and how to re-inject it.
//!
//! # The rule
//!
//! If the IDT-vectoring information of a VM exit is valid, the event it
//! describes is an **injected** event: its delivery had started (an external
//! interrupt was already acknowledged, IRR→ISR or PIC INTA; an NMI already
//! blocked NMIs). It must be delivered on the very next VM entry, **before any
//! new event**, and it must never be dropped: nothing will raise it again
//! (SDM 31.7.1.1: "The VMM should ensure that the other event is delivered
//! when guest software is resumed"; Linux `__vmx_complete_interrupts` re-queues
//! it unconditionally; `kvm_check_and_inject_events` re-injects before looking
//! at new NMIs, IRQs or SMIs).
//!
//! # Why re-injecting is valid even if the guest has IF = 0 now
//!
//! RFLAGS.IF and the STI / MOV-SS shadow gate the *recognition* of a new
//! maskable interrupt, not the completion of one whose delivery already began.
//! An external interrupt is only recognised with IF = 1 and no shadow; the VM
//! exit happened *during* its delivery (SDM 27.2.3), before the interrupt gate
//! cleared IF, so the guest state saved at that exit is the pre-delivery state
//! and still satisfies the VM-entry checks for the re-injected event (IF = 1,
//! no shadow: G1/G4). For NMIs, hardware exceptions and software
//! interrupts/exceptions IF does not matter at all. Hence re-injection needs
//! no new interrupt window ([`crate::injector`] never waits for one), and a
//! guest that shows IF = 0 *later* (after the handler cleared it) is not a
//! reason to hold the event back: by then it has been delivered.
//!
//! The one way to break this is for the VMM to change guest state between the
//! exit and the re-entry (RFLAGS.IF, the interruptibility state, CR0.PE, or
//! entering SMM, which clears IF: tianocore/edk2#91, "entry failed, hardware
//! error 0x80000021" with `RFLAGS=0x2` and `intr_info=0x800000d1`). So: do not
//! perturb that state, and run [`crate::sdm_checks::check_entry`] on the
//! re-injection anyway: a G1/G4 violation there means the state was changed,
//! not that the event may be dropped.

#![deny(unsafe_code)]

use crate::event::Event;
use crate::interruption::{DecodeError, EntryInterruption};
use x86_kvm_base::exception::X86_TRAP_NMI;
use x86_kvm_base::interruption::{InterruptionInfo, InterruptionType};

/// The IDT-vectoring fields of one VM exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct IdtVectoring {
    /// IDT-vectoring information field (0x4408); same layout as the VM-entry
    /// interruption-information field, bit 12 undefined.
    pub info: InterruptionInfo,
    /// IDT-vectoring error code (0x440A), meaningful if bit 11 is set.
    pub error_code: u32,
    /// VM-exit instruction length (0x440C), the length to re-inject types 4-6
    /// with.
    pub exit_instruction_len: u32,
}

/// What the VMM does on the next entry to complete an interrupted delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Reinjection {
    /// The interrupted event.
    pub event: Event,
    /// The VM-entry fields to write (bits 30:12 cleared).
    pub entry: EntryInterruption,
    /// True for an NMI: with virtual NMIs the VMM must clear blocking by NMI
    /// before re-injecting (SDM 31.7.1.1; Linux sets `nmi_injected` and calls
    /// `vmx_set_nmi_mask(vcpu, false)`), else G6 fails.
    pub clear_nmi_blocking: bool,
}

impl IdtVectoring {
    /// Builds the re-injection for this exit: `Ok(None)` when nothing was
    /// being delivered (bit 31 clear).
    ///
    /// The VM-entry field is the IDT-vectoring field with bits 30:12 cleared
    /// (bit 12 is undefined there and reserved at entry), the error code is
    /// copied when bit 11 is set, and software interrupts/exceptions (types
    /// 4, 5, 6) take the VM-exit instruction length because RIP still points
    /// at the instruction.
    pub fn reinjection(&self) -> Result<Option<Reinjection>, DecodeError> {
        if !self.info.valid() {
            return Ok(None);
        }
        let info =
            InterruptionInfo::from_bits_retain(self.info.raw() & !InterruptionInfo::RESERVED_MASK);
        let ty = info.interruption_type();
        let entry = EntryInterruption {
            info,
            error_code: if info.deliver_error_code() {
                self.error_code
            } else {
                0
            },
            instruction_len: if ty.uses_instruction_len() {
                self.exit_instruction_len
            } else {
                0
            },
        };
        let event = entry.decode()?;
        Ok(Some(Reinjection {
            event,
            entry,
            clear_nmi_blocking: ty == InterruptionType::Nmi && info.vector() == X86_TRAP_NMI,
        }))
    }
}

/// The event to inject on the next entry: the interrupted one if there is one
/// (it is *injected*, it goes first), otherwise `new`. Returns the chosen
/// event and whether `new` must stay queued.
pub fn next_event(reinjection: Option<&Reinjection>, new: Option<Event>) -> (Option<Event>, bool) {
    match reinjection {
        Some(r) => (Some(r.event), new.is_some()),
        None => (new, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{HardwareException, Interruptibility};
    use crate::sdm_checks::{check_entry, EntryCaps, EntryControls, GuestEventState};

    fn iv(info: u32, error_code: u32, len: u32) -> IdtVectoring {
        IdtVectoring {
            info: InterruptionInfo::from_bits_retain(info),
            error_code,
            exit_instruction_len: len,
        }
    }

    #[test]
    fn nothing_to_reinject() {
        assert_eq!(iv(0x0000_0b0e, 4, 0).reinjection(), Ok(None));
    }

    #[test]
    fn external_interrupt_is_reinjected_and_bit_12_cleared() {
        let r = iv(0x8000_1030, 0, 3).reinjection().unwrap().unwrap();
        assert_eq!(r.event, Event::ExternalInterrupt { vector: 0x30 });
        assert_eq!(r.entry.info.raw(), 0x8000_0030);
        assert_eq!(r.entry.instruction_len, 0);
        assert!(!r.clear_nmi_blocking);
        // The state saved at the exit (IF = 1, no shadow) passes every check.
        let guest = GuestEventState::with_rflags(0x202);
        assert!(check_entry(
            &r.entry,
            &guest,
            &EntryControls::default(),
            &EntryCaps::default()
        )
        .is_empty());
        // If the VMM perturbed the state (SMM entry cleared IF), the checks say so.
        let perturbed = GuestEventState::with_rflags(0x2);
        assert_eq!(
            check_entry(
                &r.entry,
                &perturbed,
                &EntryControls::default(),
                &EntryCaps::default()
            )
            .len(),
            1
        );
    }

    #[test]
    fn exception_keeps_error_code() {
        let r = iv(0x8000_0b0e, 0x6, 7).reinjection().unwrap().unwrap();
        assert_eq!(
            r.event,
            Event::HardwareException(HardwareException::new(14).with_error_code(6))
        );
        assert_eq!(r.entry.error_code, 6);
        assert_eq!(r.entry.instruction_len, 0);
        // Without bit 11 the (stale) error code is not copied.
        let r = iv(0x8000_0306, 0x99, 0).reinjection().unwrap().unwrap();
        assert_eq!(r.entry.error_code, 0);
    }

    #[test]
    fn nmi_clears_blocking() {
        let r = iv(0x8000_0202, 0, 0).reinjection().unwrap().unwrap();
        assert_eq!(r.event, Event::Nmi);
        assert!(r.clear_nmi_blocking);
        // With virtual NMIs and blocking still set, entry would fail (G6);
        // after clearing as instructed it passes.
        let vnmi = EntryControls {
            virtual_nmis: true,
            ..Default::default()
        };
        let mut g = GuestEventState::with_rflags(0x2);
        g.interruptibility = Interruptibility::from_bits_retain(Interruptibility::BLOCKING_BY_NMI);
        assert_eq!(
            check_entry(&r.entry, &g, &vnmi, &EntryCaps::default()).len(),
            1
        );
        g.interruptibility = g
            .interruptibility
            .with(Interruptibility::BLOCKING_BY_NMI, !r.clear_nmi_blocking);
        assert!(check_entry(&r.entry, &g, &vnmi, &EntryCaps::default()).is_empty());
    }

    #[test]
    fn software_events_take_exit_instruction_length() {
        let r = iv(0x8000_0480, 0, 2).reinjection().unwrap().unwrap();
        assert_eq!(
            r.event,
            Event::SoftwareInterrupt {
                vector: 0x80,
                instruction_len: 2
            }
        );
        assert_eq!(r.entry.instruction_len, 2);
        let r = iv(0x8000_0603, 0, 1).reinjection().unwrap().unwrap();
        assert_eq!(
            r.event,
            Event::SoftwareException {
                vector: 3,
                instruction_len: 1
            }
        );
        let r = iv(0x8000_0501, 0, 1).reinjection().unwrap().unwrap();
        assert_eq!(
            r.event,
            Event::PrivilegedSoftwareException {
                vector: 1,
                instruction_len: 1
            }
        );
    }

    #[test]
    fn reserved_type_is_an_error_not_a_drop() {
        assert_eq!(
            iv(0x8000_0100, 0, 0).reinjection(),
            Err(DecodeError::ReservedType)
        );
    }

    #[test]
    fn reinjection_goes_before_anything_new() {
        let r = iv(0x8000_0030, 0, 0).reinjection().unwrap().unwrap();
        let new = Some(Event::ExternalInterrupt { vector: 0x40 });
        assert_eq!(
            next_event(Some(&r), new),
            (Some(Event::ExternalInterrupt { vector: 0x30 }), true)
        );
        assert_eq!(next_event(None, new), (new, false));
        assert_eq!(next_event(Some(&r), None), (Some(r.event), false));
    }
}
