// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Writing to the terminal: exit statuses, one-line escaped errors, and writes whose
//! failure is never lost. The same contract as reference-vmm's `cli::emit`/`cli::fail`:
//! a failed write gives status 1 and one line on whichever stream still works; a
//! closed pipe (EPIPE) gives status 1 quietly.

use std::io::Write as _;

/// Success (check: no violation; diff: no difference).
pub const EXIT_OK: u8 = 0;
/// A check or write that failed: violations, differences, KVM refusing to load,
/// inconsistent CPUs, output that could not be written.
pub const EXIT_FAILED: u8 = 1;
/// Bad usage or input: unknown flags, unreadable or malformed dumps, no VMX.
pub const EXIT_USAGE: u8 = 2;

/// A write failed and has already been reported (or was a closed pipe): status 1.
#[derive(Debug)]
pub struct WriteFailed;

/// Escapes control characters (`\n`, `\x1b`, ...) so text from input cannot move
/// the cursor, recolour or hide a line, and a message stays one line.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// Writes `text` to stdout. A closed pipe fails quietly; any other failure is
/// reported on stderr (or stdout, see [`fail`]).
pub fn emit(text: &str) -> Result<(), WriteFailed> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(WriteFailed),
        Err(e) => {
            drop(out);
            fail(&format!("writing to stdout: {e}"), EXIT_FAILED);
            Err(WriteFailed)
        }
    }
}

/// Writes `text` (already escaped lines) to stderr. If stderr cannot be written (and
/// is not a closed pipe), one line saying so goes to stdout.
pub fn emit_err(text: &str) -> Result<(), WriteFailed> {
    let mut err = std::io::stderr().lock();
    match err.write_all(text.as_bytes()).and_then(|()| err.flush()) {
        Ok(()) => Ok(()),
        Err(e) => {
            drop(err);
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                let first = text.lines().next().unwrap_or_default();
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "vmxcap: error: writing to stderr: {e}; {first}");
                let _ = out.flush();
            }
            Err(WriteFailed)
        }
    }
}

/// Prints `vmxcap: error: {msg}` (escaped) as one line on stderr and returns
/// `status`, or at least [`EXIT_FAILED`] when stderr cannot be written.
pub fn fail(msg: &str, status: u8) -> u8 {
    match emit_err(&format!("vmxcap: error: {}\n", escape(msg))) {
        Ok(()) => status,
        Err(WriteFailed) => status.max(EXIT_FAILED),
    }
}

/// clap's error as one line (the one naming what is wrong), status 2; help and
/// version go to stdout with status 0 (1 when they cannot be written).
pub fn usage_error(e: &clap::Error) -> u8 {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            emit(&e.render().to_string()).map_or(EXIT_FAILED, |()| EXIT_OK)
        }
        _ => {
            let text = e.render().to_string();
            let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
            let first = lines.next().unwrap_or("error: invalid usage");
            // "the following required arguments were not provided:" names them on the
            // next line: keep it on the same line.
            let msg = match lines.next() {
                Some(next) if first.ends_with(':') && !next.starts_with("Usage:") => {
                    format!("{first} {next}")
                }
                _ => first.to_owned(),
            };
            fail(msg.strip_prefix("error: ").unwrap_or(&msg), EXIT_USAGE)
        }
    }
}
