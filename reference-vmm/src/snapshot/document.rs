// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The snapshot file (`run --snapshot-file PATH`, `resume PATH`): one JSON
//! document holding everything a new process needs to continue the run.
//!
//! ```text
//! {
//!   "format": "reference-vmm-snapshot",   // FORMAT
//!   "version": 1,                          // VERSION, checked before anything else
//!   "guest": "irq-storm", "count": 20000, "mem_mib": 2, "max_exits": 50000000,
//!   "policy": { "notify_vmexit": "run", "notify_semantics": "seed", "notify_window": 0,
//!               "heki_abi": "none", "heki_exits": "all", "heki_denial": "gp" },
//!                                          // the run flags' names
//!   "at_exit": 58200,                      // exits handled when it was taken
//!   "vmm": { "exits": {"io-out": ...}, "channel": {...}, "irq": {...},
//!            "injected_exceptions": 0, "injected_nmis": 0, "snapshots": {...} },
//!   "memory": { "page_size": 4096,
//!               "pages": [ { "gpa": 0, "hex": "<8192 hex digits>" }, ... ] },
//!   "vcpu": { ... }                        // vcpu_events::VcpuSnapshot, its own serde form
//! }
//! ```
//!
//! * Memory is compact: only the 4 KiB pages that are not all zero, each as
//!   8192 lower-case hex digits, in increasing address order, inside
//!   `mem_mib` MiB. The guests here touch a handful of pages, so a file is
//!   tens of KiB; a file is read only up to [`MAX_FILE_BYTES`] (64 MiB), which
//!   bounds what a file can hold to 8191 non-zero pages.
//! * The VMM state is the part of [`RunState`] a run needs to go on: exit
//!   counts, the port channel's device state (report fields, ticks, syncs),
//!   the interrupt bookkeeping (backlog, counters, the raise generator's
//!   state) and the snapshot counts. notify-exit's and heki-policy's handler
//!   state (storm detector, mirrored pins) is not carried: a snapshot taken
//!   after a notify or Heki exit, or with a synthesized triple fault
//!   pending, is not written ([`SnapshotFileError::NotCarried`]).
//! * Reading refuses, with a typed [`SnapshotFileError`], anything that is
//!   not exactly such a document: another format or version, unknown fields,
//!   an unknown guest or policy name, pages outside memory, out of order, of
//!   the wrong size or not hex, a repeated key (in the vCPU part too), VMM
//!   interrupt counters that are not the injector's, snapshot counts that
//!   are not those of a snapshot taken and not yet restored, and a vCPU
//!   snapshot vcpu-events refuses (`vcpu_events::VcpuSnapshot::from_json`,
//!   which runs its checks).

#![deny(unsafe_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;

use clap::ValueEnum;
use notify_exit::NotifySemantics;
use serde::{Deserialize, Serialize};

use super::{Saved, Snapshot};
use crate::config::{Policy, RunConfig};
use crate::error::echo;
use crate::exit::ExitKind;
use crate::guests::{self, Guest};
use crate::handlers::{
    GuestChannel, IrqMode, IrqState, RunState, SnapshotCounts, SnapshotHeld, FRESH_RAISES,
};

/// The `format` field.
pub const FORMAT: &str = "reference-vmm-snapshot";
/// The document version this build writes and reads.
pub const VERSION: u32 = 1;
/// Largest file [`SnapshotFile::read`] reads: 64 MiB.
pub const MAX_FILE_BYTES: u64 = 64 << 20;
/// Page size of the memory image.
pub const PAGE_SIZE: usize = 4096;
/// Largest `mem_mib` a file may name (the `run --mem-mib` bound).
pub const MAX_MEM_MIB: u32 = 4096;

