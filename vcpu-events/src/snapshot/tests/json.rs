// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

use super::*;

fn json_value(s: &VcpuSnapshot) -> serde_json::Value {
    serde_json::from_slice(&s.to_json()).unwrap()
}

fn read(v: &serde_json::Value) -> Result<VcpuSnapshot, SnapshotReadError> {
    VcpuSnapshot::from_json(&serde_json::to_vec(v).unwrap())
}

#[test]
fn to_json_from_json_round_trips() {
    for s in [
        mid_injection(),
        pending_page_fault(),
        with(|s| s.injector = None),
    ] {
        assert_eq!(VcpuSnapshot::from_json(&s.to_json()).unwrap(), s);
    }
}

#[test]
fn regs_use_kvm_bindings_serde_form() {
    // The same value kvm-bindings' own Serialize writes: one home.
    let s = mid_injection();
    let v = json_value(&s);
    assert_eq!(v["regs"], serde_json::to_value(s.regs).unwrap());
    assert_eq!(v["sregs"], serde_json::to_value(s.sregs).unwrap());
    assert_eq!(
        v["regs"].as_array().unwrap().len(),
        std::mem::size_of::<kvm_regs>()
    );
}

#[test]
fn worst_case_snapshot_is_far_below_the_limit() {
    let mut s = mid_injection();
    let inj = s.injector.as_mut().unwrap();
    inj.capacity = 256;
    inj.queued = (0..=255u8).collect();
    inj.in_flight = (0..=255u8).map(|v| (v, u32::MAX)).collect();
    inj.slot_busy = true;
    inj.stats = crate::injector::InjectorStats {
        requested: u64::MAX,
        coalesced: u64::MAX - 256 - 256 * u64::from(u32::MAX),
        rejected: 0,
        injected: 256 * u64::from(u32::MAX),
        delivered: 0,
        reinjected: u64::MAX,
        window_requests: u64::MAX,
        window_exits: u64::MAX,
    };
    s.check().unwrap();
    let len = s.to_json().len();
    // About 19 KiB (pretty-printed); the documented figure.
    assert!(len < 20 * 1024, "{len}");
    assert!(len < MAX_SNAPSHOT_JSON_BYTES);
}

#[test]
fn size_limit_exactly_and_one_past() {
    let mut bytes = mid_injection().to_json();
    bytes.resize(MAX_SNAPSHOT_JSON_BYTES, b' ');
    assert!(VcpuSnapshot::from_json(&bytes).is_ok());
    bytes.push(b' ');
    assert!(matches!(
        VcpuSnapshot::from_json(&bytes),
        Err(SnapshotReadError::TooLarge {
            len,
            limit: MAX_SNAPSHOT_JSON_BYTES
        }) if len == MAX_SNAPSHOT_JSON_BYTES + 1
    ));
}

#[test]
fn truncated_input_is_truncated() {
    let bytes = mid_injection().to_json();
    for cut in [1, bytes.len() / 2, bytes.len() - 1] {
        assert!(
            matches!(
                VcpuSnapshot::from_json(&bytes[..cut]),
                Err(SnapshotReadError::Truncated { .. })
            ),
            "cut at {cut}"
        );
    }
    assert!(matches!(
        VcpuSnapshot::from_json(b""),
        Err(SnapshotReadError::Truncated { .. })
    ));
}

#[test]
fn garbage_is_a_syntax_error() {
    for bad in [
        &b"\x7fELF"[..],
        b"{\"version\": 1,,}",
        b"{\"version\": 1} x",
    ] {
        assert!(
            matches!(
                VcpuSnapshot::from_json(bad),
                Err(SnapshotReadError::Syntax(_))
            ),
            "{bad:?}"
        );
    }
}

