// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Hostile-guest scenarios that need no guest code: traces generated on the
//! fly (a notify storm, a Heki denial storm, garbage `kvm_run` bytes), the
//! per-line triage of a garbage trace, and the memory probe that shows a storm
//! is handled in bounded memory.
//!
//! Generated traces are streams ([`std::io::BufRead`]) that produce one line at
//! a time into a small reused buffer, so a million-exit storm never exists as
//! a whole, neither in a file nor in memory: what the replay's memory shows is
//! the VMM's own footprint.
//!
//! The garbage generator is deterministic (xorshift64 from a seed) so a
//! failure can be reproduced from its seed and line number
//! (`reference-vmm gen-trace garbage --seed S --count N`).

#![deny(unsafe_code)]

use std::io::{BufRead, BufReader, Read, Write as _};

use crate::config::Policy;
use crate::exit::HekiAbi;
use crate::replay::{replay, ReplayError};
// Moved to `report` (plain report data); kept here for old paths.
pub use crate::report::{GarbageSummary, MemoryReport};

fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Measures the peak RSS of what runs between [`MemProbe::start`] and
/// [`MemProbe::finish`]. Only meaningful when nothing else runs in the
/// process meanwhile (the demo runs its scenarios one after the other).
#[derive(Clone, Copy, Debug)]
pub struct MemProbe {
    before_kib: Option<u64>,
    reset: bool,
}

impl MemProbe {
    /// Reads the current RSS and resets the peak to it (Linux 4.0+; if the
    /// reset is not allowed the probe falls back to the lifetime peak).
    pub fn start() -> Self {
        let reset = std::fs::OpenOptions::new()
            .write(true)
            .open("/proc/self/clear_refs")
            .and_then(|mut f| f.write_all(b"5"))
            .is_ok();
        MemProbe {
            before_kib: status_kib("VmRSS:"),
            reset,
        }
    }

    /// The peak since [`MemProbe::start`] (`None` without `/proc`).
    pub fn finish(&self) -> Option<MemoryReport> {
        let before = self.before_kib?;
        let peak = status_kib("VmHWM:")?;
        Some(MemoryReport {
            rss_before_kib: before,
            peak_kib: peak,
            peak_growth_kib: peak.saturating_sub(before),
            scenario_peak: self.reset,
        })
    }
}

/// The process's peak RSS so far (`VmHWM`), KiB.
pub fn process_peak_kib() -> Option<u64> {
    status_kib("VmHWM:")
}

/// A [`Read`] that asks `next(i, buf)` for line `i` (appended to `buf`,
/// newline included) whenever the previous line was consumed; `next`
/// returns false at the end. Memory: one line.
pub struct LineSource<F> {
    next: F,
    index: u64,
    buf: Vec<u8>,
    pos: usize,
    done: bool,
}

impl<F: FnMut(u64, &mut Vec<u8>) -> bool> LineSource<F> {
    /// A source of the lines `next` produces.
    pub fn new(next: F) -> Self {
        LineSource {
            next,
            index: 0,
            buf: Vec::with_capacity(1024),
            pos: 0,
            done: false,
        }
    }
}

impl<F: FnMut(u64, &mut Vec<u8>) -> bool> Read for LineSource<F> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos >= self.buf.len() {
            if self.done {
                return Ok(0);
            }
            self.buf.clear();
            self.pos = 0;
            if !(self.next)(self.index, &mut self.buf) {
                self.done = true;
                return Ok(0);
            }
            self.index += 1;
        }
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        let n = rest.len().min(out.len());
        out[..n].copy_from_slice(&rest[..n]);
        self.pos += n;
        Ok(n)
    }
}

/// A generated trace: a buffered [`LineSource`].
pub type Generated = BufReader<LineSource<Box<dyn FnMut(u64, &mut Vec<u8>) -> bool + Send>>>;

fn generated(next: impl FnMut(u64, &mut Vec<u8>) -> bool + Send + 'static) -> Generated {
    BufReader::with_capacity(64 * 1024, LineSource::new(Box::new(next)))
}

/// One raw valid-context notify exit (`KVM_EXIT_NOTIFY`, flags 0).
pub const NOTIFY_LINE: &[u8] = b"{\"exit_reason\": 37, \"data\": \"00000000\"}\n";
/// The last line of the storm traces.
pub const HLT_LINE: &[u8] = b"{\"exit\": \"hlt\"}\n";

