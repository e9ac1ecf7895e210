//! `vmm_snapshot`: reference-vmm's snapshot file reader
//! (`reference_vmm::snapshot::document::SnapshotFile::from_json`, what `resume` runs
//! before any VM exists), with its writer.

use super::common::assert_error_message;
use reference_vmm::snapshot::document::{SnapshotFile, PAGE_SIZE};

/// `vmm_snapshot`: a snapshot document (JSON) through the reader.
///
/// Garbage, truncated documents, another format or version, unknown fields and
/// inconsistent state give a typed error whose message, sources included (as the
/// command line prints it), is one clean line. A document that is accepted describes
/// a run `resume` can continue: its memory pages are page-sized, in increasing order,
/// inside `mem_mib` MiB; the exit counts add up to `at_exit` and stay within the exit
/// budget; the vCPU snapshot passes vcpu-events' checks; it carries an injector exactly
/// when the guest takes interrupts; and writing it and reading it back is the identity
/// (the written document is a fixed point).
pub fn vmm_snapshot(data: &[u8]) {
    let file = match SnapshotFile::from_json(data) {
        Ok(f) => f,
        Err(e) => {
            assert_error_message(&e);
            assert_error_message(&reference_vmm::error::chain(&e));
            return;
        }
    };
    let size = u64::from(file.config.mem_mib) << 20;
    let mut next = 0u64;
    for (gpa, page) in &file.pages {
        assert_eq!(page.len(), PAGE_SIZE, "page at 0x{gpa:x}");
        assert!(
            *gpa >= next && gpa % PAGE_SIZE as u64 == 0,
            "page order at 0x{gpa:x}"
        );
        assert!(
            gpa + PAGE_SIZE as u64 <= size,
            "page 0x{gpa:x} outside memory"
        );
        next = gpa + PAGE_SIZE as u64;
    }
    assert_eq!(file.at_exit, file.state.exits.total());
    assert!(file.state.exits.total() <= file.config.max_exits);
    assert!(file.config.snapshot_every.is_none());
    file.vcpu
        .check()
        .expect("an accepted vCPU snapshot passes its checks");
    assert_eq!(file.vcpu.injector.is_some(), file.state.irq.target != 0);
    let irq = &file.state.irq;
    assert!(irq.requested <= irq.target && irq.pending <= irq.requested);

    let written = file.to_json();
    let again = SnapshotFile::from_json(written.as_bytes())
        .unwrap_or_else(|e| panic!("written document does not read back: {e}"));
    assert_eq!(
        again.to_json(),
        written,
        "write -> read -> write is not a fixed point"
    );
    assert_eq!(again.pages, file.pages);
    assert_eq!(again.vcpu, file.vcpu);
}
