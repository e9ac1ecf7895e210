// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Applying handler [`Actions`] to a vCPU: the one place where decisions
//! become effects. A [`Target`] is a real KVM vCPU ([`crate::vmm`]) or the
//! recording stand-in of [`crate::replay`].

#![deny(unsafe_code)]

use crate::action::{Action, Actions, Cause, Outcome};
use crate::handlers::RunState;

/// Why an action was not applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// The injection would fail VM entry (or is otherwise invalid): refused
    /// before any ioctl, with the validator's diagnostic.
    #[error("refused: {0}")]
    Refused(String),
    /// The vcpu-events KVM glue failed (ioctl error).
    #[error("{0}")]
    Event(String),
}

/// Something actions can be applied to.
pub trait Target {
    /// Injects exception `vector` with an optional error code and payload.
    fn inject_exception(
        &mut self,
        vector: u8,
        error_code: Option<u32>,
        payload: Option<u64>,
    ) -> Result<(), ApplyError>;
    /// Injects an NMI.
    fn inject_nmi(&mut self) -> Result<(), ApplyError>;
    /// Makes a triple fault pending: the next run ends in `KVM_EXIT_SHUTDOWN`.
    fn synthesize_triple_fault(&mut self) -> Result<(), ApplyError>;
}

/// The end of a run: outcome and its human reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stop {
    /// Outcome.
    pub outcome: Outcome,
    /// Reason sentence.
    pub reason: String,
}

impl Stop {
    /// From a cause.
    pub fn new(outcome: Outcome, cause: Cause) -> Self {
        Stop {
            outcome,
            reason: cause.to_string(),
        }
    }
}

/// Applies `actions` in order. Returns `Some(stop)` if the run must end.
#[inline]
pub fn apply<T: Target>(actions: &Actions, st: &mut RunState, target: &mut T) -> Option<Stop> {
    for a in actions.iter() {
        let r = match a {
            Action::Stop { outcome, cause } => return Some(Stop::new(outcome, cause)),
            Action::RaiseInterrupt { vector } => {
                st.irq.raise(vector);
                Ok(())
            }
            Action::InjectException {
                vector,
                error_code,
                payload,
            } => target
                .inject_exception(vector, error_code, payload)
                .map(|()| st.injected_exceptions += 1),
            Action::InjectNmi => target.inject_nmi().map(|()| st.injected_nmis += 1),
            Action::SynthesizeTripleFault { cause } => target
                .synthesize_triple_fault()
                .map(|()| st.pending_shutdown = Some(cause)),
        };
        if let Err(e) = r {
            return Some(Stop {
                outcome: Outcome::Refused,
                reason: format!("{a:?}: {e}"),
            });
        }
    }
    None
}
