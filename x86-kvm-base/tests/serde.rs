// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The `serde` feature: the shared facts serialize with their Rust names and read back
//! unchanged (a report or snapshot that carries them round-trips).
#![cfg(feature = "serde")]

use x86_kvm_base::cap::{CapOutcome, Requirement};
use x86_kvm_base::exception::GuestCet;

#[test]
fn shared_facts_round_trip_through_json() {
    for (v, json) in [
        (CapOutcome::Enabled, "\"Enabled\""),
        (CapOutcome::NotSupportedByHost, "\"NotSupportedByHost\""),
        (CapOutcome::NotRequested, "\"NotRequested\""),
    ] {
        assert_eq!(serde_json::to_string(&v).unwrap(), json);
        assert_eq!(serde_json::from_str::<CapOutcome>(json).unwrap(), v);
    }
    for v in [Requirement::Optional, Requirement::Required] {
        let json = serde_json::to_string(&v).unwrap();
        assert_eq!(serde_json::from_str::<Requirement>(&json).unwrap(), v);
    }
    let json = serde_json::to_string(&GuestCet::Absent).unwrap();
    assert_eq!(
        serde_json::from_str::<GuestCet>(&json).unwrap(),
        GuestCet::Absent
    );
    // An unknown name is an error, not a default.
    assert!(serde_json::from_str::<CapOutcome>("\"Maybe\"").is_err());
}
