// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Applying handler [`Actions`] to a vCPU: the one place where decisions
//! become effects. A [`Target`] is a real KVM vCPU ([`crate::vmm`]) or the
//! recording stand-in of [`crate::replay`].

#![deny(unsafe_code)]

use vcpu_events::Event;

use crate::action::{Action, Actions};
use crate::handlers::RunState;
pub use crate::stop::Stop;
use crate::stop::StopCause;

/// Why an action was not applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// The injection would fail VM entry (or KVM would reject it): refused
    /// before any ioctl, with the validator's diagnostic.
    #[error("{event:?} refused: {diagnostic}")]
    Refused {
        /// The event.
        event: Event,
        /// vcpu-events' diagnostic.
        diagnostic: String,
    },
    /// The vcpu-events KVM glue failed (ioctl error).
    #[error("injecting {event:?}")]
    Kvm {
        /// The event.
        event: Event,
        /// The ioctl error.
        #[source]
        source: vcpu_events::kvm::KvmError,
    },
}

impl ApplyError {
    /// The stop this error ends the run with.
    pub fn into_cause(self) -> StopCause {
        match self {
            ApplyError::Refused { event, diagnostic } => StopCause::Refused { event, diagnostic },
            ApplyError::Kvm { event, ref source } => StopCause::InjectionFailed {
                event,
                error: crate::error::chain(source),
            },
        }
    }
}

/// Something actions can be applied to.
pub trait Target {
    /// Injects `event` (a hardware exception or an NMI), validated first.
    fn inject(&mut self, event: Event) -> Result<(), ApplyError>;
    /// Makes a triple fault pending: the next run ends in `KVM_EXIT_SHUTDOWN`.
    fn synthesize_triple_fault(&mut self) -> Result<(), ApplyError>;
}

/// Applies `actions` in order. Returns `Some(stop)` if the run must end.
/// [`Action::ReadValue`] is not applied here but by [`complete_read`], which
/// the run loop calls while the exit's data area is still borrowed.
#[inline]
pub fn apply<T: Target>(actions: &Actions, st: &mut RunState, target: &mut T) -> Option<Stop> {
    for a in actions.iter() {
        let r = match a {
            Action::Stop { cause } => return Some(Stop::new(cause.clone())),
            Action::RaiseInterrupt { vector } => {
                st.irq.raise(*vector);
                Ok(())
            }
            Action::Inject { event } => target.inject(*event).map(|()| match event {
                Event::Nmi => st.injected_nmis += 1,
                _ => st.injected_exceptions += 1,
            }),
            Action::SynthesizeTripleFault { why } => target
                .synthesize_triple_fault()
                .map(|()| st.pending_shutdown = Some(*why)),
            Action::ReadValue { .. } => Ok(()),
        };
        if let Err(e) = r {
            return Some(Stop::new(e.into_cause()));
        }
    }
    None
}

/// Writes the value of the [`Action::ReadValue`] in `actions` into `data`
/// (the bytes the guest's `in` or MMIO read returns), little endian; bytes
/// beyond 8, or every byte when no handler answered, read 0.
#[inline]
pub fn complete_read(actions: &Actions, data: &mut [u8]) {
    let value = actions
        .iter()
        .find_map(|a| match a {
            Action::ReadValue { value } => Some(*value),
            _ => None,
        })
        .unwrap_or(0)
        .to_le_bytes();
    for (i, b) in data.iter_mut().enumerate() {
        *b = value.get(i).copied().unwrap_or(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_gets_the_decided_value_cut_to_its_size() {
        let a = Actions::one(Action::ReadValue {
            value: 0x1122_3344_5566_7788,
        });
        let mut in2 = [0xffu8; 2];
        complete_read(&a, &mut in2);
        assert_eq!(in2, [0x88, 0x77]);
        // Bytes past the 8 a value holds read 0 (string I/O, `count` > 1).
        let mut long = [0xffu8; 10];
        complete_read(&a, &mut long);
        assert_eq!(long, [0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0, 0]);
        // No handler answered: the guest reads 0, never stale bytes.
        let mut none = [0xffu8; 4];
        complete_read(&Actions::resume(), &mut none);
        assert_eq!(none, [0; 4]);
    }
}