/// A notify storm: `exits` valid-context notify exits back to back (a guest
/// that keeps the CPU from opening event windows), then `hlt`.
pub fn notify_storm(exits: u64) -> Generated {
    generated(move |i, buf| {
        match i.cmp(&exits) {
            std::cmp::Ordering::Less => buf.extend_from_slice(NOTIFY_LINE),
            std::cmp::Ordering::Equal => buf.extend_from_slice(HLT_LINE),
            std::cmp::Ordering::Greater => return false,
        }
        true
    })
}

/// Heki pins of the denial storm: CR0.WP and CR4.SMEP|SMAP.
pub const DENIAL_STORM_PINS: (u64, u64) = (0x1_0000, 0x30_0000);
/// Lines of the denial storm before the first denial (abi, two configure exits).
pub const DENIAL_STORM_PREAMBLE: u64 = 3;

/// A Heki (RFC v2) denial storm: the guest pins CR0.WP and CR4.SMEP|SMAP,
/// then tries `denials` times to clear them (alternating CR4 and CR0 writes),
/// then halts.
pub fn heki_denial_storm(denials: u64) -> Generated {
    const HEAD: [&[u8]; 3] = [
        b"{\"abi\": \"rfc-v2\"}\n",
        b"{\"exit\": \"heki_configure\", \"reason\": \"cr4\", \"cr_pinned\": \"0x300000\"}\n",
        b"{\"exit\": \"heki_configure\", \"reason\": \"cr0\", \"cr_pinned\": \"0x10000\"}\n",
    ];
    const DENY_CR4: &[u8] =
        b"{\"exit\": \"heki_denial\", \"reason\": \"cr4\", \"cr_value\": \"0x6f0\"}\n";
    const DENY_CR0: &[u8] =
        b"{\"exit\": \"heki_denial\", \"reason\": \"cr0\", \"cr_value\": \"0x80000033\"}\n";
    generated(move |i, buf| {
        if let Some(line) = HEAD.get(i as usize).filter(|_| i < DENIAL_STORM_PREAMBLE) {
            buf.extend_from_slice(line);
            return true;
        }
        let k = i - DENIAL_STORM_PREAMBLE;
        match k.cmp(&denials) {
            std::cmp::Ordering::Less if k % 2 == 0 => buf.extend_from_slice(DENY_CR4),
            std::cmp::Ordering::Less => buf.extend_from_slice(DENY_CR0),
            std::cmp::Ordering::Equal => buf.extend_from_slice(HLT_LINE),
            std::cmp::Ordering::Greater => return false,
        }
        true
    })
}

/// Deterministic pseudo-random numbers (xorshift64*).
#[derive(Clone, Copy, Debug)]
pub struct Rng(u64);

impl Rng {
    /// From a seed (0 is replaced by a fixed non-zero value).
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0.max(1);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform-ish in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    fn byte(&mut self) -> u8 {
        self.next_u64() as u8
    }
}

/// Exit reasons the garbage generator favours: every upstream reason up to
/// 45 (so the real decoders see garbage union bytes), plus edge values.
fn garbage_reason(rng: &mut Rng) -> u64 {
    match rng.below(10) {
        0..=5 => rng.below(46),
        6 => [u64::from(u32::MAX), 0x8000_0000, 255, 256][rng.below(4) as usize],
        7 => rng.below(1 << 32),
        // Out of u32 range or negative: a typed JSON error.
        8 => rng.next_u64() | (1 << 40),
        _ => rng.below(42),
    }
}

fn push_hex(rng: &mut Rng, buf: &mut Vec<u8>, bytes: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for _ in 0..bytes {
        let b = rng.byte();
        buf.push(HEX[usize::from(b >> 4)]);
        buf.push(HEX[usize::from(b & 15)]);
    }
}

