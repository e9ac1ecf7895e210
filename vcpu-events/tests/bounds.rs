// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The injector's capacity bounds, exact at both limits and one past them (issue 13):
//! `Injector::with_capacity` takes 1..=256 (`MAX_CAPACITY`, one slot per vector).

use vcpu_events::injector::{Injector, InjectorError, RaiseError, MAX_CAPACITY};

/// The smallest capacity (1) is accepted and holds exactly one vector: the second
/// distinct vector is refused with `QueueFull`, never dropped silently; 0 is refused.
#[test]
fn capacity_lower_limit_and_one_past() {
    assert_eq!(
        Injector::with_capacity(0).unwrap_err(),
        InjectorError::BadCapacity(0)
    );
    let mut one = Injector::with_capacity(1).unwrap();
    assert_eq!(one.capacity(), 1);
    one.raise(0x20).unwrap();
    assert_eq!(
        one.raise(0x21),
        Err(RaiseError::QueueFull {
            vector: 0x21,
            capacity: 1
        })
    );
    assert_eq!(one.len(), 1);
}

/// The largest capacity (256) is accepted and takes every vector; 257 is refused. A
/// capacity of k holds exactly k distinct vectors, the (k+1)-th is refused.
#[test]
fn capacity_upper_limit_and_one_past() {
    assert_eq!(MAX_CAPACITY, 256);
    assert_eq!(
        Injector::with_capacity(MAX_CAPACITY + 1).unwrap_err(),
        InjectorError::BadCapacity(257)
    );
    for k in [2usize, 32, 255] {
        let mut inj = Injector::with_capacity(k).unwrap();
        for v in 0..k {
            inj.raise(u8::try_from(v).unwrap()).unwrap();
        }
        let next = u8::try_from(k).unwrap();
        assert_eq!(
            inj.raise(next),
            Err(RaiseError::QueueFull {
                vector: next,
                capacity: k
            }),
            "capacity {k}"
        );
    }
    let mut all = Injector::with_capacity(MAX_CAPACITY).unwrap();
    for v in 0..=255u8 {
        all.raise(v).unwrap();
    }
    assert_eq!(all.len(), MAX_CAPACITY);
}