/// Why a snapshot file was refused (reading) or not written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotFileError {
    /// The file could not be read or written.
    #[error("{what}")]
    Io {
        /// What was done.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Over [`MAX_FILE_BYTES`].
    #[error("the file is over the {limit}-byte limit")]
    TooLarge {
        /// [`MAX_FILE_BYTES`].
        limit: u64,
    },
    /// Not JSON, truncated, or a field of the wrong shape.
    #[error("not a snapshot document")]
    Json(#[source] serde_json::Error),
    /// Another kind of document.
    #[error("format {found:?} is not {FORMAT:?}")]
    Format {
        /// The `format` field.
        found: String,
    },
    /// Another version.
    #[error("snapshot file version {found} is not supported (this build reads version {VERSION})")]
    Version {
        /// The `version` field.
        found: u32,
    },
    /// A guest this build does not have, or one `resume` cannot run.
    #[error("guest {name:?}: {why}")]
    Guest {
        /// The `guest` field.
        name: String,
        /// Why.
        why: &'static str,
    },
    /// A policy field with a value the command line does not accept.
    #[error("policy {field}: {value:?} is not a value of the flag")]
    Policy {
        /// Field.
        field: &'static str,
        /// Value.
        value: String,
    },
    /// A run parameter out of range.
    #[error("{field} = {value}: {why}")]
    Parameter {
        /// Field.
        field: &'static str,
        /// Value.
        value: u64,
        /// Why.
        why: &'static str,
    },
    /// The memory image does not describe `mem_mib` MiB of memory.
    #[error("memory page {index} (gpa 0x{gpa:x}): {why}")]
    Memory {
        /// Index in `pages`.
        index: usize,
        /// Its `gpa`.
        gpa: u64,
        /// Why.
        why: &'static str,
    },
    /// The VMM state is inconsistent.
    #[error("vmm state: {0}")]
    Vmm(String),
    /// vcpu-events refused the vCPU snapshot.
    #[error("vcpu")]
    Vcpu(#[source] vcpu_events::SnapshotReadError),
    /// The run holds state this document does not carry (not written).
    #[error("not written: {what} is not carried by a snapshot file")]
    NotCarried {
        /// What.
        what: &'static str,
    },
}

impl SnapshotFileError {
    fn io(what: String) -> impl FnOnce(std::io::Error) -> Self {
        move |source| SnapshotFileError::Io { what, source }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyDoc {
    notify_vmexit: String,
    /// Absent in files written before `--notify-semantics` existed: `seed`.
    #[serde(default = "seed_semantics")]
    notify_semantics: String,
    notify_window: u32,
    heki_abi: String,
    heki_exits: String,
    heki_denial: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelDoc {
    fields: [Option<u32>; guests::REPORT_FIELDS],
    ticks: u64,
    syncs: u64,
    unknown_ports: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct IrqDoc {
    mode: String,
    target: u64,
    requested: u64,
    pending: u64,
    fresh: Vec<u8>,
    coalesced: u64,
    refused: u64,
    injected: u64,
    injected_vector_sum: u64,
    queued: u64,
    max_queued: u64,
    capacity: u64,
    windows_requested: u64,
    rng: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotsDoc {
    taken: u64,
    restored: u64,
    restore_failures: u64,
    held: SnapshotHeld,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct VmmDoc {
    exits: BTreeMap<String, u64>,
    channel: ChannelDoc,
    irq: IrqDoc,
    injected_exceptions: u64,
    injected_nmis: u64,
    snapshots: SnapshotsDoc,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PageDoc {
    gpa: u64,
    hex: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MemoryDoc {
    page_size: u64,
    pages: Vec<PageDoc>,
}

/// `format` and `version`, read before the rest (another version's layout
/// may differ).
#[derive(Deserialize)]
struct Header {
    format: String,
    version: u32,
}

/// The `vcpu` field alone, read straight from the file's bytes (the other
/// fields are skipped).
#[derive(Deserialize)]
struct VcpuOnly {
    #[serde(rename = "vcpu")]
    _vcpu: vcpu_events::VcpuSnapshot,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Doc {
    format: String,
    version: u32,
    guest: String,
    count: u64,
    mem_mib: u32,
    max_exits: u64,
    policy: PolicyDoc,
    at_exit: u64,
    vmm: VmmDoc,
    memory: MemoryDoc,
    vcpu: serde_json::Value,
}

/// A snapshot file, read and checked: what `resume` runs.
#[derive(Debug, Clone)]
pub struct SnapshotFile {
    /// The run configuration (guest, count, memory, policy, exit budget;
    /// `timeout` and `snapshot_every` are the guest's defaults).
    pub config: RunConfig,
    /// The VMM state when the snapshot was taken.
    pub state: RunState,
    /// Non-zero pages of guest memory: (guest physical address, 4 KiB).
    pub pages: Vec<(u64, Vec<u8>)>,
    /// The vCPU (checked by vcpu-events).
    pub vcpu: vcpu_events::VcpuSnapshot,
    /// Exits handled when the snapshot was taken.
    pub at_exit: u64,
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    s.as_bytes()
        .chunks(2)
        .map(|p| match p {
            [h, l] => Some(digit(*h)? << 4 | digit(*l)?),
            _ => None,
        })
        .collect()
}

fn seed_semantics() -> String {
    NotifySemantics::SeedPatch.name().to_string()
}

fn policy_value<T: ValueEnum>(field: &'static str, value: &str) -> Result<T, SnapshotFileError> {
    T::from_str(value, false).map_err(|_| SnapshotFileError::Policy {
        field,
        value: echo(value),
    })
}

fn name_of<T: ValueEnum>(v: &T) -> String {
    v.to_possible_value()
        .map(|p| p.get_name().to_string())
        .unwrap_or_default()
}

impl SnapshotFile {
    /// The file for the last snapshot of a run of `cfg`. Refuses
    /// ([`SnapshotFileError::NotCarried`]) a run whose state a file does not
    /// carry (see the module docs).
    pub fn from_saved(cfg: &RunConfig, saved: &Saved) -> Result<Self, SnapshotFileError> {
        let st = &saved.state;
        if st.exits.get(ExitKind::Notify) > 0 {
            return Err(SnapshotFileError::NotCarried {
                what: "notify-exit's handler state (the run took notify exits)",
            });
        }
        if st.heki.handler.is_some() {
            return Err(SnapshotFileError::NotCarried {
                what: "heki-policy's handler state (the run took Heki exits)",
            });
        }
        if st.pending_shutdown.is_some() {
            return Err(SnapshotFileError::NotCarried {
                what: "the reason of a pending synthesized triple fault",
            });
        }
        let pages = saved
            .snapshot
            .memory
            .chunks(PAGE_SIZE)
            .enumerate()
            .filter(|(_, p)| p.iter().any(|&b| b != 0))
            .map(|(i, p)| ((i * PAGE_SIZE) as u64, p.to_vec()))
            .collect();
        Ok(SnapshotFile {
            config: *cfg,
            state: st.clone(),
            pages,
            vcpu: saved.snapshot.vcpu.clone(),
            at_exit: saved.snapshot.at_exit,
        })
    }

    /// The in-memory [`Snapshot`]: the pages over `mem_mib` MiB of zeros.
    pub fn snapshot(&self) -> Snapshot {
        let mut memory = vec![0u8; (self.config.mem_mib as usize) << 20];
        for (gpa, page) in &self.pages {
            let at = *gpa as usize;
            if let Some(dst) = memory.get_mut(at..at + page.len()) {
                dst.copy_from_slice(page);
            }
        }
        Snapshot {
            vcpu: self.vcpu.clone(),
            memory,
            at_exit: self.at_exit,
            window_requested: false,
        }
    }

    /// The document as JSON (one object, pretty-printed).
    pub fn to_json(&self) -> String {
        let cfg = &self.config;
        let st = &self.state;
        let doc = Doc {
            format: FORMAT.to_string(),
            version: VERSION,
            guest: cfg.guest.name().to_string(),
            count: cfg.count,
            mem_mib: cfg.mem_mib,
            max_exits: cfg.max_exits,
            policy: PolicyDoc {
                notify_vmexit: name_of(&cfg.policy.notify_mode),
                notify_semantics: cfg.policy.notify_semantics.name().to_string(),
                notify_window: cfg.policy.notify_window,
                heki_abi: cfg.policy.heki_abi.name().to_string(),
                heki_exits: name_of(&cfg.policy.heki_exits),
                heki_denial: name_of(&cfg.policy.heki_denial),
            },
            at_exit: self.at_exit,
            vmm: VmmDoc {
                exits: ExitKind::ALL
                    .iter()
                    .filter(|k| st.exits.get(**k) > 0)
                    .map(|k| (k.name().to_string(), st.exits.get(*k)))
                    .collect(),
                channel: ChannelDoc {
                    fields: st.channel.fields,
                    ticks: st.channel.ticks,
                    syncs: st.channel.syncs,
                    unknown_ports: st.channel.unknown_ports,
                },
                irq: IrqDoc {
                    mode: match st.irq.mode {
                        IrqMode::Backlog => "backlog",
                        IrqMode::Flood => "flood",
                    }
                    .to_string(),
                    target: st.irq.target,
                    requested: st.irq.requested,
                    pending: st.irq.pending,
                    fresh: st.irq.fresh[..usize::from(st.irq.fresh_len)].to_vec(),
                    coalesced: st.irq.coalesced,
                    refused: st.irq.refused,
                    injected: st.irq.injected,
                    injected_vector_sum: st.irq.injected_vector_sum,
                    queued: st.irq.queued,
                    max_queued: st.irq.max_queued,
                    capacity: st.irq.capacity,
                    windows_requested: st.irq.windows_requested,
                    rng: st.irq.rng,
                },
                injected_exceptions: st.injected_exceptions,
                injected_nmis: st.injected_nmis,
                snapshots: SnapshotsDoc {
                    taken: st.snapshots.taken,
                    restored: st.snapshots.restored,
                    restore_failures: st.snapshots.restore_failures,
                    held: st.snapshots.held,
                },
            },
            memory: MemoryDoc {
                page_size: PAGE_SIZE as u64,
                pages: self
                    .pages
                    .iter()
                    .map(|(gpa, p)| PageDoc {
                        gpa: *gpa,
                        hex: hex(p),
                    })
                    .collect(),
            },
            vcpu: serde_json::from_slice(&self.vcpu.to_json()).unwrap_or(serde_json::Value::Null),
        };
        serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n"
    }

    /// Reads and checks a document (at most [`MAX_FILE_BYTES`]).
    pub fn from_json(bytes: &[u8]) -> Result<Self, SnapshotFileError> {
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return Err(SnapshotFileError::TooLarge {
                limit: MAX_FILE_BYTES,
            });
        }
        // A UTF-8 BOM at the start is skipped, as every reader here does
        // (traces, vmxcap's dumps); anywhere else it is not JSON whitespace.
        let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
        let header: Header = serde_json::from_slice(bytes).map_err(SnapshotFileError::Json)?;
        if header.format != FORMAT {
            return Err(SnapshotFileError::Format {
                found: header.format,
            });
        }
        if header.version != VERSION {
            return Err(SnapshotFileError::Version {
                found: header.version,
            });
        }
        let doc: Doc = serde_json::from_slice(bytes).map_err(SnapshotFileError::Json)?;
        let config = config_of(&doc)?;
        let state = state_of(&doc, &config)?;
        let pages = pages_of(&doc.memory, config.mem_mib)?;
        let vcpu_json = serde_json::to_vec(&doc.vcpu).map_err(SnapshotFileError::Json)?;
        let vcpu =
            vcpu_events::VcpuSnapshot::from_json(&vcpu_json).map_err(SnapshotFileError::Vcpu)?;
        // `vcpu` went through a serde_json::Value, where a repeated key keeps
        // its last value silently: read it once more straight from the file,
        // where serde refuses a duplicate field as it does everywhere else.
        serde_json::from_slice::<VcpuOnly>(bytes).map_err(SnapshotFileError::Json)?;
        if vcpu.injector.is_some() != (state.irq.target != 0) {
            return Err(SnapshotFileError::Vmm(
                "the vCPU snapshot carries an injector exactly when the guest takes interrupts"
                    .into(),
            ));
        }
        check_mirrors(&state, &vcpu)?;
        if doc.at_exit != state.exits.total() {
            return Err(SnapshotFileError::Vmm(format!(
                "at_exit {} is not the {} exits counted",
                doc.at_exit,
                state.exits.total()
            )));
        }
        Ok(SnapshotFile {
            config,
            state,
            pages,
            vcpu,
            at_exit: doc.at_exit,
        })
    }

    /// Reads `path` (at most [`MAX_FILE_BYTES`]) and checks it.
    pub fn read(path: &Path) -> Result<Self, SnapshotFileError> {
        let file = std::fs::File::open(path).map_err(SnapshotFileError::io(format!(
            "cannot open {}",
            path.display()
        )))?;
        let mut bytes = Vec::new();
        file.take(MAX_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(SnapshotFileError::io(format!(
                "cannot read {}",
                path.display()
            )))?;
        Self::from_json(&bytes)
    }

    /// Writes the document to `path` atomically: a temporary file in the same
    /// directory, flushed and synced, then renamed over `path`.
    pub fn write_atomic(&self, path: &Path) -> Result<(), SnapshotFileError> {
        let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
        tmp_name.push(format!(".tmp-{}", std::process::id()));
        let tmp = path.with_file_name(tmp_name);
        let written = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(self.to_json().as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        written.map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            SnapshotFileError::Io {
                what: format!("cannot write {}", path.display()),
                source: e,
            }
        })
    }
}

fn config_of(doc: &Doc) -> Result<RunConfig, SnapshotFileError> {
    let guest = Guest::ALL
        .into_iter()
        .find(|g| g.name() == doc.guest)
        .ok_or_else(|| SnapshotFileError::Guest {
            name: echo(&doc.guest),
            why: "no such guest",
        })?;
    if guest == Guest::Timer {
        return Err(SnapshotFileError::Guest {
            name: echo(&doc.guest),
            why: "runs its own vCPU loops; it has no snapshots",
        });
    }
    if doc.mem_mib == 0 || doc.mem_mib > MAX_MEM_MIB {
        return Err(SnapshotFileError::Parameter {
            field: "mem_mib",
            value: u64::from(doc.mem_mib),
            why: "must be 1..=4096",
        });
    }
    if doc.max_exits == 0 {
        return Err(SnapshotFileError::Parameter {
            field: "max_exits",
            value: 0,
            why: "must be at least 1",
        });
    }
    let p = &doc.policy;
    let policy = Policy {
        notify_mode: policy_value("notify_vmexit", &p.notify_vmexit)?,
        notify_semantics: NotifySemantics::ALL
            .into_iter()
            .find(|n| n.name() == p.notify_semantics)
            .ok_or_else(|| SnapshotFileError::Policy {
                field: "notify_semantics",
                value: echo(&p.notify_semantics),
            })?,
        notify_window: p.notify_window,
        heki_abi: policy_value("heki_abi", &p.heki_abi)?,
        heki_exits: policy_value("heki_exits", &p.heki_exits)?,
        heki_denial: policy_value("heki_denial", &p.heki_denial)?,
    };
    let mut cfg = RunConfig::new(guest);
    cfg.count = doc.count;
    cfg.mem_mib = doc.mem_mib;
    cfg.max_exits = doc.max_exits;
    cfg.policy = policy;
    Ok(cfg)
}

fn state_of(doc: &Doc, cfg: &RunConfig) -> Result<RunState, SnapshotFileError> {
    let v = &doc.vmm;
    let mut st = RunState::new(cfg);
    let mut counts = Vec::with_capacity(v.exits.len());
    for (name, n) in &v.exits {
        let kind = ExitKind::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .ok_or_else(|| SnapshotFileError::Vmm(format!("unknown exit kind {:?}", echo(name))))?;
        counts.push((kind, *n));
    }
    let exits = crate::handlers::ExitCounts::from_counts(counts);
    if exits.total() > cfg.max_exits {
        return Err(SnapshotFileError::Vmm(format!(
            "{} exits counted, over the budget of {}",
            exits.total(),
            cfg.max_exits
        )));
    }
    if exits.get(ExitKind::Notify) > 0
        || exits.get(ExitKind::HekiConfigure) > 0
        || exits.get(ExitKind::HekiDenial) > 0
    {
        return Err(SnapshotFileError::NotCarried {
            what: "notify-exit's or heki-policy's handler state",
        });
    }
    st.exits = exits;
    st.channel = GuestChannel {
        fields: v.channel.fields,
        ticks: v.channel.ticks,
        syncs: v.channel.syncs,
        unknown_ports: v.channel.unknown_ports,
    };
    let i = &v.irq;
    let mode = match i.mode.as_str() {
        "backlog" => IrqMode::Backlog,
        "flood" => IrqMode::Flood,
        m => return Err(SnapshotFileError::Vmm(format!("unknown irq mode {m:?}"))),
    };
    if mode != st.irq.mode || i.target != st.irq.target {
        return Err(SnapshotFileError::Vmm(format!(
            "irq mode {:?} / target {} do not belong to guest {} with count {}",
            i.mode, i.target, cfg.guest, cfg.count
        )));
    }
    if i.fresh.len() > FRESH_RAISES {
        return Err(SnapshotFileError::Vmm(format!(
            "{} fresh raises, more than the {FRESH_RAISES} one exit can make",
            i.fresh.len()
        )));
    }
    if i.requested > i.target || i.pending > i.requested || i.injected > i.requested {
        return Err(SnapshotFileError::Vmm(format!(
            "irq counts do not add up: target {}, requested {}, pending {}, injected {}",
            i.target, i.requested, i.pending, i.injected
        )));
    }
    let mut fresh = [0u8; FRESH_RAISES];
    fresh[..i.fresh.len()].copy_from_slice(&i.fresh);
    st.irq = IrqState {
        mode,
        target: i.target,
        requested: i.requested,
        pending: i.pending,
        fresh,
        fresh_len: i.fresh.len() as u8,
        coalesced: i.coalesced,
        refused: i.refused,
        injected: i.injected,
        injected_vector_sum: i.injected_vector_sum,
        queued: i.queued,
        max_queued: i.max_queued,
        capacity: i.capacity,
        windows_requested: i.windows_requested,
        rng: i.rng,
    };
    st.injected_exceptions = v.injected_exceptions;
    st.injected_nmis = v.injected_nmis;
    st.snapshots = SnapshotCounts {
        taken: v.snapshots.taken,
        restored: v.snapshots.restored,
        restore_failures: v.snapshots.restore_failures,
        held: v.snapshots.held,
    };
    Ok(st)
}

/// What a written file always holds: the VMM's interrupt counters are the
/// injector's (`IrqInjector::before_run` copies them right before the
/// snapshot is taken), and the snapshot is counted as taken and not yet
/// restored (`snapshot::run`: a failed restore ends the run, so no earlier
/// one failed). A file where they differ was edited: its report would
/// count what did not happen.
fn check_mirrors(st: &RunState, vcpu: &vcpu_events::VcpuSnapshot) -> Result<(), SnapshotFileError> {
    let n = &st.snapshots;
    if n.taken == 0 || n.restored != n.taken - 1 || n.restore_failures != 0 {
        return Err(SnapshotFileError::Vmm(format!(
            "snapshots taken {}, restored {}, restore failures {}: a file holds a snapshot \
             taken and not yet restored, after no failed restore",
            n.taken, n.restored, n.restore_failures
        )));
    }
    let h = &n.held;
    let held = h.counts();
    if held.iter().any(|&k| k > n.taken) || h.exception_payload > h.exception {
        return Err(SnapshotFileError::Vmm(format!(
            "snapshots held in flight {held:?}: more than the {} taken",
            n.taken
        )));
    }
    let Some(inj) = &vcpu.injector else {
        return Ok(());
    };
    let i = &st.irq;
    let s = &inj.stats;
    for (field, vmm, injector) in [
        ("injected", i.injected, s.injected),
        ("coalesced", i.coalesced, s.coalesced),
        ("refused", i.refused, s.rejected),
        ("windows_requested", i.windows_requested, s.window_requests),
        ("queued", i.queued, inj.queued.len() as u64),
        ("capacity", i.capacity, inj.capacity as u64),
    ] {
        if vmm != injector {
            return Err(SnapshotFileError::Vmm(format!(
                "irq {field} {vmm} is not the injector's {injector}"
            )));
        }
    }
    if i.max_queued > i.capacity {
        return Err(SnapshotFileError::Vmm(format!(
            "irq max_queued {} is over the capacity {}",
            i.max_queued, i.capacity
        )));
    }
    // Backlog mode injects guests::IRQ_VECTOR only.
    let sum = i.injected.checked_mul(u64::from(guests::IRQ_VECTOR));
    if i.mode == IrqMode::Backlog && sum != Some(i.injected_vector_sum) {
        return Err(SnapshotFileError::Vmm(format!(
            "irq injected_vector_sum {} is not {} injections of vector {:#x}",
            i.injected_vector_sum,
            i.injected,
            guests::IRQ_VECTOR
        )));
    }
    Ok(())
}

fn pages_of(m: &MemoryDoc, mem_mib: u32) -> Result<Vec<(u64, Vec<u8>)>, SnapshotFileError> {
    if m.page_size != PAGE_SIZE as u64 {
        return Err(SnapshotFileError::Parameter {
            field: "memory.page_size",
            value: m.page_size,
            why: "must be 4096",
        });
    }
    let size = u64::from(mem_mib) << 20;
    let mut pages = Vec::with_capacity(m.pages.len());
    let mut next = 0u64;
    for (index, p) in m.pages.iter().enumerate() {
        let bad = |why| SnapshotFileError::Memory {
            index,
            gpa: p.gpa,
            why,
        };
        if p.gpa % PAGE_SIZE as u64 != 0 {
            return Err(bad("not page-aligned"));
        }
        if p.gpa < next {
            return Err(bad(
                "not after the previous page (pages are in increasing order)",
            ));
        }
        if p.gpa >= size {
            return Err(bad("outside guest memory (mem_mib)"));
        }
        if p.hex.len() != 2 * PAGE_SIZE {
            return Err(bad("not 8192 hex digits (one 4 KiB page)"));
        }
        let bytes = unhex(&p.hex).ok_or_else(|| bad("not lower-case hex"))?;
        pages.push((p.gpa, bytes));
        next = p.gpa + PAGE_SIZE as u64;
    }
    Ok(pages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_refuses_odd_or_upper_case() {
        let b = [0u8, 1, 0xab, 0xff];
        assert_eq!(hex(&b), "0001abff");
        assert_eq!(unhex("0001abff").as_deref(), Some(&b[..]));
        assert_eq!(unhex("0001ABFF"), None);
        assert_eq!(unhex("abc"), None);
    }
}