/// Appends one line of garbage (newline included) to `buf`: raw exits with
/// random reasons and random union bytes (most lines), typed lines with
/// random fields, JSON with wrong types or shapes, truncated or non-hex data,
/// random bytes (invalid UTF-8 included) and now and then a line over
/// [`crate::trace::MAX_LINE_BYTES`].
pub fn garbage_line(rng: &mut Rng, buf: &mut Vec<u8>) {
    let start = buf.len();
    match rng.below(100) {
        // Raw exit, random reason, random union bytes (0..=256 of them).
        0..=54 => {
            let reason = garbage_reason(rng);
            let len = match rng.below(4) {
                0 => 256,
                1 => rng.below(17) as usize,
                _ => rng.below(257) as usize,
            };
            let _ = write!(buf, "{{\"exit_reason\": {reason}, \"data\": \"");
            push_hex(rng, buf, len);
            buf.extend_from_slice(b"\"}");
        }
        // Raw I/O exit with random bytes: direction and size are checked.
        55..=62 => {
            let _ = write!(buf, "{{\"exit_reason\": 2, \"data\": \"");
            push_hex(rng, buf, 8);
            buf.extend_from_slice(b"\"}");
        }
        // Typed line with random fields.
        63..=72 => {
            const NAMES: [&str; 10] = [
                "notify",
                "heki_configure",
                "heki_denial",
                "io_out",
                "io_in",
                "hlt",
                "shutdown",
                "irq_window_open",
                "internal_error",
                "bogus",
            ];
            let name = NAMES[rng.below(NAMES.len() as u64) as usize];
            let _ = write!(buf, "{{\"exit\": \"{name}\"");
            if rng.below(2) == 0 {
                let _ = write!(buf, ", \"flags\": {}", rng.next_u64() >> rng.below(64));
            }
            if rng.below(2) == 0 {
                let _ = write!(buf, ", \"port\": {}", rng.below(70_000));
            }
            if rng.below(2) == 0 {
                let n = rng.below(6);
                buf.extend_from_slice(b", \"data\": [");
                for k in 0..n {
                    let sep = if k == 0 { "" } else { ", " };
                    let _ = write!(buf, "{sep}{}", rng.below(300));
                }
                buf.push(b']');
            }
            if rng.below(2) == 0 {
                let r = ["cr0", "cr4", "0x7", "cr3", "99999999999999999999"][rng.below(5) as usize];
                let _ = write!(buf, ", \"reason\": \"{r}\"");
            }
            if rng.below(2) == 0 {
                let _ = write!(buf, ", \"cr_value\": \"0x{:x}\"", rng.next_u64());
            }
            if rng.below(3) == 0 {
                let _ = write!(buf, ", \"cr_pinned\": {}", rng.next_u64());
            }
            if rng.below(4) == 0 {
                let _ = write!(buf, ", \"suberror\": {}", rng.next_u64() >> 20);
            }
            buf.push(b'}');
        }
        // Valid-looking JSON of the wrong shape or type.
        73..=80 => {
            const SHAPES: [&str; 12] = [
                "{\"exit_reason\": \"37\"}",
                "{\"exit_reason\": -1}",
                "{\"exit_reason\": 37.5}",
                "{\"exit_reason\": 2, \"data\": \"0g\"}",
                "{\"exit_reason\": 2, \"data\": \"012\"}",
                "{\"exit_reason\": 2, \"data\": [1, 2]}",
                "{\"exit_reason\": 37, \"exit\": \"notify\"}",
                "{\"abi\": \"heki-rfc-v9\"}",
                "{}",
                "[]",
                "null",
                "{\"exit\": \"hlt\", \"extra\": 1}",
            ];
            buf.extend_from_slice(SHAPES[rng.below(SHAPES.len() as u64) as usize].as_bytes());
        }
        // A raw line cut short, or with more than 256 union bytes.
        81..=86 => {
            let mut line = Vec::with_capacity(600);
            let _ = write!(
                line,
                "{{\"exit_reason\": {}, \"data\": \"",
                garbage_reason(rng)
            );
            let over = rng.below(2) == 0;
            let len = if over {
                257 + rng.below(40) as usize
            } else {
                32
            };
            push_hex(rng, &mut line, len);
            line.extend_from_slice(b"\"}");
            let keep = if over {
                line.len()
            } else {
                rng.below(line.len() as u64) as usize
            };
            buf.extend_from_slice(line.get(..keep).unwrap_or_default());
        }
        // Random bytes (any value but the newline), often invalid UTF-8.
        87..=98 => {
            for _ in 0..rng.below(120) {
                let b = rng.byte();
                buf.push(if b == b'\n' { b'{' } else { b });
            }
        }
        // A line longer than the reader accepts.
        _ => {
            let n = crate::trace::MAX_LINE_BYTES + 1 + rng.below(2000) as usize;
            buf.extend_from_slice(b"{\"exit\": \"hlt\", \"pad\": \"");
            buf.resize(buf.len() + n, b'a');
            buf.extend_from_slice(b"\"}");
        }
    }
    debug_assert!(!buf.get(start..).unwrap_or_default().contains(&b'\n'));
    buf.push(b'\n');
}

