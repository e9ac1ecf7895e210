// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The VM-entry interruption-information field (VMCS 0x4016) and its two
//! companions, the VM-entry exception error code (0x4018) and the VM-entry
//! instruction length (0x401A) (SDM 24.8.3).
//!
//! The IDT-vectoring information field (0x4408) has the same layout
//! (SDM 24.9.3), see [`crate::idt_vectoring`]. The field format
//! ([`InterruptionInfo`], [`InterruptionType`]) lives in
//! [`x86_kvm_base::interruption`]; this module adds the mapping to and from
//! typed [`Event`]s.
//!
//! | Bits  | Meaning |
//! |-------|---------|
//! | 7:0   | vector |
//! | 10:8  | interruption type ([`InterruptionType`]) |
//! | 11    | deliver error code |
//! | 30:12 | reserved (0) |
//! | 31    | valid |

#![deny(unsafe_code)]

use crate::event::{vector::*, Event, ExceptionPayload, HardwareException};

// The field format moved to x86-kvm-base; re-exported at the old paths.
pub use x86_kvm_base::interruption::{InterruptionInfo, InterruptionType};

/// What goes into the VMCS to inject one event on the next VM entry: the
/// interruption-information field, the exception error code and the
/// instruction length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct EntryInterruption {
    /// VM-entry interruption-information field (0x4016).
    pub info: InterruptionInfo,
    /// VM-entry exception error code (0x4018); used only if bit 11 is set.
    pub error_code: u32,
    /// VM-entry instruction length (0x401A); used only for types 4, 5, 6.
    pub instruction_len: u32,
}

/// Why an interruption field does not describe an [`Event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Bit 31 is clear: nothing is injected.
    #[error("interruption information is not valid (bit 31 clear)")]
    NotValid,
    /// Type 1 is reserved.
    #[error("interruption type 1 is reserved")]
    ReservedType,
    /// Type 2 (NMI) with a vector other than 2 (SDM 26.2.1.3).
    #[error("NMI interruption type with vector {vector} (must be 2)")]
    NmiVector {
        /// The vector field.
        vector: u8,
    },
    /// Bit 11 (deliver error code) on a type other than hardware exception:
    /// such an event does not exist (SDM 26.2.1.3).
    #[error("deliver-error-code set for interruption type {0:?}")]
    ErrorCodeOnNonException(InterruptionType),
    /// Type 7 (MTF / FRED SYSCALL) is not an event this crate models.
    #[error("interruption type 7 (other event, vector {vector}) is not an injectable event")]
    OtherEvent {
        /// The vector field.
        vector: u8,
    },
}

/// Why an [`Event`] cannot be put into the VM-entry interruption field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// SMI, triple fault and SIPI are not delivered through VM-entry event
    /// injection (KVM uses `smi.pending`, `triple_fault.pending`, SIPI via the
    /// in-kernel LAPIC / MP state).
    #[error("{0:?} cannot be injected through the VM-entry interruption field")]
    NotInjectable(Event),
}

impl EntryInterruption {
    /// Nothing to inject (valid bit clear).
    pub const NONE: Self = Self {
        info: InterruptionInfo::from_bits_retain(0),
        error_code: 0,
        instruction_len: 0,
    };

    /// Encodes `event` as the VM-entry fields. The result is not checked:
    /// run [`crate::sdm_checks::check_entry_interruption`] on it.
    ///
    /// An exception payload (CR2/DR6) has no VMCS field: the VMM must write
    /// CR2 / DR6 itself before entry (KVM does this for `exception_payload`).
    pub fn encode(event: &Event) -> Result<Self, EncodeError> {
        let (info, error_code, instruction_len) = match *event {
            Event::ExternalInterrupt { vector } => (
                InterruptionInfo::new(vector, InterruptionType::ExternalInterrupt, false),
                0,
                0,
            ),
            Event::Nmi => (
                InterruptionInfo::new(X86_TRAP_NMI, InterruptionType::Nmi, false),
                0,
                0,
            ),
            Event::HardwareException(e) => (
                InterruptionInfo::new(
                    e.vector,
                    InterruptionType::HardwareException,
                    e.error_code.is_some(),
                ),
                e.error_code.unwrap_or(0),
                0,
            ),
            Event::SoftwareInterrupt {
                vector,
                instruction_len,
            } => (
                InterruptionInfo::new(vector, InterruptionType::SoftwareInterrupt, false),
                0,
                instruction_len,
            ),
            Event::PrivilegedSoftwareException {
                vector,
                instruction_len,
            } => (
                InterruptionInfo::new(vector, InterruptionType::PrivilegedSoftwareException, false),
                0,
                instruction_len,
            ),
            Event::SoftwareException {
                vector,
                instruction_len,
            } => (
                InterruptionInfo::new(vector, InterruptionType::SoftwareException, false),
                0,
                instruction_len,
            ),
            Event::Smi | Event::TripleFault | Event::Sipi { .. } => {
                return Err(EncodeError::NotInjectable(*event))
            }
        };
        Ok(Self {
            info,
            error_code,
            instruction_len,
        })
    }