#[test]
fn version_is_checked_before_the_layout() {
    let err = VcpuSnapshot::from_json(br#"{"version": 2, "a layout": "of the future"}"#);
    assert!(matches!(
        err,
        Err(SnapshotReadError::UnsupportedVersion {
            found: 2,
            supported: 1
        })
    ));
    assert!(matches!(
        VcpuSnapshot::from_json(br#"{"regs": []}"#),
        Err(SnapshotReadError::NoVersion(_))
    ));
    assert!(matches!(
        VcpuSnapshot::from_json(br#"{"version": -1}"#),
        Err(SnapshotReadError::NoVersion(_))
    ));
}

#[test]
fn unknown_fields_are_named() {
    let mut v = json_value(&mid_injection());
    v["extra"] = 1.into();
    assert!(matches!(read(&v), Err(SnapshotReadError::UnknownField(f)) if f == "extra"));
    let mut v = json_value(&mid_injection());
    v["events"]["nmi"]["count"] = 1.into();
    assert!(matches!(read(&v), Err(SnapshotReadError::UnknownField(f)) if f == "count"));
    let mut v = json_value(&mid_injection());
    v["injector"]["stats"]["lost"] = 0.into();
    assert!(matches!(read(&v), Err(SnapshotReadError::UnknownField(f)) if f == "lost"));
    // A name from the input is shown escaped: an ESC cannot reach a terminal.
    let mut v = json_value(&mid_injection());
    v["x\u{1b}[2J"] = 0.into();
    let err = read(&v).unwrap_err();
    assert_eq!(err.to_string(), "snapshot has unknown field `x\\u{1b}[2J`");
}

#[test]
fn registers_of_the_wrong_size_are_refused() {
    // kvm-bindings' own reader would zero-fill a short array.
    for len in [0, 143, 145] {
        let mut v = json_value(&mid_injection());
        v["regs"] = serde_json::Value::Array(vec![0.into(); len]);
        assert!(
            matches!(read(&v), Err(SnapshotReadError::Shape(_))),
            "{len}"
        );
    }
    let mut v = json_value(&mid_injection());
    v["sregs"] = serde_json::Value::Array(vec![256.into(); 312]);
    assert!(matches!(read(&v), Err(SnapshotReadError::Shape(_))));
    let mut v = json_value(&mid_injection());
    v.as_object_mut().unwrap().remove("events");
    assert!(matches!(read(&v), Err(SnapshotReadError::Shape(_))));
}

#[test]
fn inconsistent_snapshots_are_invalid() {
    use std::error::Error;
    let cases = [
        with(|s| s.regs.rflags = 0x2),
        with(|s| s.events.flags.set(0x80, true)),
        with(|s| s.injector.as_mut().unwrap().capacity = 0),
        with(|s| s.injector.as_mut().unwrap().capacity = 257),
        with(|s| s.injector.as_mut().unwrap().in_flight = vec![(0x30, 2)]),
    ];
    for s in cases {
        let err = VcpuSnapshot::from_json(&s.to_json()).unwrap_err();
        let SnapshotReadError::Invalid(cause) = &err else {
            panic!("{err:?}")
        };
        assert_eq!(cause, &s.check().unwrap_err());
        // The cause is printed once: through source(), not in the message.
        assert_eq!(err.to_string(), "snapshot is inconsistent");
        assert!(err.source().is_some());
    }
}

#[test]
fn property_any_reachable_injector_state_round_trips_through_json() {
    arbtest::arbtest(|u| {
        let mut inj = Injector::with_capacity(u.int_in_range(1..=256)?).unwrap();
        for _ in 0..u.int_in_range(0..=100)? {
            match u.int_in_range(0..=3)? {
                0 | 1 => {
                    let _ = inj.raise(u.arbitrary()?);
                }
                2 => {
                    let d = inj.before_run(&READY);
                    inj.commit(&d).unwrap();
                }
                _ => {
                    inj.after_exit(ExitKind::Other);
                    let _ = inj.on_delivered(u.arbitrary()?);
                }
            }
        }
        let s = with(|s| s.injector = Some(inj.state()));
        let back = VcpuSnapshot::from_json(&s.to_json()).expect("a reachable state reads back");
        assert_eq!(back, s);
        Ok(())
    });
}