/// A garbage trace of `lines` lines from `seed` (see [`garbage_line`]).
pub fn garbage_trace(seed: u64, lines: u64) -> Generated {
    let mut rng = Rng::new(seed);
    generated(move |i, buf| {
        if i >= lines {
            return false;
        }
        garbage_line(&mut rng, buf);
        true
    })
}

/// The Heki ABIs each garbage line is replayed under.
pub const TRIAGE_ABIS: [HekiAbi; 3] = [HekiAbi::None, HekiAbi::RfcV2, HekiAbi::RfcV3];

/// Replays every line of the garbage trace `(seed, lines)` on its own, under
/// each of [`TRIAGE_ABIS`], and classifies the answer: an outcome with a
/// reason sentence, or a typed error naming line 1. A panic is caught and
/// counted (there must be none).
pub fn triage(seed: u64, lines: u64) -> GarbageSummary {
    let mut rng = Rng::new(seed);
    let mut line = Vec::with_capacity(8192);
    let mut s = GarbageSummary {
        seed,
        lines,
        ..GarbageSummary::default()
    };
    for n in 1..=lines {
        line.clear();
        garbage_line(&mut rng, &mut line);
        for abi in TRIAGE_ABIS {
            s.replays += 1;
            let r = std::panic::catch_unwind(|| {
                replay("garbage", &line[..], Policy::default(), Some(abi))
            });
            let unclear = match r {
                Err(_) => {
                    s.panics += 1;
                    Some("panic")
                }
                Ok(Ok(rep)) => {
                    let r = rep.report;
                    s.exits += r.exits_total;
                    *s.outcomes.entry(r.outcome.name()).or_default() += 1;
                    // A stop must say what stopped it: a Heki exit without
                    // an ABI would mean the decoder and handlers disagree.
                    matches!(r.cause, crate::stop::StopCause::HekiExitWithoutAbi)
                        .then_some("unclear cause")
                }
                Ok(Err(ReplayError::Trace(e))) => {
                    *s.errors.entry(e.kind.name()).or_default() += 1;
                    (e.line != 1 || !e.to_string().starts_with("line 1: "))
                        .then_some("error without its line")
                }
            };
            if let Some(what) = unclear {
                s.unclear += u64::from(what != "panic");
                if s.examples.len() < 5 {
                    s.examples.push(format!(
                        "seed {seed} line {n} ({abi:?}): {what}: {}",
                        String::from_utf8_lossy(&line).trim_end()
                    ));
                }
            }
        }
    }
    s
}

/// Reads the whole of `input` (for tests and `gen-trace`): line count and bytes.
pub fn count_lines(mut input: impl BufRead) -> std::io::Result<(u64, u64)> {
    let (mut lines, mut bytes) = (0, 0);
    loop {
        let buf = input.fill_buf()?;
        if buf.is_empty() {
            return Ok((lines, bytes));
        }
        lines += buf.iter().filter(|&&b| b == b'\n').count() as u64;
        let n = buf.len();
        bytes += n as u64;
        input.consume(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_storms_have_the_promised_lines() {
        assert_eq!(count_lines(notify_storm(1000)).unwrap().0, 1001);
        assert_eq!(
            count_lines(heki_denial_storm(10)).unwrap().0,
            DENIAL_STORM_PREAMBLE + 10 + 1
        );
        assert_eq!(count_lines(garbage_trace(7, 500)).unwrap().0, 500);
    }

    #[test]
    fn garbage_is_deterministic_per_seed() {
        let read = |seed| {
            let mut v = Vec::new();
            garbage_trace(seed, 200).read_to_end(&mut v).unwrap();
            v
        };
        assert_eq!(read(1), read(1));
        assert_ne!(read(1), read(2));
    }

    #[test]
    fn memory_probe_reads_proc() {
        let p = MemProbe::start();
        let m = p.finish().expect("/proc/self/status");
        assert!(m.peak_kib >= m.rss_before_kib.min(m.peak_kib));
        assert!(m.peak_kib > 0);
    }
}