    /// Decodes the fields into an [`Event`]. Reserved bits 30:12 are ignored
    /// here (the checks report them); the error code is taken only when bit 11
    /// is set and the instruction length only for types 4, 5, 6. A hardware
    /// exception's payload is not part of the VMCS fields: it is `None`.
    pub fn decode(&self) -> Result<Event, DecodeError> {
        let info = self.info;
        if !info.valid() {
            return Err(DecodeError::NotValid);
        }
        let vector = info.vector();
        let instruction_len = self.instruction_len;
        let ty = info.interruption_type();
        if info.deliver_error_code()
            && !matches!(
                ty,
                InterruptionType::HardwareException | InterruptionType::Reserved
            )
        {
            return Err(DecodeError::ErrorCodeOnNonException(ty));
        }
        Ok(match ty {
            InterruptionType::ExternalInterrupt => Event::ExternalInterrupt { vector },
            InterruptionType::Reserved => return Err(DecodeError::ReservedType),
            InterruptionType::Nmi if vector == X86_TRAP_NMI => Event::Nmi,
            InterruptionType::Nmi => return Err(DecodeError::NmiVector { vector }),
            InterruptionType::HardwareException => Event::HardwareException(HardwareException {
                vector,
                error_code: info.deliver_error_code().then_some(self.error_code),
                payload: None,
            }),
            InterruptionType::SoftwareInterrupt => Event::SoftwareInterrupt {
                vector,
                instruction_len,
            },
            InterruptionType::PrivilegedSoftwareException => Event::PrivilegedSoftwareException {
                vector,
                instruction_len,
            },
            InterruptionType::SoftwareException => Event::SoftwareException {
                vector,
                instruction_len,
            },
            // Type 7 (`InterruptionType::OtherEvent`); the 3-bit type has no other value.
            _ => return Err(DecodeError::OtherEvent { vector }),
        })
    }
}

