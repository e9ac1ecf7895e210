// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! What handlers decide: [`Action`]s, collected in a fixed-size [`Actions`]
//! list so the per-exit path never allocates.

#![deny(unsafe_code)]

pub use crate::stop::Outcome;
use crate::stop::{StopCause, TripleFaultReason};

/// One decision of a handler, applied by the run loop to a real vCPU or a stand-in.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Stop the run now.
    Stop {
        /// Why (the outcome follows from it).
        cause: StopCause,
    },
    /// Raise an external interrupt (queued in the injector; delivered when the guest can take it).
    RaiseInterrupt {
        /// Vector.
        vector: u8,
    },
    /// Inject `event` (a hardware exception with its error code and payload,
    /// or an NMI) through vcpu-events, which validates it first.
    Inject {
        /// The event, as vcpu-events types it.
        event: vcpu_events::Event,
    },
    /// Make a triple fault pending (`KVM_SET_VCPU_EVENTS`, triple_fault.pending = 1):
    /// the next run ends in `KVM_EXIT_SHUTDOWN`, reported with `why`.
    SynthesizeTripleFault {
        /// Why.
        why: TripleFaultReason,
    },
    /// The value the guest's current `in` (or MMIO read) returns, little
    /// endian, cut to the access size. The run loop writes it where the exit
    /// source takes it from (kvm_run's data area, or the stand-in).
    ReadValue {
        /// The value read.
        value: u64,
    },
}

/// Up to [`Actions::CAPACITY`] actions, without allocation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Actions {
    items: [Option<Action>; Actions::CAPACITY],
    len: u8,
}

impl Actions {
    /// Most actions one exit can produce.
    pub const CAPACITY: usize = 4;

    /// No action: resume the guest.
    #[inline]
    pub const fn resume() -> Self {
        const NONE: Option<Action> = None;
        Actions {
            items: [NONE; Self::CAPACITY],
            len: 0,
        }
    }

    /// A single action.
    #[inline]
    pub fn one(a: Action) -> Self {
        let mut s = Self::resume();
        s.push(a);
        s
    }

    /// Appends an action; returns false (and drops nothing silently: the caller
    /// gets `false`) when full.
    #[inline]
    pub fn push(&mut self, a: Action) -> bool {
        match self.items.get_mut(usize::from(self.len)) {
            Some(slot) => {
                *slot = Some(a);
                self.len += 1;
                true
            }
            None => false,
        }
    }

    /// Number of actions.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// True if the guest just resumes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The actions, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Action> + '_ {
        self.items.iter().flatten()
    }
}
