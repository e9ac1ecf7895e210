//! `vcpu_snapshot`: the vcpu-events snapshot reader (`VcpuSnapshot::from_json`).

use super::common::assert_error_message;
use vcpu_events::snapshot::{SnapshotReadError, MAX_SNAPSHOT_JSON_BYTES};
use vcpu_events::{Injector, VcpuSnapshot, SNAPSHOT_VERSION};

/// `vcpu_snapshot`: `VcpuSnapshot::from_json` on arbitrary bytes.
///
/// Input: the bytes of a snapshot file, read as they are.
///
/// Anything refused gets a typed error whose message and every cause (the chain a CLI
/// prints) is one clean line. A snapshot that is read is version 1 and passes
/// `check()`; its injector state rebuilds an injector that reports the same state;
/// `to_json` reads back to an equal snapshot and is a fixed point; the size limit holds
/// exactly (the same JSON padded with whitespace to the limit is read, one byte more is
/// `TooLarge`).
pub fn vcpu_snapshot(data: &[u8]) {
    let snapshot = match VcpuSnapshot::from_json(data) {
        Ok(snapshot) => snapshot,
        Err(error) => {
            assert_chain_clean(&error);
            if data.len() > MAX_SNAPSHOT_JSON_BYTES {
                assert!(matches!(error, SnapshotReadError::TooLarge { .. }));
            }
            return;
        }
    };
    assert!(
        data.len() <= MAX_SNAPSHOT_JSON_BYTES,
        "read past the size limit"
    );
    assert_eq!(snapshot.version, SNAPSHOT_VERSION);
    snapshot
        .check()
        .unwrap_or_else(|e| panic!("a snapshot that was read fails check(): {e}"));
    if let Some(state) = &snapshot.injector {
        let injector = Injector::from_state(state)
            .unwrap_or_else(|e| panic!("a checked injector state is refused: {e}"));
        assert_eq!(&injector.state(), state, "state -> from_state -> state");
    }
    let json = snapshot.to_json();
    let again = VcpuSnapshot::from_json(&json)
        .unwrap_or_else(|e| panic!("to_json of a read snapshot does not read back: {e}"));
    assert_eq!(
        again, snapshot,
        "snapshot -> JSON -> snapshot is not the identity"
    );
    assert_eq!(again.to_json(), json, "to_json is not a fixed point");

    let mut padded = json;
    padded.resize(MAX_SNAPSHOT_JSON_BYTES, b' ');
    assert_eq!(
        VcpuSnapshot::from_json(&padded).ok().as_ref(),
        Some(&snapshot),
        "a snapshot padded to exactly the limit"
    );
    padded.push(b' ');
    assert!(matches!(
        VcpuSnapshot::from_json(&padded),
        Err(SnapshotReadError::TooLarge { .. })
    ));
}

/// The error and each `source()` below it render as one clean line.
fn assert_chain_clean(error: &SnapshotReadError) {
    let mut next: Option<&dyn std::error::Error> = Some(error);
    while let Some(e) = next {
        assert_error_message(&e);
        next = e.source();
    }
}