/// Drops the payload of a decoded hardware exception (used to compare an
/// event with its encode/decode round trip, which cannot carry a payload).
pub fn without_payload(event: Event) -> Event {
    match event {
        Event::HardwareException(mut e) => {
            e.payload = None::<ExceptionPayload>;
            Event::HardwareException(e)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_vector() {
        for v in [0u8, 1, 0x20, 0xff] {
            let i = InterruptionInfo::new(v, InterruptionType::ExternalInterrupt, false);
            assert_eq!(i.vector(), v);
            assert_eq!(i.raw() & 0xff, u32::from(v));
        }
    }

    #[test]
    fn field_type_all_values() {
        for t in 0..8u32 {
            let it = InterruptionType::from_raw(t);
            assert_eq!(it.raw(), t);
            let i = InterruptionInfo::new(0, it, false);
            assert_eq!(i.interruption_type(), it);
            assert_eq!((i.raw() >> 8) & 7, t);
        }
        assert!(InterruptionType::SoftwareInterrupt.uses_instruction_len());
        assert!(InterruptionType::PrivilegedSoftwareException.uses_instruction_len());
        assert!(InterruptionType::SoftwareException.uses_instruction_len());
        assert!(!InterruptionType::HardwareException.uses_instruction_len());
    }

    #[test]
    fn field_deliver_error_code() {
        let i = InterruptionInfo::new(13, InterruptionType::HardwareException, true);
        assert!(i.deliver_error_code());
        assert_eq!(i.raw(), 0x8000_0b0d);
        assert!(
            !InterruptionInfo::new(13, InterruptionType::HardwareException, false)
                .deliver_error_code()
        );
    }

    #[test]
    fn field_valid_and_reserved() {
        assert!(InterruptionInfo::new(0, InterruptionType::Nmi, false).valid());
        assert!(!InterruptionInfo::from_bits_retain(0x0000_0b0d).valid());
        let r = InterruptionInfo::from_bits_retain(0x8000_1020);
        assert_eq!(r.reserved_bits(), 0x1000);
        assert_eq!(r.raw(), 0x8000_1020);
    }

    #[test]
    fn edk2_91_value_decodes_as_external_interrupt() {
        // intr_info=800000d1 from tianocore/edk2#91.
        let e = EntryInterruption {
            info: InterruptionInfo::from_bits_retain(0x8000_00d1),
            ..Default::default()
        };
        assert_eq!(e.decode(), Ok(Event::ExternalInterrupt { vector: 0xd1 }));
    }

    #[test]
    fn encode_decode_every_event_kind() {
        let events = [
            Event::ExternalInterrupt { vector: 0x30 },
            Event::Nmi,
            Event::HardwareException(HardwareException::general_protection(0x18)),
            Event::HardwareException(HardwareException::new(6)),
            Event::SoftwareInterrupt {
                vector: 0x80,
                instruction_len: 2,
            },
            Event::PrivilegedSoftwareException {
                vector: 1,
                instruction_len: 1,
            },
            Event::SoftwareException {
                vector: 3,
                instruction_len: 1,
            },
        ];
        for ev in events {
            let enc = EntryInterruption::encode(&ev).unwrap();
            assert!(enc.info.valid());
            assert_eq!(enc.decode(), Ok(ev));
        }
        let pf = Event::HardwareException(HardwareException::page_fault(2, 0xdead_0000));
        let enc = EntryInterruption::encode(&pf).unwrap();
        assert_eq!(enc.info.raw(), 0x8000_0b0e);
        assert_eq!(enc.error_code, 2);
        assert_eq!(enc.decode(), Ok(without_payload(pf)));
        let int = EntryInterruption::encode(&Event::SoftwareInterrupt {
            vector: 0x80,
            instruction_len: 2,
        })
        .unwrap();
        assert_eq!(int.info.raw(), 0x8000_0480);
        assert_eq!(int.instruction_len, 2);
    }

    #[test]
    fn encode_rejects_non_idt_events() {
        for ev in [Event::Smi, Event::TripleFault, Event::Sipi { vector: 9 }] {
            assert_eq!(
                EntryInterruption::encode(&ev),
                Err(EncodeError::NotInjectable(ev))
            );
        }
    }

    #[test]
    fn decode_errors() {
        assert_eq!(EntryInterruption::NONE.decode(), Err(DecodeError::NotValid));
        let r = EntryInterruption {
            info: InterruptionInfo::from_bits_retain(0x8000_0100),
            ..Default::default()
        };
        assert_eq!(r.decode(), Err(DecodeError::ReservedType));
        let o = EntryInterruption {
            info: InterruptionInfo::from_bits_retain(0x8000_0700),
            ..Default::default()
        };
        assert_eq!(o.decode(), Err(DecodeError::OtherEvent { vector: 0 }));
        let n = EntryInterruption {
            info: InterruptionInfo::from_bits_retain(0x8000_0205),
            ..Default::default()
        };
        assert_eq!(n.decode(), Err(DecodeError::NmiVector { vector: 5 }));
        let x = EntryInterruption {
            info: InterruptionInfo::from_bits_retain(0x8000_0820),
            ..Default::default()
        };
        assert_eq!(
            x.decode(),
            Err(DecodeError::ErrorCodeOnNonException(
                InterruptionType::ExternalInterrupt
            ))
        );
    }

    #[test]
    fn decode_ignores_error_code_without_bit_11() {
        let e = EntryInterruption {
            info: InterruptionInfo::new(13, InterruptionType::HardwareException, false),
            error_code: 0x55,
            instruction_len: 3,
        };
        assert_eq!(
            e.decode(),
            Ok(Event::HardwareException(HardwareException::new(13)))
        );
    }

    #[test]
    fn property_decode_encode_is_identity_on_valid_fields() {
        arbtest::arbtest(|u| {
            let raw: u32 = u.arbitrary()?;
            let e = EntryInterruption {
                // Only the architecturally meaningful bits survive a round trip.
                info: InterruptionInfo::from_bits_retain(
                    (raw & 0xfff) | InterruptionInfo::VALID_MASK,
                ),
                error_code: u.arbitrary()?,
                instruction_len: u.arbitrary()?,
            };
            if let Ok(ev) = e.decode() {
                let back = EntryInterruption::encode(&ev).unwrap();
                assert_eq!(back.info, e.info);
                if e.info.deliver_error_code() {
                    assert_eq!(back.error_code, e.error_code);
                }
                if e.info.interruption_type().uses_instruction_len() {
                    assert_eq!(back.instruction_len, e.instruction_len);
                }
            }
            Ok(())
        });
    }
}
