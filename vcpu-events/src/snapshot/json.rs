// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The bounded JSON reader and writer of [`VcpuSnapshot`] (feature `serde`).

use serde::Deserialize;

use super::{SnapshotError, VcpuSnapshot, SNAPSHOT_VERSION};

/// The largest JSON input [`VcpuSnapshot::from_json`] reads: 64 KiB.
///
/// A snapshot written by [`VcpuSnapshot::to_json`] stays far below it: the
/// worst case (256 queued vectors, 256 in-flight entries, maximal counters)
/// is about 19 KiB.
pub const MAX_SNAPSHOT_JSON_BYTES: usize = 64 * 1024;

/// Why [`VcpuSnapshot::from_json`] refused its input.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotReadError {
    /// More than [`MAX_SNAPSHOT_JSON_BYTES`].
    #[error("snapshot is {len} bytes, over the {limit}-byte limit")]
    TooLarge {
        /// The input length.
        len: usize,
        /// [`MAX_SNAPSHOT_JSON_BYTES`].
        limit: usize,
    },
    /// The input ends inside the JSON document.
    #[error("snapshot is truncated (JSON ends early at line {line}, column {column})")]
    Truncated {
        /// Line of the end.
        line: usize,
        /// Column of the end.
        column: usize,
    },
    /// Not JSON.
    #[error("snapshot is not valid JSON")]
    Syntax(#[source] serde_json::Error),
    /// No `version` field, or not a u32.
    #[error("snapshot has no valid version field")]
    NoVersion(#[source] serde_json::Error),
    /// A version this build does not read (checked before the rest, whose
    /// shape may differ in another version).
    #[error("snapshot version {found} is not supported (this build reads version {supported})")]
    UnsupportedVersion {
        /// The version in the input.
        found: u32,
        /// [`SNAPSHOT_VERSION`].
        supported: u32,
    },
    /// A field this version does not have (fields are never ignored).
    #[error("snapshot has unknown field `{}`", .0.escape_debug())]
    UnknownField(String),
    /// JSON of the wrong shape: a missing field, a wrong type, a value out
    /// of range, a register block of the wrong size.
    #[error("snapshot does not match the version-1 layout")]
    Shape(#[source] serde_json::Error),
    /// Well-formed but refused by [`VcpuSnapshot::check`].
    #[error("snapshot is inconsistent")]
    Invalid(#[source] SnapshotError),
}

#[derive(Deserialize)]
struct VersionOnly {
    version: u32,
}

impl VcpuSnapshot {
    /// Reads a snapshot written by [`VcpuSnapshot::to_json`]: refuses input
    /// over [`MAX_SNAPSHOT_JSON_BYTES`], checks the version before the
    /// layout, refuses unknown fields, and runs [`VcpuSnapshot::check`], so
    /// `Ok` is a snapshot that restores without loss on a target with the
    /// caps it needs ([`VcpuSnapshot::check_against`]).
    pub fn from_json(bytes: &[u8]) -> Result<VcpuSnapshot, SnapshotReadError> {
        if bytes.len() > MAX_SNAPSHOT_JSON_BYTES {
            return Err(SnapshotReadError::TooLarge {
                len: bytes.len(),
                limit: MAX_SNAPSHOT_JSON_BYTES,
            });
        }
        let probe: VersionOnly = serde_json::from_slice(bytes).map_err(|e| match e.classify() {
            serde_json::error::Category::Eof => SnapshotReadError::Truncated {
                line: e.line(),
                column: e.column(),
            },
            serde_json::error::Category::Syntax | serde_json::error::Category::Io => {
                SnapshotReadError::Syntax(e)
            }
            serde_json::error::Category::Data => SnapshotReadError::NoVersion(e),
        })?;
        if probe.version != SNAPSHOT_VERSION {
            return Err(SnapshotReadError::UnsupportedVersion {
                found: probe.version,
                supported: SNAPSHOT_VERSION,
            });
        }
        let snapshot: VcpuSnapshot = serde_json::from_slice(bytes).map_err(shape_error)?;
        snapshot.check().map_err(SnapshotReadError::Invalid)?;
        Ok(snapshot)
    }

    /// The snapshot as pretty-printed JSON (what [`VcpuSnapshot::from_json`]
    /// reads).
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain structs, integers and byte arrays into a Vec
        // cannot fail (no maps with non-string keys, no I/O).
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }
}

// serde's wording for `deny_unknown_fields` ("unknown field `x`, expected
// ..." / "... there are no fields") is the only place the name is given.
fn shape_error(e: serde_json::Error) -> SnapshotReadError {
    let msg = e.to_string();
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        if let Some((name, _)) = rest.split_once('`') {
            return SnapshotReadError::UnknownField(name.to_owned());
        }
    }
    SnapshotReadError::Shape(e)
}

/// serde for `kvm_regs` / `kvm_sregs`: kvm-bindings' own form (the struct's
/// bytes), read back only at the exact size.
pub(super) mod exact_bytes {
    use std::marker::PhantomData;

    use serde::de::{Error, SeqAccess, Visitor};
    use serde::{Deserializer, Serialize, Serializer};
    use zerocopy::FromBytes;

    pub fn serialize<T: Serialize, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
        value.serialize(s)
    }

    pub fn deserialize<'de, T: FromBytes, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
        d.deserialize_bytes(ExactBytes::<T>(PhantomData))
    }

    struct ExactBytes<T>(PhantomData<T>);

    impl<T: FromBytes> ExactBytes<T> {
        fn read<E: Error>(bytes: &[u8]) -> Result<T, E> {
            T::read_from_bytes(bytes)
                .map_err(|_| E::invalid_length(bytes.len(), &Self(PhantomData)))
        }
    }

    impl<'de, T: FromBytes> Visitor<'de> for ExactBytes<T> {
        type Value = T;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "exactly {} bytes", std::mem::size_of::<T>())
        }

        fn visit_bytes<E: Error>(self, bytes: &[u8]) -> Result<T, E> {
            Self::read(bytes)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<T, A::Error> {
            let size = std::mem::size_of::<T>();
            let mut buf = Vec::with_capacity(size);
            while let Some(b) = seq.next_element::<u8>()? {
                if buf.len() == size {
                    return Err(A::Error::invalid_length(size + 1, &self));
                }
                buf.push(b);
            }
            Self::read(&buf)
        }
    }
}
